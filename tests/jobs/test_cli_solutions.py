"""Worked solutions through the real CLI: `synth` writes them, `import` and `generate --prompts` store them
as teacher traces, `verify` grades them with the real math-verify pool, and the teacher pool takes them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dypo_data.store import connect, read_table


def dypo(*args: str, code: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dypo_data.cli.main", *args], capture_output=True, text=True,
                            env=dict(os.environ), timeout=300)
    assert result.returncode == code, result.stderr[-3000:]
    return result


def summary(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "problems.jsonl"
    dypo("synth", "--out", str(path), "-n", "40", "--difficulty", "4", "--seed", "2")
    return path


def test_synth_import_verify_gives_one_reference_trace_per_problem(problems, tmp_path):
    rows = [json.loads(line) for line in problems.read_text().splitlines()]
    assert all(r["solution"].endswith(f"$\\boxed{{{r['answer']}}}$.") for r in rows)
    store = tmp_path / "st"
    first = summary(dypo("import", str(problems), "--store", str(store), "--json"))
    assert (first["prompts_new"], first["traces_imported"]) == (40, 40)
    again = summary(dypo("import", str(problems), "--store", str(store), "--json"))
    assert (again["prompts_new"], again["traces_imported"], again["traces_import_skipped_existing"]) == (0, 0, 40)

    verified = summary(dypo("verify", "--store", str(store), "--workers", "2", "--json"))
    assert verified["traces_to_verify"] == 40 and verified["correct"] == 40
    con = connect(store)
    assert con.execute("SELECT model, role, count(*), count(DISTINCT prompt_id) FROM teacher_pool GROUP BY ALL"
                       ).fetchall() == [("reference", "teacher", 40, 40)]
    stored = dict(con.execute("SELECT p.problem, t.completion FROM teacher_pool t JOIN prompts p USING (prompt_id)"
                              ).fetchall())
    assert stored == {r["problem"]: r["solution"] for r in rows}
    assert con.execute("SELECT count(*) FROM traces WHERE backend = 'import' AND source LIKE 'import:%'"
                       ).fetchone() == (40,)


def test_mapped_column_teacher_name_and_missing_solutions(problems, tmp_path):
    rows = [json.loads(line) for line in problems.read_text().splitlines()][:12]
    for i, r in enumerate(rows):
        solution = r.pop("solution")
        r["worked"] = None if i % 4 == 0 else ("" if i % 4 == 1 else solution)
    path = tmp_path / "mapped.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "st"
    out = summary(dypo("import", str(path), "--store", str(store), "--column", "solution=worked",
                       "--solution-teacher", "textbook", "--json"))
    assert out["prompts_new"] == 12 and out["traces_imported"] == 6
    assert out["prompts_skipped/empty_solution"] == 6  # counted; the prompts themselves are all stored
    stored = connect(store).execute("SELECT model, role, count(*) FROM traces GROUP BY ALL").fetchall()
    assert stored == [("textbook", "teacher", 6)]
    again = summary(dypo("import", str(path), "--store", str(store), "--column", "solution=worked",
                         "--solution-teacher", "textbook", "--json"))
    assert again["traces_imported"] == 0


def test_unknown_solution_column_is_one_line(problems, tmp_path):
    r = dypo("import", str(problems), "--store", str(tmp_path / "st"), "--column", "solution=nope", code=2)
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error:") and "nope" in err and "columns.solution" in err
    assert not (tmp_path / "st" / "traces").exists() or read_table(tmp_path / "st", "traces").num_rows == 0


def test_generate_imports_the_solutions_before_sampling(problems, tmp_path):
    """`generate --prompts` loads the file first; the backend here is a server that is not running, so
    the command fails after the import and nothing is sampled (no engine starts)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    store = tmp_path / "st"
    r = dypo("generate", "--store", str(store), "--prompts", str(problems), "--teacher", f"t={model}",
             "--solution-teacher", "ref", "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1",
             "--request-timeout", "5", code=3)
    assert f"127.0.0.1:{port}" in r.stderr
    traces = read_table(store, "traces", ["model", "role"])
    assert traces.num_rows == 40 and set(traces["model"].to_pylist()) == {"ref"}
    assert set(traces["role"].to_pylist()) == {"teacher"}
