"""notebooks/train_run.ipynb: runs top to bottom on a store a real (tiny, offline) dypo-train run wrote,
draws its plots, and the numbers it plots agree with a direct DuckDB query over the raw Parquet files.

The store: tests/train/train_store.py's prompts, traces and verdicts, then two recipes trained on it for
three steps each (`sft-then-grpo`, then `dypo`, the run the notebook shows by default). A resume is
simulated by writing step 3 of the dypo run again (other metric values, later `created_at`), so the
numbers only agree with the dedup rule: the latest row per (run_id, step, name). A second execution
adds an online-looking run (the dypo run's rows plus `time/generate`, `time/verify`, `time/weight_sync`)
to a copy of the store and picks it with DYPO_RUN, for the step-time plot.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel", reason="the notebook kernel needs ipykernel in this environment")
pytest.importorskip("matplotlib")
pytest.importorskip("torch")
pytest.importorskip("accelerate")

import pyarrow as pa  # noqa: E402  (after the skips)
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from dypo_data.contracts.schemas import TRAIN_METRICS, TRAIN_SAMPLES  # noqa: E402
from dypo_data.store import ShardWriter  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR / "train") not in sys.path:
    sys.path.insert(0, str(TESTS_DIR / "train"))

NOTEBOOK = TESTS_DIR.parent / "notebooks" / "train_run.ipynb"
KERNEL = "dypo-test-python"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RECIPES = ("sft-then-grpo", "dypo")  # trained in this order: dypo is the latest run
LATEST = "dypo-test"
ONLINE_RUN = "dypo-online-test"
ONLINE_TIMES = {"time/generate": lambda step: 2.0 + step, "time/verify": lambda step: 0.5, "time/weight_sync": lambda step: 0.25}
DYNAMICS = {"tier/offline_ratio": "offline_ratio", "tier/easy": "easy", "tier/mid": "mid", "tier/hard": "hard",
            "reward/mean": "reward", "policy/entropy": "entropy", "grad/norm": "grad_norm"}

# Appended to the notebook: hands the kernel's tables back to the test as one JSON line.
PROBE = """
import json as _json, sys as _sys
print("PROBE " + _json.dumps({
    "executable": _sys.executable,
    "run": RUN,
    "online": bool(ONLINE),
    "dynamics": dynamics.to_dicts(),
    "losses": losses.to_dicts(),
    "routes": routes.to_dicts(),
    "examples": examples.to_dicts(),
    "comparison": comparison.to_dicts(),
    "time_split": None if time_split is None else time_split.to_dicts(),
}))
"""

# Straight from the shards, without the store's views: the latest row of each key.
DIRECT_METRICS = """
    SELECT run_id, step, name, value FROM read_parquet(?)
    QUALIFY row_number() OVER (PARTITION BY run_id, step, name ORDER BY created_at DESC) = 1
"""
DIRECT_SAMPLES = """
    SELECT * FROM read_parquet(?)
    QUALIFY row_number() OVER (PARTITION BY run_id, step, prompt_id ORDER BY created_at DESC) = 1
"""
DIRECT_GROUP_REWARD = """
    WITH latest AS (
        SELECT trace_id, reward FROM read_parquet(?)
        QUALIFY row_number() OVER (PARTITION BY trace_id ORDER BY created_at DESC) = 1
    )
    SELECT t.group_id, avg(v.reward) FROM read_parquet(?) t LEFT JOIN latest v USING (trace_id)
    WHERE t.role = 'policy' GROUP BY t.group_id
"""


def write_kernelspec(kernels_dir: Path) -> None:
    """A kernelspec that starts ipykernel on exactly this interpreter (not whatever `python` is on PATH)."""
    spec_dir = kernels_dir / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dypo test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


def execute(store: Path, kernels: Path, run: str | None = None) -> tuple["nbformat.NotebookNode", dict]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    client = NotebookClient(nb, km=km, timeout=180, resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    env = dict(os.environ, DYPO_STORE=str(store), MPLBACKEND="module://matplotlib_inline.backend_inline")
    env.pop("DYPO_RUN", None)
    if run is not None:
        env["DYPO_RUN"] = run
    client.execute(env=env)  # raises CellExecutionError on the first failing cell
    probe_lines = [
        line for out in nb.cells[-1].outputs if out.output_type == "stream"
        for line in out.text.splitlines() if line.startswith("PROBE ")
    ]
    assert len(probe_lines) == 1, nb.cells[-1].outputs
    return nb, json.loads(probe_lines[0][len("PROBE "):])


def trained_store(tmp: Path) -> Path:
    """tests/train's store, and RECIPES trained on it offline for three steps each."""
    from train_store import build_train_store
    from transformers import AutoTokenizer

    from dypo_data.models import resolve_model
    from dypo_train.loop.run import run_training
    from dypo_train.recipes import resolve

    cache = tmp / "cache"
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny", cache_dir=str(cache)).path)
    store = build_train_store(tmp / "store", tokenizer).root
    for recipe in RECIPES:
        cfg = resolve(recipe, overrides=[
            f"data.store={store}", "model.policy=tiny", "model.mixed_precision=no", "run.max_steps=3",
            f"run.output_dir={tmp / 'runs'}", f"run.name={recipe}-test", "run.prompts_per_step=8",
            "run.micro_batch_size=4", "run.report_to=[]", "optim.lr=1e-3",
        ])
        run_training(cfg, cache_dir=str(cache), reporter=None)
    return store


def rows(store: Path, table: str, run_id: str) -> list[dict]:
    query = DIRECT_METRICS if table == "train_metrics" else DIRECT_SAMPLES
    rel = duckdb.connect().execute(f"SELECT * FROM ({query}) WHERE run_id = ?", [glob(store, table), run_id])
    names = [d[0] for d in rel.description]
    return [dict(zip(names, r)) for r in rel.fetchall()]


def simulate_resume(store: Path, run_id: str, step: int) -> None:
    """Write `step` of `run_id` again, as a resumed run that retrained it does: later rows, other values."""
    at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    metrics = [{**r, "value": None if r["value"] is None else r["value"] * 0.5 + 0.125, "created_at": at}
               for r in rows(store, "train_metrics", run_id) if r["step"] == step]
    samples = [{**r, "created_at": at} for r in rows(store, "train_samples", run_id) if r["step"] == step]
    writer = ShardWriter(store, f"{run_id}-resumed")
    writer.write("train_metrics", pa.Table.from_pylist(metrics, schema=TRAIN_METRICS))
    writer.write("train_samples", pa.Table.from_pylist(samples, schema=TRAIN_SAMPLES))


def add_online_run(store: Path, source_run: str, run_id: str) -> None:
    """A run shaped like an online one: `source_run`'s rows under another id, plus generation timings."""
    at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    metrics = [{**r, "run_id": run_id, "created_at": at} for r in rows(store, "train_metrics", source_run)]
    for step in sorted({r["step"] for r in metrics}):
        metrics += [{"run_id": run_id, "step": step, "name": name, "value": value(step), "created_at": at}
                    for name, value in ONLINE_TIMES.items()]
    samples = [{**r, "run_id": run_id, "created_at": at} for r in rows(store, "train_samples", source_run)]
    writer = ShardWriter(store, run_id)
    writer.write("train_metrics", pa.Table.from_pylist(metrics, schema=TRAIN_METRICS))
    writer.write("train_samples", pa.Table.from_pylist(samples, schema=TRAIN_SAMPLES))


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("train_run_nb")
    store = trained_store(tmp)
    simulate_resume(store, LATEST, step=3)
    online = tmp / "online_store"
    shutil.copytree(store, online)
    add_online_run(online, LATEST, ONLINE_RUN)
    write_kernelspec(tmp / "kernels")
    return {"offline": store, "online": online, "kernels": tmp / "kernels"}


@pytest.fixture(scope="module")
def offline(stores) -> tuple[Path, "nbformat.NotebookNode", dict]:
    nb, probe = execute(stores["offline"], stores["kernels"])
    return stores["offline"], nb, probe


@pytest.fixture(scope="module")
def online(stores) -> tuple[Path, "nbformat.NotebookNode", dict]:
    nb, probe = execute(stores["online"], stores["kernels"], run=ONLINE_RUN)
    return stores["online"], nb, probe


def glob(store: Path, table: str) -> str:
    return str(store / table / "*.parquet")


def direct_metrics(store: Path) -> dict[tuple[str, int, str], float | None]:
    found = duckdb.connect().execute(DIRECT_METRICS, [glob(store, "train_metrics")]).fetchall()
    return {(run_id, step, name): value for run_id, step, name, value in found}


def outputs(nb) -> list:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def figures(nb) -> list[bytes]:
    return [
        base64.b64decode(o.data["image/png"]) for o in outputs(nb)
        if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]


@pytest.mark.parametrize("execution", ["offline", "online"])
def test_runs_without_errors_or_warnings_on_this_python(execution, request):
    _, nb, probe = request.getfixturevalue(execution)
    assert Path(probe["executable"]).resolve() == Path(sys.executable).resolve()
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    stderr = "".join(o.text for o in outputs(nb) if o.output_type == "stream" and o.name == "stderr")
    for marker in ("Traceback", "Warning"):  # API drift (e.g. a Polars or Matplotlib deprecation) shows up here first
        assert marker not in stderr, stderr


@pytest.mark.parametrize(("execution", "expected"), [("offline", 3), ("online", 4)])
def test_draws_every_plot(execution, expected, request):
    _, nb, _ = request.getfixturevalue(execution)
    # learning dynamics, loss parts, (online: step time split), recipe comparison
    shown = figures(nb)
    assert len(shown) == expected
    assert all(fig.startswith(PNG_MAGIC) and len(fig) > 5_000 for fig in shown)


def test_shows_the_latest_run_by_default(offline):
    store, _, probe = offline
    latest = duckdb.connect().execute(
        "SELECT run_id FROM read_parquet(?) GROUP BY run_id ORDER BY min(created_at) DESC LIMIT 1",
        [glob(store, "train_metrics")],
    ).fetchone()[0]
    assert probe["run"] == latest == LATEST
    assert probe["online"] is False and probe["time_split"] is None


def test_resume_rows_make_the_dedup_rule_matter(offline):
    store, _, _ = offline
    raw = duckdb.connect().execute(
        "SELECT step, count(*) AS n, count(DISTINCT value) AS values FROM read_parquet(?) "
        "WHERE run_id = ? AND name = 'grad/norm' GROUP BY step ORDER BY step",
        [glob(store, "train_metrics"), LATEST],
    ).fetchall()
    assert raw == [(1, 1, 1), (2, 1, 1), (3, 2, 2)]


def test_learning_dynamics_match_direct_duckdb(offline):
    store, _, probe = offline
    direct = direct_metrics(store)
    steps = sorted({step for run_id, step, _ in direct if run_id == LATEST})
    assert [r["step"] for r in probe["dynamics"]] == steps == [1, 2, 3]
    for row in probe["dynamics"]:
        for name, column in DYNAMICS.items():
            expected = direct.get((LATEST, row["step"], name))
            assert row[column] == pytest.approx(expected), (row["step"], name)
    assert all(row["offline_ratio"] is not None and row["entropy"] is not None for row in probe["dynamics"])


def test_loss_parts_match_direct_duckdb(offline):
    store, _, probe = offline
    direct = direct_metrics(store)
    parts = {name for run_id, _, name in direct if run_id == LATEST and name.startswith("loss/")}
    assert {"loss/sft", "loss/rl", "loss/gal", "loss/total"} <= parts
    for row in probe["losses"]:
        assert set(row) == {"step", "rl/clip_frac"} | parts
        for name in parts | {"rl/clip_frac"}:
            assert row[name] == pytest.approx(direct.get((LATEST, row["step"], name))), (row["step"], name)


def test_route_tier_counts_match_direct_duckdb(offline):
    store, _, probe = offline
    samples = duckdb.connect().execute(
        f"SELECT route, tier FROM ({DIRECT_SAMPLES}) WHERE run_id = ?", [glob(store, "train_samples"), LATEST]
    ).fetchall()
    direct = Counter(samples)
    shown = {(row["route"], tier): n for row in probe["routes"] for tier, n in row.items() if tier not in ("route", "total") and n}
    assert shown == dict(direct)
    assert {route for route, _ in direct} >= {"sft", "rl", "skip:easy"}
    assert sum(row["total"] for row in probe["routes"]) == len(samples) == 3 * 8  # 3 steps of 8 prompts, each once


def test_examples_per_route_with_their_group_reward(offline):
    store, _, probe = offline
    con = duckdb.connect()
    group_reward = dict(con.execute(DIRECT_GROUP_REWARD, [glob(store, "verdicts"), glob(store, "traces")]).fetchall())
    problems = dict(con.execute("SELECT prompt_id, problem FROM read_parquet(?)", [glob(store, "prompts")]).fetchall())
    routed = con.execute(
        f"SELECT route, prompt_id, group_id, min(step) FROM ({DIRECT_SAMPLES}) WHERE run_id = ? GROUP BY ALL",
        [glob(store, "train_samples"), LATEST],
    ).fetchall()
    first_step = {(route, pid): (gid, step) for route, pid, gid, step in routed}
    per_route = Counter(row["route"] for row in probe["examples"])
    assert set(per_route) == {route for route, _ in first_step}
    for route, n in per_route.items():
        assert n == min(3, sum(1 for r, _ in first_step if r == route))
    for row in probe["examples"]:
        group_id, step = first_step[row["route"], row["prompt_id"]]
        assert (row["group_id"], row["step"]) == (group_id, step)
        assert row["problem"] == problems[row["prompt_id"]]
        assert row["group_mean_reward"] == pytest.approx(group_reward[group_id])


def test_recipe_comparison_matches_direct_duckdb(offline):
    store, _, probe = offline
    direct = direct_metrics(store)
    keys = sorted({(run_id, step) for run_id, step, _ in direct})
    assert [(r["run_id"], r["step"]) for r in probe["comparison"]] == keys
    assert {run_id for run_id, _ in keys} == {f"{recipe}-test" for recipe in RECIPES}
    for row in probe["comparison"]:
        key = row["run_id"], row["step"]
        assert row["offline_ratio"] == pytest.approx(direct[(*key, "tier/offline_ratio")])
        assert row["reward"] == pytest.approx(direct[(*key, "reward/mean")])


def test_online_step_time_split_matches_direct_duckdb(online):
    store, _, probe = online
    assert probe["run"] == ONLINE_RUN and probe["online"] is True
    direct = direct_metrics(store)
    split = probe["time_split"]
    assert [r["step"] for r in split] == [1, 2, 3]
    assert list(split[0])[:5] == ["step", "time/generate", "time/verify", "time/train", "time/weight_sync"]
    for row in split:
        for name, value in row.items():
            if name != "step":
                assert value == pytest.approx(direct.get((ONLINE_RUN, row["step"], name)) or 0.0), (row["step"], name)
        assert row["time/generate"] == ONLINE_TIMES["time/generate"](row["step"])
    assert {r["run_id"] for r in probe["comparison"]} == {*(f"{recipe}-test" for recipe in RECIPES), ONLINE_RUN}


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
