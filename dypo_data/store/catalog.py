"""The shard catalog: which files of a table are live shards, without opening every file at every open.

Opening a store used to read every shard's footer (table tag, schema version, columns) on every
open: thousands of files for a store that long runs filled. The catalog remembers, per table, the
shards already validated in `STORE/.catalog/<table>.json` (name, size, modification time, inode):
an open lists the table's folder (one directory read, a `stat` per entry, no file opened) and
validates only the files the catalog does not know or whose size, time or inode changed (a new
shard, a file replaced by hand). So after the first open an open reads one small file per table,
however many shards there are; a foreign or damaged file added later is still named, because it is
new to the catalog.

The catalog is a cache, never the truth: a missing, unreadable or outdated catalog (another schema
version) is rebuilt by validating every shard, and the listing of the folder decides what exists.
Writers do not touch it (their atomicity is unchanged); the first reader after them validates their
new shards and saves the catalog by writing a temporary file and renaming it. A store the reader may
not write keeps working, only without the saving. Compactions (compaction.py) name shards they
replaced; those are left out of the listing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dypo_data.contracts.schemas import SCHEMA_VERSION

log = logging.getLogger(__name__)

CATALOG_DIR = ".catalog"
CATALOG_VERSION = 1
TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class ShardStat:
    """What identifies a validated shard file: if any of it changes, the file is validated again."""

    size: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> "ShardStat":
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


def catalog_path(root: Path, table: str) -> Path:
    return root / CATALOG_DIR / f"{table}.json"


@dataclass(frozen=True)
class Catalog:
    """The shards validated so far and, when a compaction found every key of the table's live shards
    unique, the digest of those shards (`files_digest`): while the live shards are exactly these, the
    views need not deduplicate."""

    shards: dict[str, ShardStat]
    unique_keys: str | None = None


def files_digest(shards: dict[str, ShardStat]) -> str:
    """A digest of shard names with their size, time and inode: changes when any file is added, removed or replaced."""
    body = json.dumps({name: [s.size, s.mtime_ns, s.ino] for name, s in sorted(shards.items())}, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def load_catalog(root: Path, table: str) -> Catalog:
    """The catalog of `table` (empty when there is no usable one)."""
    try:
        data = json.loads(catalog_path(root, table).read_text())
        if data.get("version") != CATALOG_VERSION or data.get("schema_version") != SCHEMA_VERSION:
            return Catalog({})
        shards = {name: ShardStat(*entry) for name, entry in data["shards"].items()}
        unique = data.get("unique_keys")
        return Catalog(shards, unique if isinstance(unique, str) else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Catalog({})


def save_catalog(root: Path, table: str, catalog: Catalog) -> None:
    """Write the catalog atomically; a store the process may not write is left as it is."""
    path = catalog_path(root, table)
    tmp = path.with_name(f"{TMP_PREFIX}{table}-{os.getpid()}.json.partial")
    body = {"version": CATALOG_VERSION, "schema_version": SCHEMA_VERSION,
            "shards": {name: [s.size, s.mtime_ns, s.ino] for name, s in sorted(catalog.shards.items())}}
    if catalog.unique_keys is not None:
        body["unique_keys"] = catalog.unique_keys
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps(body, separators=(",", ":")))
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("shard catalog of %s not saved (%s)", path, exc)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def listed_shards(folder: Path) -> dict[str, ShardStat]:
    """Every complete shard file in `folder` with its stat (temporary files are skipped); no file is opened."""
    found = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".parquet") and not entry.name.startswith(TMP_PREFIX):
                    try:
                        found[entry.name] = ShardStat.of(entry.stat())
                    except FileNotFoundError:  # removed while listing (a finished compaction)
                        continue
    except FileNotFoundError:
        return {}
    return found


# -- compactions: which shards a compaction replaced (see compaction.py) ------------------------------

COMPACTIONS = "compactions"


def compactions_dir(root: Path) -> Path:
    return root / CATALOG_DIR / COMPACTIONS


def compaction_records(root: Path, table: str | None = None) -> list[tuple[Path, dict]]:
    """The recorded compactions (of `table`, or of all tables), oldest name first: (record file, record)."""
    folder = compactions_dir(root)
    records = []
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith(TMP_PREFIX))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        try:
            record = json.loads((folder / name).read_text())
        except FileNotFoundError:  # finished and removed meanwhile
            continue
        if table is None or record["table"] == table:
            records.append((folder / name, record))
    return records


def hidden_shards(root: Path, table: str, listed: set[str]) -> set[str]:
    """Shard names a reader must leave out: those a complete compaction replaced, and the parts of
    an incomplete one (a compaction is complete once every part it records is in place)."""
    hidden: set[str] = set()
    for _, record in compaction_records(root, table):
        parts = set(record["parts"])
        hidden |= set(record["replaces"]) if parts <= listed else parts & listed
    return hidden


# -- readers: a shared lock while a process may read shard files ----------------------------------------

READERS_LOCK = Path(".leases") / "readers.lock"


def hold_readers(root: Path, *, create: bool = True) -> int | None:
    """Take the store's shared readers lock (BSD flock) and return its descriptor (close it to release).

    While any reader holds it, a compaction leaves the shards it replaced in place (readers listed
    them and may still read them); it removes them once no reader is left. `create=False` (a reader
    that writes nothing to the store) takes it only if the lock file exists: a compaction creates it
    first. None where there is no lock file to take.
    """
    path = root / READERS_LOCK
    try:
        if create:
            path.parent.mkdir(exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        else:
            fd = os.open(path, os.O_RDONLY)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


def release_readers(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
