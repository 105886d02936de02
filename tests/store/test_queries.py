"""Named queries that read large columns by location give what the views give."""

from __future__ import annotations

import pyarrow as pa

from dypo_data.contracts import TRACES, settings_hash
from dypo_data.store import ShardWriter, connect
from dypo_data.store.queries import fetch_arrow, unscored_traces
from tests.store_factory import REVERIFIER, VERIFIER, build_store

VIEW_UNSCORED = """
    SELECT t.trace_id, t.completion, p.answer AS gold FROM traces t JOIN prompts p USING (prompt_id)
    WHERE t.trace_id NOT IN (SELECT trace_id FROM verdicts WHERE settings_hash = ?) ORDER BY t.trace_id
"""


def test_unscored_traces_are_those_of_the_views(tmp_path):
    fs = build_store(tmp_path)
    ShardWriter(fs.root, "again").write("traces", pa.Table.from_pylist(fs.traces[:5], schema=TRACES))  # a resumed run
    con = connect(fs.root)
    try:
        for settings in (VERIFIER, REVERIFIER, {"never": "used"}):
            vhash = settings_hash(settings)
            found = unscored_traces(con, vhash)
            assert found.to_pylist() == fetch_arrow(con, VIEW_UNSCORED, [vhash]).to_pylist()
            assert found.num_rows > 0
    finally:
        con.close()


def test_unscored_traces_of_an_empty_store(tmp_path):
    con = connect(tmp_path)
    assert unscored_traces(con, "h").num_rows == 0
    con.close()
