"""Opening a store is O(1) in its shards after the first open (the shard catalog), told by counting reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dypo_data.errors import SchemaError
from dypo_data.store import ShardWriter, connect, shard_files
from dypo_data.store import shards as shards_module
from dypo_data.store.catalog import catalog_path
from test_shards import prompt_rows

IO = Path("/proc/self/io")


def read_syscalls() -> int:
    """read() calls this process made so far (Linux): DuckDB's and pyarrow's file reads included."""
    fields = dict(line.split(": ") for line in IO.read_text().splitlines())
    return int(fields["syscr"])


def many_shards(root: Path, n: int) -> Path:
    """A store whose prompts table has `n` one-row shards (copies of one shard's bytes under new names)."""
    first = ShardWriter(root, "r").write("prompts", prompt_rows(1))
    for i in range(1, n):
        shutil.copyfile(first, first.with_name(f"part-copy-{i:05d}.parquet"))
    return first


@pytest.fixture
def footer_reads(monkeypatch):
    """Counts shard footers read by validation."""
    calls: list[Path] = []
    real = pq.read_schema

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shards_module.pq, "read_schema", counting)
    return calls


def open_cost(root: Path) -> int:
    """read() calls of one open of the store (its views defined) and one query through them."""
    before = read_syscalls()
    con = connect(root)
    con.execute("SELECT 1").fetchall()
    con.close()
    return read_syscalls() - before


@pytest.mark.skipif(not IO.exists(), reason="counts reads with /proc/self/io (Linux)")
def test_second_open_reads_no_shard_whatever_the_number_of_shards(tmp_path, footer_reads):
    small, large = tmp_path / "small", tmp_path / "large"
    many_shards(small, 100)
    many_shards(large, 3000)
    connect(small).close()
    connect(large).close()  # the first open validates every shard
    assert len(footer_reads) == 3100
    footer_reads.clear()
    costs = {root.name: open_cost(root) for root in (small, large)}
    assert footer_reads == []  # no footer was read again
    # O(1): 30x the shards cost (nearly) the same reads; O(shards) would be at least one read per shard
    assert costs["large"] - costs["small"] < 100, costs
    assert costs["large"] < 1000, costs
    con = connect(large)
    assert con.execute("SELECT count(*) FROM prompts").fetchone()[0] == 1  # the copies hold the same row
    assert con.execute("SELECT count(*) FROM read_parquet(getvariable('dypo_shards_prompts'))").fetchone()[0] == 3000
    con.close()


def test_only_new_or_changed_shards_are_validated(tmp_path, footer_reads):
    first = many_shards(tmp_path, 5)
    shard_files(tmp_path, "prompts")
    footer_reads.clear()
    new = ShardWriter(tmp_path, "r2").write("prompts", prompt_rows(2))
    assert new in shard_files(tmp_path, "prompts")
    assert footer_reads == [new]
    footer_reads.clear()
    shutil.copyfile(new, first)  # a file replaced by hand: other size, time and inode
    assert len(shard_files(tmp_path, "prompts")) == 6
    assert footer_reads == [first]


def test_a_foreign_file_added_after_the_catalog_is_still_named(tmp_path):
    many_shards(tmp_path, 3)
    connect(tmp_path).close()
    assert catalog_path(tmp_path, "prompts").is_file()
    pq.write_table(prompt_rows(1).drop_columns(["origin"]), tmp_path / "prompts" / "foreign.parquet")
    with pytest.raises(SchemaError, match="foreign.parquet is tagged as a dypo prompts shard but its columns differ"):
        connect(tmp_path)


def test_a_broken_or_outdated_catalog_is_rebuilt(tmp_path, footer_reads):
    many_shards(tmp_path, 4)
    shard_files(tmp_path, "prompts")
    path = catalog_path(tmp_path, "prompts")
    for text in ("{not json", '{"version": 1, "schema_version": 0, "shards": {}}', '{"version": 1}'):
        path.write_text(text)
        footer_reads.clear()
        assert len(shard_files(tmp_path, "prompts")) == 4
        assert len(footer_reads) == 4
    footer_reads.clear()
    shard_files(tmp_path, "prompts")
    assert footer_reads == []  # rebuilt and saved


def test_a_store_that_cannot_be_written_opens_without_a_catalog(tmp_path, footer_reads):
    many_shards(tmp_path, 3)
    (tmp_path / ".catalog").write_text("a file where the catalog folder would be")
    assert connect(tmp_path).execute("SELECT count(*) FROM prompts").fetchone()[0] == 1
    assert len(shard_files(tmp_path, "prompts")) == 3
