"""Compaction: merge a table's small shards into large sorted files, without exact duplicates, crash-safely.

Long runs leave thousands of small shards (generate writes one every 256 traces, verify one every
1,024 verdicts), and every query pays per file. `compact_table` merges the shards smaller than half
the target size into files of about the target size, sorted by the table's key (so row-group
statistics let a filter on it skip most of a file) and without rows that are exact duplicates of
another (a resumed run's repeats: the views never counted them, now the files do not hold them).
The views return exactly the same rows before and after.

How a compaction changes the store, each step safe to be killed at:

1. the merged parts are written under temporary names (`.tmp-*`, which no reader lists);
2. a record `.catalog/compactions/<id>.json` names the parts and the shards they replace;
3. the parts are renamed into place; a reader that lists the table leaves out the parts of a record
   while any part is missing, and the replaced shards once every part is there (catalog.py): the
   last rename switches every reader from the old files to the new ones at once, never both or
   neither;
4. the replaced shards are removed, then the record, but only while no reader holds the store's
   readers lock (a reader listed its files before and may still read them); otherwise they stay,
   unlisted, until a later compaction finds no reader.

Last, for each table, one scan of its keys: when no key occurs twice in its live shards, the catalog
records it for exactly these files, and the view skips its deduplication while they stay the same
(a new shard, a removed or replaced file ends that at once).

A rerun (of a killed compaction) first finishes what a record says: it renames the parts still
under temporary names (all were complete before the record was written), or, if a part is gone,
drops the record and its parts, and it removes temporary files no record names. Two compactions
never run at once (a lease). Writers need not stop: a compaction merges only the shards that exist
when it starts, a writer only adds new ones, and a writer's reads of the store hold the readers
lock like any reader's.

Plain DuckDB or Polars globbing `STORE/<table>/*.parquet` reads the replaced shards beside the parts
between steps 3 and 4 (or until a later compaction removes them); dypo's views and readers never do.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from dypo_data.contracts.schemas import TABLES
from dypo_data.store.catalog import (
    READERS_LOCK, TMP_PREFIX, Catalog, compaction_records, compactions_dir, files_digest, load_catalog, save_catalog,
)
from dypo_data.errors import StoreError
from dypo_data.store.shards import read_shard_rows, shard_files, shard_listing, store_write_error
from dypo_data.store.views import dedup_key

# table -> ORDER BY of its merged files: rows of one prompt, trace or run sit together
SORT_KEYS = {
    "prompts": "prompt_id, created_at",
    "traces": "prompt_id, role, model, group_id, sample_idx, trace_id, created_at",
    "verdicts": "trace_id, created_at, verdict_id",
    "train_metrics": "run_id, step, name, created_at",
    "train_samples": "run_id, step, prompt_id, created_at",
    "eval_results": "benchmark, model, policy_version, metric, created_at",
}
COMPACT_PREFIX = "part-compact-"


@dataclass(frozen=True)
class CompactionPlan:
    """What to merge: a table's live shards below the size threshold (at least two of them)."""

    table: str
    shards: list[Path]
    bytes: int


@dataclass(frozen=True)
class CompactionResult:
    table: str
    shards_merged: int
    parts_written: int
    rows_in: int
    rows_out: int
    bytes_in: int
    bytes_out: int
    replaced_kept: int  # replaced shards left in place because readers were open


def plan_compaction(root: Path, table: str, *, target_bytes: int) -> CompactionPlan | None:
    """The shards of `table` to merge (those under half the target size), or None if fewer than two."""
    small = [p for p in shard_files(root, table) if p.stat().st_size < target_bytes // 2]
    if len(small) < 2:
        return None
    return CompactionPlan(table, small, sum(p.stat().st_size for p in small))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _PartWriter:
    """Writes parts under temporary names: each part one table, sorted by the table's key."""

    def __init__(self, folder: Path, table: str, compaction_id: str, *, row_group_rows: int) -> None:
        self.folder, self.table, self.id, self.row_group_rows = folder, table, compaction_id, row_group_rows
        self.parts: list[str] = []
        self.rows = 0

    def temp(self, name: str) -> Path:
        return self.folder / f"{TMP_PREFIX}{name}.partial"

    def write(self, data: pa.Table) -> None:
        name = f"{COMPACT_PREFIX}{self.id}-{len(self.parts):04d}.parquet"
        self.parts.append(name)
        keys = [(column.strip(), "ascending") for column in SORT_KEYS[self.table].split(",")]
        pq.write_table(data.sort_by(keys), self.temp(name), row_group_size=self.row_group_rows, compression="zstd")
        _fsync(self.temp(name))
        self.rows += data.num_rows


def _kept_rows(plan: CompactionPlan, scratch: Path, memory_limit: str) -> tuple[int, dict[str, list[int]]]:
    """(rows read, the rows to keep of each shard): all but exact duplicates of an earlier row (same key
    and same hash of every column), found from small columns only, so memory stays bounded."""
    key = dedup_key(plan.table)
    columns = ", ".join(TABLES[plan.table].names)
    con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(scratch), "threads": 2})
    try:
        con.execute("SET VARIABLE compact_files = ?", [[str(p) for p in plan.shards]])
        rows = con.execute(f"""
            SELECT filename, list(file_row_number ORDER BY file_row_number), sum(n)::BIGINT FROM (
                SELECT filename, file_row_number, count(*) OVER (PARTITION BY filename) AS n
                FROM (SELECT filename, file_row_number, {key}, hash({columns}) AS row_hash
                      FROM read_parquet(getvariable('compact_files'), filename = true, file_row_number = true))
                QUALIFY row_number() OVER (PARTITION BY {key}, row_hash ORDER BY filename, file_row_number) = 1
            ) GROUP BY filename
        """).fetchall()
        rows_in = con.execute("SELECT count(*) FROM read_parquet(getvariable('compact_files'))").fetchall()[0][0]
    finally:
        con.close()
    return int(rows_in), {name: kept for name, kept, _ in rows}


def _write_parts(plan: CompactionPlan, kept: dict[str, list[int]], writer: _PartWriter, target_bytes: int) -> None:
    """Read each shard once, in name order, keeping its kept rows; write a sorted part whenever the rows
    gathered reach the target size in memory (so memory stays about twice the target)."""
    buffer: list[pa.Table] = []
    size = 0
    for path in plan.shards:
        rows = kept.get(str(path), [])
        if not rows:
            continue
        buffer.append(read_shard_rows(path, rows, TABLES[plan.table].names).cast(TABLES[plan.table]))
        size += buffer[-1].nbytes
        if size >= target_bytes:
            writer.write(pa.concat_tables(buffer))
            buffer, size = [], 0
    if buffer:
        writer.write(pa.concat_tables(buffer))


def _write_record(root: Path, compaction_id: str, record: dict) -> Path:
    folder = compactions_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    final, tmp = folder / f"{compaction_id}.json", folder / f"{TMP_PREFIX}{compaction_id}.json.partial"
    tmp.write_text(json.dumps(record, indent=1))
    _fsync(tmp)
    os.replace(tmp, final)
    _fsync(folder)
    return final


def compact_table(root: Path, plan: CompactionPlan, *, target_bytes: int, row_group_rows: int = 8192,
                  memory_limit: str = "1GB") -> CompactionResult:
    """Merge the plan's shards (see the module docstring for the steps and what a kill at each leaves)."""
    folder = root / plan.table
    compaction_id = f"{plan.table}-{uuid.uuid4().hex[:12]}"
    writer = _PartWriter(folder, plan.table, compaction_id, row_group_rows=row_group_rows)
    scratch = root / f"{TMP_PREFIX}{compaction_id}.spill"
    try:
        scratch.mkdir()
        rows_in, kept = _kept_rows(plan, scratch, memory_limit)
        _write_parts(plan, kept, writer, target_bytes)
    except OSError as exc:  # the disk (a damaged shard's SchemaError passes as it is)
        _discard_parts(writer)
        raise store_write_error(folder, exc) from exc
    except duckdb.Error as exc:
        _discard_parts(writer)
        raise StoreError(f"compaction of {plan.table} failed: {str(exc).splitlines()[0]}",
                         "raise --memory-limit, or free disk space for DuckDB's spill files in the store") from exc
    except BaseException:
        _discard_parts(writer)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record = {"table": plan.table, "parts": writer.parts, "replaces": [p.name for p in plan.shards]}
    record_path = _write_record(root, compaction_id, record)
    for name in writer.parts:
        os.replace(writer.temp(name), folder / name)
    _fsync(folder)
    kept = _finish(root, record_path, record)
    bytes_out = sum((folder / n).stat().st_size for n in writer.parts)
    return CompactionResult(plan.table, len(plan.shards), len(writer.parts), rows_in, writer.rows, plan.bytes, bytes_out, kept)


def _discard_parts(writer: _PartWriter) -> None:
    for name in writer.parts:
        writer.temp(name).unlink(missing_ok=True)


def _finish(root: Path, record_path: Path, record: dict) -> int:
    """Remove the shards a complete compaction replaced, then its record, if no reader holds the store;
    returns how many replaced shards stay (readers are open)."""
    folder = root / record["table"]
    lock = root / READERS_LOCK
    lock.parent.mkdir(exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return sum((folder / name).exists() for name in record["replaces"])
        for name in record["replaces"]:
            (folder / name).unlink(missing_ok=True)
        _fsync(folder)
        record_path.unlink(missing_ok=True)
        return 0
    finally:
        os.close(fd)


def certify_unique_keys(root: Path, table: str) -> bool:
    """Record in the catalog whether every key of `table` occurs once in its live shards; while exactly
    these shards stay, its view skips the deduplication (it would change nothing). One scan of the keys."""
    listing = shard_listing(root, table)  # validates and saves every live shard first
    catalog = load_catalog(root, table)
    if not listing.paths or any(catalog.shards.get(name) != stat for name, stat in listing.stats.items()):
        return False
    con = duckdb.connect()
    try:
        con.execute("SET VARIABLE certify_files = ?", [[str(p) for p in listing.paths]])
        repeated = con.execute(f"SELECT count(*) - count(DISTINCT ({dedup_key(table)})) "
                               "FROM read_parquet(getvariable('certify_files'))").fetchall()[0][0]
    finally:
        con.close()
    digest = files_digest(listing.stats) if repeated == 0 else None
    if digest != catalog.unique_keys:
        save_catalog(root, table, Catalog(catalog.shards, digest))
    return digest is not None


def recover(root: Path) -> int:
    """Finish or undo what killed compactions left (see the module docstring); returns replaced shards still kept.

    Call only while holding the compaction lease: temporary compaction files are then nobody's work.
    """
    kept = 0
    named: set[str] = set()
    for record_path, record in compaction_records(root):
        folder = root / record["table"]
        named |= set(record["parts"])
        missing = [n for n in record["parts"] if not (folder / n).exists()]
        if all((folder / f"{TMP_PREFIX}{n}.partial").exists() for n in missing):
            for name in missing:  # every part was complete before the record was written: roll forward
                os.replace(folder / f"{TMP_PREFIX}{name}.partial", folder / name)
            kept += _finish(root, record_path, record)
        else:  # a part was lost (removed by hand): the replaced shards still hold every row
            for name in record["parts"]:  # parts first: while the record exists, readers leave them out
                (folder / name).unlink(missing_ok=True)
                (folder / f"{TMP_PREFIX}{name}.partial").unlink(missing_ok=True)
            record_path.unlink()
    for table in TABLES:
        folder = root / table
        if folder.is_dir():
            for path in folder.glob(f"{TMP_PREFIX}{COMPACT_PREFIX}*"):
                if path.name[len(TMP_PREFIX):-len(".partial")] not in named:
                    path.unlink(missing_ok=True)
    for spill in root.glob(f"{TMP_PREFIX}*.spill"):
        shutil.rmtree(spill, ignore_errors=True)
    for leftover in compactions_dir(root).glob(f"{TMP_PREFIX}*"):  # a record killed while being written
        leftover.unlink(missing_ok=True)
    return kept
