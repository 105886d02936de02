"""Damage a real shard the way a bad disk or an interrupted copy does: the footer stays valid (the
file opens, its schema and table tag read), but a data page of one column no longer decodes."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def damage_column(path: Path, column: str) -> None:
    """Overwrite the start of `column`'s data page (its page header and first bytes) in every row group."""
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for rg in range(meta.num_row_groups):
        chunk = next(meta.row_group(rg).column(i) for i in range(meta.num_columns)
                     if meta.row_group(rg).column(i).path_in_schema == column)
        start = chunk.data_page_offset
        data[start:start + 48] = b"\xff" * 48
    path.write_bytes(bytes(data))
    assert pq.read_schema(path).metadata  # the footer still reads
