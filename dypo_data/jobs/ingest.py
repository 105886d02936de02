"""Bring a prompt file (and the teacher traces it carries) into the store, skipping what is there."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from dypo_data.jobs.common import JobStats, new_run_id
from dypo_data.prompts import PromptSource, load_prompts
from dypo_data.store import ShardWriter, check_writable, open_store, read_table
from dypo_data.store.lease import hold_lease


def _only_new(table: pa.Table, key: str, existing: set[str]) -> pa.Table:
    if not existing or table.num_rows == 0:
        return table
    keep = pc.invert(pc.is_in(table[key], value_set=pa.array(sorted(existing), pa.string())))
    return table.filter(keep)


PROMPTS_LEASE = "import|prompts"  # brief: a second import waits, then writes only what the first did not


def ingest_prompts(root: Path, src: PromptSource, writer: ShardWriter, stats: JobStats) -> list[str]:
    """Write the new prompts and imported traces of `src`; returns the prompt ids of the file, in order."""
    loaded = load_prompts(src)
    for reason, n in loaded.skipped.items():
        stats.add(f"prompts_skipped/{reason}", n)
    with hold_lease(root, PROMPTS_LEASE, "an import of prompts", wait=True):
        known_prompts = set(read_table(root, "prompts", ["prompt_id"])["prompt_id"].to_pylist())
        new_prompts = _only_new(loaded.prompts, "prompt_id", known_prompts)
        writer.write("prompts", new_prompts)
        stats.add("prompts_loaded", loaded.prompts.num_rows)
        stats.add("prompts_new", new_prompts.num_rows)
        if loaded.traces.num_rows:
            known_traces = set(read_table(root, "traces", ["trace_id"])["trace_id"].to_pylist())
            new_traces = _only_new(loaded.traces, "trace_id", known_traces)
            writer.write("traces", new_traces)
            stats.add("traces_imported", new_traces.num_rows)
            stats.add("traces_import_skipped_existing", loaded.traces.num_rows - new_traces.num_rows)
    return loaded.prompts["prompt_id"].to_pylist()


def run_import(store: str, src: PromptSource) -> tuple[JobStats, list[str]]:
    """`dypo-data import`: prompts and the teacher traces they carry, with no generation.

    Returns the run's stats and the file's prompt ids, in file order.
    """
    root = open_store(store, must_exist=False)
    check_writable(root)
    stats = JobStats("import", new_run_id("import"))
    writer = ShardWriter(root, stats.run_id)
    prompt_ids = ingest_prompts(root, src, writer, stats)
    writer.write_manifest(stats.manifest(src))
    return stats, prompt_ids
