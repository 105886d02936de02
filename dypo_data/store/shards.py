"""Append-only Parquet shards: atomic writes, validated reads.

Layout of a store directory::

    STORE/
      prompts/part-<run_id>-<seq>.parquet
      traces/part-<run_id>-<seq>.parquet
      verdicts/part-<run_id>-<seq>.parquet
      runs/<run_id>.json            manifest, written last when a run completes
      .leases/<work>.lock           who writes what right now (see lease.py)
      .catalog/<table>.json         shards already validated (a cache, see catalog.py)

A shard is written to a hidden temporary name (`.tmp-*.partial`, which no `*.parquet` glob
matches) and renamed into place once complete, so a killed writer leaves no partial shard behind.
Shards are never rewritten. Every `*.parquet` file under a table directory must carry that table's
name and schema version in its key-value metadata and exactly its columns; a foreign or corrupt file
stops reads with an error naming it (damaged data pages: see damage.py).
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dypo_data.contracts.schemas import SCHEMA_VERSION, TABLE_KEY, TABLES, VERSION_KEY
from dypo_data.errors import InputError, SchemaError, StoreError
from dypo_data.store.catalog import (
    TMP_PREFIX, Catalog, ShardStat, files_digest, hidden_shards, hold_readers, listed_shards, load_catalog,
    release_readers, save_catalog,
)


def store_write_error(path: Path, exc: OSError) -> StoreError:
    """The StoreError for an OSError while writing `path` (disk full, read-only, other)."""
    if exc.errno == errno.ENOSPC:
        return StoreError(f"store disk is full while writing {path}", "free space or point --store at another disk")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"store is not writable: {path} ({exc.strerror})", "fix the permissions or choose another --store")
    return StoreError(f"cannot write {path}: {exc.strerror or exc}", "check the store directory")


def _discard(path: Path) -> None:
    """Remove a temporary file if possible (it may not exist, or the disk may refuse)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


@dataclass(frozen=True)
class ShardWriter:
    """Writes shards of one run; sequence numbers make names unique within the run."""

    root: Path
    run_id: str

    def write(self, table: str, data: pa.Table) -> Path | None:
        """Atomically write `data` as a new shard of `table`; returns its path (None if empty)."""
        if data.num_rows == 0:
            return None
        schema = TABLES[table]
        data = data.select(schema.names).cast(schema) if data.schema != schema else data
        folder = self.root / table
        name = f"part-{self.run_id}-{uuid.uuid4().hex[:8]}.parquet"
        final, tmp = folder / name, folder / f"{TMP_PREFIX}{name}.partial"  # no glob for *.parquet matches it
        try:
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(data, tmp, compression="zstd")
            os.replace(tmp, final)
        except OSError as exc:
            _discard(tmp)
            raise store_write_error(tmp, exc) from exc
        except BaseException:  # Ctrl-C or SIGTERM mid-write: no half-written temporary file stays behind
            _discard(tmp)
            raise
        return final

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        """Record a completed run (config, versions, counts) as runs/<run_id>.json."""
        folder = self.root / "runs"
        final = folder / f"{self.run_id}.json"
        tmp = folder / f"{TMP_PREFIX}{self.run_id}.json.partial"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
            os.replace(tmp, final)
        except OSError as exc:
            _discard(tmp)
            raise store_write_error(tmp, exc) from exc
        return final


def check_writable(root: Path) -> None:
    """Fail early (before any expensive work) when the store cannot take new shards."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f"{TMP_PREFIX}probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise store_write_error(root, exc) from exc


def validate_shard(path: Path, table: str) -> pa.Schema:
    """Read a shard's schema and check it belongs to `table` at the current version."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(
            f"{path} is not a readable Parquet file ({exc})", f"move it out of the store; it was not written by dypo"
        ) from exc
    meta = schema.metadata or {}
    found_table = meta.get(TABLE_KEY, b"").decode()
    if found_table != table:
        raise SchemaError(
            f"{path} is not a dypo {table} shard (table tag {found_table or 'missing'!r})",
            "move foreign files out of the store directory",
        )
    found_version = meta.get(VERSION_KEY, b"").decode()
    if found_version != str(SCHEMA_VERSION):
        raise SchemaError(
            f"{path} has schema version {found_version or 'missing'}, expected {SCHEMA_VERSION}",
            "use the dypo release that wrote it, or regenerate the store",
        )
    _check_columns(path, table, schema)
    return schema


def _check_columns(path: Path, table: str, found: pa.Schema) -> None:
    """A shard tagged as `table` must have exactly its columns and types (not be read as rows of NULLs)."""
    expected = TABLES[table]
    missing = [name for name in expected.names if name not in found.names]
    extra = [name for name in found.names if name not in expected.names]
    retyped = [f"{name} is {found.field(name).type}, expected {expected.field(name).type}"
               for name in expected.names if name in found.names and not found.field(name).type.equals(expected.field(name).type)]
    if missing or extra or retyped:
        details = "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                          f"unknown {', '.join(extra)}" if extra else "", *retyped[:3]]))
        raise SchemaError(
            f"{path} is tagged as a dypo {table} shard but its columns differ ({details})",
            "move it out of the store; dypo writes every shard with the table's full schema",
        )


@dataclass(frozen=True)
class ShardListing:
    """A table's live shards, and whether every key of the table occurs once in them (found by a
    compaction for exactly these files: see catalog.Catalog), so that its view need not deduplicate."""

    paths: list[Path]
    stats: dict[str, ShardStat]
    unique_keys: bool


def shard_listing(root: Path, table: str, *, save: bool = True) -> ShardListing:
    """The live shards of `table`: complete, validated, not replaced by a compaction, in name order.

    Only files the shard catalog has not validated yet (new, or changed since) have their footer
    read; the others cost a `stat` (see catalog.py). `save=False` leaves the catalog as it is (a
    reader that promises not to write to the store).
    """
    folder = root / table
    listed = listed_shards(folder)
    if not listed:
        return ShardListing([], {}, False)
    known = load_catalog(root, table)
    for name in sorted(listed):
        if known.shards.get(name) != listed[name]:
            validate_shard(folder / name, table)
    if save and listed != known.shards:
        save_catalog(root, table, Catalog(listed, known.unique_keys))
    hidden = hidden_shards(root, table, set(listed))  # replaced by a compaction, or parts of one not complete
    live = {name: listed[name] for name in sorted(listed) if name not in hidden}
    return ShardListing([folder / name for name in live], live, known.unique_keys == files_digest(live))


def shard_files(root: Path, table: str, *, save: bool = True) -> list[Path]:
    """The live shards of `table` (see shard_listing)."""
    return shard_listing(root, table, save=save).paths


def read_table(root: Path, table: str, columns: list[str] | None = None) -> pa.Table:
    """Concatenate every shard of `table` (empty table with the schema when there is none)."""
    readers = hold_readers(root)  # a compaction keeps the files listed here until the read is done
    try:
        return _read_shards(shard_files(root, table), table, columns)
    finally:
        release_readers(readers)


def _read_shards(files: list[Path], table: str, columns: list[str] | None) -> pa.Table:
    schema = TABLES[table]
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
    if not files:
        return schema.empty_table()
    parts = []
    for path in files:
        try:
            parts.append(pq.read_table(path, columns=columns, schema=None).cast(schema))
        except (pa.ArrowException, OSError) as exc:
            raise damaged_shard_error(path, str(exc).strip().splitlines()[0]) from exc
    return pa.concat_tables(parts)


def shard_row_groups(path: Path, rows: Sequence[int], columns: list[str]) -> Iterator[pa.Table]:
    """`columns` of the rows `rows` (0-based row numbers, ascending) of one shard, in that order, one
    table per row group holding some of them; the other row groups are not read (a damaged shard is named)."""
    start, i = 0, 0
    try:
        shard = pq.ParquetFile(path)
        for group in range(shard.metadata.num_row_groups):
            end = start + shard.metadata.row_group(group).num_rows
            j = bisect.bisect_left(rows, end, lo=i)
            if j > i:
                table = shard.read_row_group(group, columns=columns)
                if j - i < end - start:  # some of its rows (all of them: as it is)
                    table = table.take(pa.array([r - start for r in rows[i:j]], pa.int64()))
                yield table
            i, start = j, end
    except (pa.ArrowException, OSError) as exc:
        raise damaged_shard_error(path, str(exc).strip().splitlines()[0]) from exc
    if i != len(rows):
        raise damaged_shard_error(path, f"it holds {start} rows, not row {rows[i]}")


def read_shard_rows(path: Path, rows: Sequence[int], columns: list[str]) -> pa.Table:
    """`columns` of the rows `rows` of one shard as one table (see shard_row_groups)."""
    parts = list(shard_row_groups(path, rows, columns))
    return pa.concat_tables(parts) if parts else pq.read_schema(path).empty_table().select(columns)


def read_located(located: pa.Table, table: str, columns: list[str]) -> pa.Table:
    """`columns` of the rows of `table` that `located` points at (its `filename` and `file_row_number`
    columns, as `views.located_source` gives them), in `located`'s order; only the row groups holding
    them are read, one at a time."""
    if located.num_rows == 0:
        return pa.schema([TABLES[table].field(c) for c in columns]).empty_table()
    by_file = pc.sort_indices(located, [("filename", "ascending"), ("file_row_number", "ascending")])
    files = located.column("filename").take(by_file).to_pylist()
    rows = located.column("file_row_number").take(by_file).to_pylist()
    parts, start = [], 0
    for i in range(1, len(files) + 1):
        if i == len(files) or files[i] != files[start]:
            parts.extend(shard_row_groups(Path(files[start]), rows[start:i], columns))
            start = i
    return pa.concat_tables(parts).take(pc.sort_indices(by_file))  # back from file order to `located`'s order


def damaged_shard_error(path: Path, reason: str) -> SchemaError:
    """A shard whose footer reads but whose data does not (see damage.py)."""
    return SchemaError(
        f"{path} is damaged: its data cannot be read ({reason})",
        "move it out of the store, then rerun the command that wrote it (generate, verify, import, or "
        "dypo-train --resume): it writes again what the file held",
    )


def store_containing(path: str | os.PathLike[str]) -> Path | None:
    """The store directory that `path` lies in (a parent holding a table folder with shards), if any."""
    resolved = Path(path).expanduser().resolve()
    for folder in resolved.parents:
        if any(next((folder / table).glob("*.parquet"), None) is not None for table in TABLES if (folder / table).is_dir()):
            return folder
    return None


def open_store(path: str | os.PathLike[str], *, must_exist: bool = True) -> Path:
    """Resolve a store directory; reading commands require it to exist."""
    root = Path(path).expanduser()
    if root.exists() and not root.is_dir():
        raise InputError(f"store path {root} is a file, not a directory", "pass a store directory to --store")
    if must_exist and not root.is_dir():
        raise InputError(f"store directory {root} does not exist", "run `dypo-data generate --store DIR` first")
    return root
