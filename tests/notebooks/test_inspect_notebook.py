"""notebooks/inspect_store.ipynb: runs top to bottom on a factory store in a kernel on this Python,
draws its plots, and its accuracy tables agree with a direct DuckDB query over the raw Parquet files
and with the factory's ground truth."""

from __future__ import annotations

import base64
import html
import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest

from store_factory import POLICY, TEACHERS, FactoryStore, build_store

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel", reason="the notebook kernel needs ipykernel in this environment")
pytest.importorskip("matplotlib")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (after the skips)
from jupyter_client.manager import KernelManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "inspect_store.ipynb"
KERNEL = "dypo-test-python"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Appended to the notebook: hands the kernel's tables back to the test as one JSON line.
PROBE = """
import json as _json, sys as _sys
print("PROBE " + _json.dumps({
    "executable": _sys.executable,
    "by_model": accuracy_by_model.select("role", "model", "graded", "accuracy").to_dicts(),
    "by_source": accuracy_by_source.to_dicts(),
}))
"""

# Straight from the shards, without the store's views: latest verdict per trace, then correct / graded.
DIRECT_ACCURACY = """
    WITH latest AS (
        SELECT trace_id, correct FROM read_parquet(?)
        QUALIFY row_number() OVER (PARTITION BY trace_id ORDER BY created_at DESC) = 1
    )
    SELECT t.role, t.model, p.source, count(v.correct) AS graded, count(*) FILTER (WHERE v.correct) AS n_correct
    FROM read_parquet(?) t
    JOIN read_parquet(?) p USING (prompt_id)
    LEFT JOIN latest v USING (trace_id)
    GROUP BY t.role, t.model, p.source
"""


def write_kernelspec(kernels_dir: Path) -> None:
    """A kernelspec that starts ipykernel on exactly this interpreter (not whatever `python` is on PATH)."""
    spec_dir = kernels_dir / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dypo test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[FactoryStore, "nbformat.NotebookNode", dict]:
    tmp = tmp_path_factory.mktemp("inspect_nb")
    fs = build_store(tmp / "store", seed=7)
    write_kernelspec(tmp / "kernels")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp / "kernels")]))
    client = NotebookClient(nb, km=km, timeout=180, resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    env = dict(os.environ, DYPO_STORE=str(fs.root), MPLBACKEND="module://matplotlib_inline.backend_inline")
    client.execute(env=env)  # raises CellExecutionError on the first failing cell
    probe_lines = [
        line for out in nb.cells[-1].outputs if out.output_type == "stream"
        for line in out.text.splitlines() if line.startswith("PROBE ")
    ]
    assert len(probe_lines) == 1, nb.cells[-1].outputs
    return fs, nb, json.loads(probe_lines[0][len("PROBE "):])


def outputs(nb) -> list:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def test_runs_without_errors_or_warnings_on_this_python(run):
    _, nb, probe = run
    assert Path(probe["executable"]).resolve() == Path(sys.executable).resolve()
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    stderr = "".join(o.text for o in outputs(nb) if o.output_type == "stream" and o.name == "stderr")
    for marker in ("Traceback", "Warning"):  # API drift (e.g. a DuckDB or Polars deprecation) shows up here first
        assert marker not in stderr, stderr


def test_draws_every_plot(run):
    _, nb, _ = run
    figures = [
        base64.b64decode(o.data["image/png"]) for o in outputs(nb)
        if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]
    # accuracy per model, per source, tiers, length histograms, statuses
    assert len(figures) >= 5
    assert all(fig.startswith(PNG_MAGIC) and len(fig) > 5_000 for fig in figures)


def test_accuracy_per_model_matches_direct_duckdb_and_ground_truth(run):
    fs, _, probe = run
    globs = [str(fs.root / t / "part-*.parquet") for t in ("verdicts", "traces", "prompts")]
    rows = duckdb.connect().execute(DIRECT_ACCURACY, globs).fetchall()
    graded, correct = defaultdict(int), defaultdict(int)
    for role, model, _source, n_graded, n_correct in rows:
        graded[role, model] += n_graded
        correct[role, model] += n_correct
    shown = {(r["role"], r["model"]): r for r in probe["by_model"]}
    assert set(shown) == set(graded) == {("teacher", t) for t in TEACHERS} | {("policy", POLICY)}
    truth = ground_truth_accuracy(fs, lambda trace, prompt: (trace["role"], trace["model"]))
    for key, row in shown.items():
        assert row["graded"] == graded[key]
        assert row["accuracy"] == pytest.approx(correct[key] / graded[key], abs=5e-5)  # the table rounds to 4 places
        assert row["accuracy"] == pytest.approx(truth[key], abs=5e-5)


def test_accuracy_per_source_matches_direct_duckdb(run):
    fs, _, probe = run
    globs = [str(fs.root / t / "part-*.parquet") for t in ("verdicts", "traces", "prompts")]
    rows = duckdb.connect().execute(DIRECT_ACCURACY, globs).fetchall()
    direct = {(source, role, model): (g, c) for role, model, source, g, c in rows}
    shown = {(r["source"], r["role"], r["model"]): r for r in probe["by_source"]}
    assert set(shown) == set(direct)
    assert {s for s, _, _ in shown} == {"gsm8k", "math"}
    for key, row in shown.items():
        n_graded, n_correct = direct[key]
        assert row["graded"] == n_graded
        assert row["accuracy"] == pytest.approx(n_correct / n_graded, abs=5e-5)


def test_shows_a_mid_group_side_by_side(run):
    fs, nb, _ = run
    shown = "".join(o.data["text/html"] for o in outputs(nb) if "text/html" in o.get("data", {}))
    gid = fs.groups_of("mid")[0]  # the notebook shows the first group of each tier by id
    assert f"mid group <code>{gid}</code>" in shown
    for trace in fs.group_traces(gid):
        assert f"rollout {trace['sample_idx']}" in shown
        verdict = fs.latest.get(trace["trace_id"])
        if verdict and verdict["extracted_answer"]:
            assert f"<code>{html.escape(verdict['extracted_answer'])}</code>" in shown


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def ground_truth_accuracy(fs: FactoryStore, key) -> dict:
    """correct / graded per key(trace, prompt), from the rows the factory wrote."""
    graded, correct = defaultdict(int), defaultdict(int)
    prompts = {p["prompt_id"]: p for p in fs.prompts}
    for trace in fs.traces:
        verdict = fs.latest.get(trace["trace_id"])
        if verdict is None or verdict["correct"] is None:
            continue
        k = key(trace, prompts[trace["prompt_id"]])
        graded[k] += 1
        correct[k] += verdict["correct"]
    return {k: correct[k] / graded[k] if graded[k] else math.nan for k in graded}
