"""The reproduction pipeline end to end at minimal sizes: every stage through the real commands (tiny
models trained by the sft recipe, vLLM-CPU generation, math-verify, online runs of every method), a
report with every row and figure, and a rerun that redoes nothing. It asserts that the pipeline works,
not which method wins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "pipelines" / "reproduce" / "reproduce.py"
METHODS = ("dypo", "sft", "grpo", "sft-then-grpo", "static-mix", "luffy", "dypo-no-gal", "dypo-one-teacher",
           "dypo-no-grading")


def _run(work: Path, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--variant", "smoke", "--work", str(work), "--report", str(report)],
                          capture_output=True, text=True, timeout=1200)


def test_smoke_variant_runs_every_stage_and_reports_every_method(tmp_path):
    work, report = tmp_path / "work", tmp_path / "report"
    first = _run(work, report)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    text = (report / "REPORT.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in text, method
        assert f"| {method} | n/a | not run" not in text, method
    for figure in ("dynamics.png", "lr_robustness.png", "accuracy.png"):
        assert (report / figure).stat().st_size > 1000, figure
        assert f"]({figure})" in text
    results = sorted((report / "results").glob("*.json"))
    assert len(results) == len(METHODS)
    for path in results:
        r = json.loads(path.read_text())
        assert r["rollouts"] > 0, path.name  # every method sampled online
        benchmarks = {(e["benchmark"], e["metric"]) for e in r["eval"]}
        for bench in ("val", "test", "ood"):
            assert (bench, "avg@2") in benchmarks and (bench, "avg@1") in benchmarks, (path.name, bench)
        assert {d["name"] for d in r["dynamics"]} >= {"tier/offline_ratio", "reward/mean", "grad/norm"}
    teachers = json.loads((work / "done" / "teacher-traces.json").read_text())
    assert {t["model"] for t in teachers["teachers"]} == {"t1-worked", "t2-compact", "t3-noisy"}
    assert "## Conclusion" in text

    before = {p.name: p.stat().st_mtime_ns for p in results}
    second = _run(work, report)  # everything is finished: nothing is trained or generated again
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in sorted((report / "results").glob("*.json"))} == before
    assert f"{len(METHODS)} of {len(METHODS)} runs finished earlier; 0 to run" in second.stdout, second.stdout
