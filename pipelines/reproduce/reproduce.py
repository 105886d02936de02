"""Reproduce DYPO's claims at CPU scale, fairly: teachers -> teacher traces -> warm start -> every method
(learning-rate search, then seeds) -> evaluation -> REPORT.md with figures.

    python pipelines/reproduce/reproduce.py                    # the full experiment (report in experiments/cpu-repro)
    python pipelines/reproduce/reproduce.py --variant quick    # one seed, one learning rate, fewer steps
    python pipelines/reproduce/reproduce.py --variant smoke --work /tmp/w --report /tmp/r   # every stage, minimal sizes

Everything runs through the toolkit's commands on tiny models built by the project, so it needs no
download. A rerun skips finished stages and runs (a killed run resumes from its last checkpoint); the
full variant keeps its per-run results beside the report, so finished runs survive a new machine.
Runs go two at a time by default, each bound to its own core (`--jobs`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from commands import CommandFailed  # noqa: E402
from report import write_report  # noqa: E402
from runs import RunSpec, Scheduler, best_lr  # noqa: E402
from settings import VARIANTS, Variant  # noqa: E402
from stages import Layout, problems, teacher_traces, teachers, warm_start  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def cpu_name() -> str:
    """The CPU as the toolkit's engine planner sees it (model name, ISA level, native bf16, cores)."""
    from dypo_data.backends.cpu import detect_cpu

    return detect_cpu().describe()


def load_results(lay: Layout) -> list[dict]:
    if not lay.results.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(lay.results.glob("*.json"))]


def choose_rates(results: list[dict], v: Variant) -> dict[str, float]:
    best = {}
    for method in v.methods:
        search = [r for r in results if r["method"] == method and r["seed"] == 0]
        if search:
            best[method] = best_lr(search, metric=f"avg@{v.eval_k}", tie_metric="avg@1")
    return best


def experiment(v: Variant, lay: Layout, report_dir: Path, jobs: int, report_only: bool) -> Path:
    start = time.perf_counter()
    context: dict = {"machine": cpu_name()}
    if not report_only:
        step = lambda text: print(f"== {text}", flush=True)  # noqa: E731
        step(f"{v.name} variant in {lay.root}; report -> {report_dir}; {jobs} run(s) at a time")
        step("1/6 problems (dypo-data synth)")
        problems(v, lay)
        step("2/6 teachers: SFT on worked and compact solutions, and a noisy one (dypo-train run --recipe sft)")
        models = teachers(v, lay)
        step("3/6 teacher traces: generate with vLLM, verify")
        context["teachers"] = teacher_traces(v, lay, models)
        step("4/6 policy warm start (SFT)")
        policy = warm_start(v, lay)
        scheduler = Scheduler(v, lay, policy, jobs=jobs, cores=os.cpu_count() or 1)
        search = [RunSpec(m, lr, 0) for lr in v.lrs for m in v.methods]
        step(f"5/6 runs: learning-rate search, {len(search)} runs ({len(v.methods)} methods x {len(v.lrs)} rates, seed 0)")
        scheduler.run_all(search, "lr search")
        best = choose_rates(load_results(lay), v)
        seeds = [RunSpec(m, best[m], s) for s in range(1, v.seeds) for m in v.methods]
        step(f"5/6 runs: {len(seeds)} more seed runs at each method's best rate "
             f"({', '.join(f'{m} {lr:g}' for m, lr in best.items())})")
        scheduler.run_all(seeds, "seeds")
    else:
        marker = lay.markers / "teacher-traces.json"
        context["teachers"] = json.loads(marker.read_text()) if marker.is_file() else {}
    print(f"== 6/6 report ({(time.perf_counter() - start) / 60:.1f} min so far)", flush=True)
    results = load_results(lay)
    return write_report(report_dir, results, choose_rates(results, v), v, context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="full", help="Size of the experiment.")
    parser.add_argument("--work", type=Path, default=None,
                        help="Working directory: stores, models, runs, logs (default repro_work/VARIANT).")
    parser.add_argument("--report", type=Path, default=None,
                        help="Where REPORT.md, its figures and the per-run results go "
                             "(default experiments/cpu-repro for full, the working directory otherwise).")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="Runs at a time, each bound to its own cores (default: 2 on 2+ cores).")
    parser.add_argument("--report-only", action="store_true", help="Redraw the report from the results so far.")
    args = parser.parse_args(argv)
    v = VARIANTS[args.variant]
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs} must be >= 1")
    work = (args.work or REPO / "repro_work" / v.name).resolve()
    report_dir = (args.report or (REPO / "experiments" / "cpu-repro" if v.name == "full" else work / "report")).resolve()
    lay = Layout(work, results_dir=report_dir / "results")
    try:
        report = experiment(v, lay, report_dir, args.jobs, args.report_only)
    except CommandFailed as exc:
        print(f"error: {exc}\nrun the same command again to continue from what is finished", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue from what is finished", file=sys.stderr)
        return 130
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
