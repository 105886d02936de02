"""The store: append-only Parquet shards per table and DuckDB views over them."""

from dypo_data.store.damage import naming_damaged_shards, reading
from dypo_data.store.shards import (
    ShardWriter, check_writable, open_store, read_table, shard_files, store_containing, validate_shard,
)
from dypo_data.store.views import VIEW_NAMES, connect

__all__ = [
    "VIEW_NAMES",
    "ShardWriter",
    "check_writable",
    "connect",
    "naming_damaged_shards",
    "reading",
    "open_store",
    "read_table",
    "shard_files",
    "store_containing",
    "validate_shard",
]
