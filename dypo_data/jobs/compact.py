"""`dypo-data compact`: merge each table's small shards into large sorted files, then note which tables
have unique keys, so their views skip deduplication (see store/compaction.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dypo_data.contracts.schemas import TABLES
from dypo_data.errors import ConfigError
from dypo_data.jobs.common import JobStats, new_run_id
from dypo_data.store import check_writable, open_store
from dypo_data.store.compaction import CompactionResult, certify_unique_keys, compact_table, plan_compaction, recover
from dypo_data.store.lease import hold_lease

MIB = 2**20


@dataclass(frozen=True)
class CompactConfig:
    store: str = field(metadata={"help": "Store directory to compact."})
    tables: tuple[str, ...] = field(default=tuple(TABLES), metadata={"help": "Tables to compact (default: all)."})
    target_mib: float = field(default=256.0, metadata={"help": "Size of a merged file in MiB; shards under half of it are merged."})
    row_group_rows: int = field(default=8192, metadata={"help": "Rows per Parquet row group of a merged file."})
    memory_limit: str = field(default="1GB", metadata={"help": "DuckDB's memory limit while merging (it spills to disk beyond)."})
    wait: bool = field(default=False, metadata={"help": "When another compaction of this store runs, wait for it instead of failing."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tables) - set(TABLES))
        if unknown:
            raise ConfigError(f"tables={unknown} are not tables of a store", f"use some of {', '.join(TABLES)}")
        if not self.target_mib > 0:
            raise ConfigError(f"target_mib={self.target_mib} must be > 0", "use e.g. 256")
        if self.row_group_rows < 1:
            raise ConfigError(f"row_group_rows={self.row_group_rows} must be >= 1", "use e.g. 8192")


def run_compact(cfg: CompactConfig, report=lambda result, seconds: None) -> JobStats:
    """Finish what killed compactions left, then compact every table asked for; `report` is called per table."""
    root = open_store(cfg.store)
    check_writable(root)
    stats = JobStats("compact", new_run_id("compact"))
    target = int(cfg.target_mib * MIB)
    with hold_lease(root, "compact", "compaction of the store", wait=cfg.wait):
        stats.add("replaced_shards_kept", recover(root))
        for table in cfg.tables:
            plan = plan_compaction(root, table, target_bytes=target)
            if plan is None:
                continue
            started = time.monotonic()
            result: CompactionResult = compact_table(root, plan, target_bytes=target, row_group_rows=cfg.row_group_rows,
                                                     memory_limit=cfg.memory_limit)
            seconds = time.monotonic() - started
            stats.add("shards_merged", result.shards_merged)
            stats.add("files_written", result.parts_written)
            stats.add("duplicate_rows_dropped", result.rows_in - result.rows_out)
            stats.add("replaced_shards_kept", result.replaced_kept)
            stats.time(f"{table}_seconds", seconds)
            report(result, seconds)
        for table in cfg.tables:
            if certify_unique_keys(root, table):
                stats.add("tables_with_unique_keys")
    return stats
