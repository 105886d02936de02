"""The compared runs: a learning-rate search per method, then seeds at each method's best rate.

Every run is an online `dypo-train run` from the same warm-started policy on the same training
prompts, with the same k, max tokens, prompts per step and number of optimizer steps; it evaluates on
the validation, in-distribution and out-of-distribution sets every `eval_every` steps and after the
last, sampled (T=0.6, avg@k) and greedily (T=0, avg@1), through its own rollout engine. Each run trains against its own copy of the
base store, so runs side by side never read each other's rollouts. Its numbers are extracted into
`results/NAME.json` once it is complete; a rerun skips runs with a result and resumes a killed one
from its last checkpoint.
"""

from __future__ import annotations

import json
import math
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from commands import CommandFailed, run, store_rows, tool
from settings import ALL_METHODS, TEACHER_COMPACT, TEACHER_NOISY, TEACHER_WORKED, Method, Variant
from stages import NO_INSTRUCTION, Layout

METHOD_BY_NAME = {m.name: m for m in ALL_METHODS}
DYNAMICS_METRICS = ("tier/offline_ratio", "tier/easy", "tier/mid", "tier/hard", "reward/mean", "policy/entropy",
                    "grad/norm", "loss/total", "perf/tokens", "route/sft", "route/rl", "route/skipped")


@dataclass(frozen=True)
class RunSpec:
    method: str
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-lr{self.lr:g}-s{self.seed}"


def train_args(spec: RunSpec, v: Variant, lay: Layout, policy: Path, store: Path) -> list[str]:
    """The dypo-train command line of one compared run."""
    method: Method = METHOD_BY_NAME[spec.method]
    sets = {
        "rollout.k": v.k, "rollout.max_tokens": v.max_tokens, "rollout.temperature": 1.0, "rollout.kv_cache_gib": 0.25,
        "run.prompts_per_step": v.prompts_per_step, "run.micro_batch_size": v.prompts_per_step * v.k,
        "optim.lr": spec.lr, "run.seed": spec.seed, "data.seed": spec.seed,
        "data.teachers": f"[{TEACHER_WORKED},{TEACHER_COMPACT},{TEACHER_NOISY}]",
        "data.max_completion_tokens": v.max_tokens,
        "eval.every": v.eval_every, "eval.prompts": f"[{','.join(lay.eval_sets)}]", "eval.k": v.eval_k,
        "eval.max_tokens": v.max_tokens, "eval.instruction": NO_INSTRUCTION, "eval.seed": 0, "eval.greedy": "true",
        "model.mixed_precision": "no", "run.report_to": "[]",
        "run.checkpoint_every": v.eval_every, "run.keep_checkpoints": 1,
    }
    if method.sft_share:
        sets["run.sft_steps"] = max(1, round(v.steps * method.sft_share))
    args = [tool("dypo-train"), "run", "--recipe", method.recipe, "--mode", "online", "--store", str(store),
            "--policy", str(policy), "--output-dir", str(lay.runs), "--name", spec.name,
            "--max-steps", str(v.steps), "--quiet"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    for extra in method.sets:
        args += ["--set", extra]
    return args


def _complete(run_dir: Path, steps: int) -> bool:
    latest = run_dir / "checkpoints" / "latest"
    return latest.is_file() and latest.read_text().strip() == f"step-{steps:06d}"


def run_one(spec: RunSpec, v: Variant, lay: Layout, policy: Path, cores: tuple[int, ...] | None) -> dict:
    """Train (evaluating as it goes) and extract one run's numbers (skipped when its result exists)."""
    result_file = lay.results / f"{spec.name}.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    log = lay.logs / "runs" / f"{spec.name}.log"
    run_dir = lay.runs / spec.name
    store = lay.root / "run-stores" / spec.name
    seconds = 0.0
    if not _complete(run_dir, v.steps):
        if (run_dir / "checkpoints" / "latest").is_file():
            args = [tool("dypo-train"), "run", "--resume", str(run_dir), "--quiet"]
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
            shutil.copytree(lay.base_store, store)
            args = train_args(spec, v, lay, policy, store)
        seconds += run(args, log, cores=cores)
    result = extract(spec, store)
    result["wall_seconds"] = seconds
    lay.results.mkdir(parents=True, exist_ok=True)
    tmp = result_file.with_name(f".tmp-{result_file.name}")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    tmp.replace(result_file)
    return result


def extract(spec: RunSpec, store: Path) -> dict:
    """One run's evaluation, per-step dynamics and compute, read from its store (named queries, no user values)."""
    evals = store_rows(store, "SELECT policy_version, benchmark, metric, value, low, high, k FROM eval_results "
                              "WHERE model = ? AND (metric LIKE 'avg@%' OR metric LIKE 'pass@%') "
                              "ORDER BY benchmark, metric, TRY_CAST(policy_version AS INT)", [spec.name])
    dynamics = store_rows(store, "SELECT step, name, value FROM train_metrics WHERE run_id = ? AND list_contains(?, name) "
                                 "ORDER BY step, name", [spec.name, list(DYNAMICS_METRICS)])
    compute = store_rows(store, "SELECT count(*) AS rollouts, CAST(coalesce(sum(num_tokens), 0) AS BIGINT) AS rollout_tokens "
                                "FROM traces WHERE role = 'policy'")
    trained = sum(r["value"] for r in dynamics if r["name"] == "perf/tokens")
    return {"method": spec.method, "lr": spec.lr, "seed": spec.seed, "name": spec.name, "eval": evals,
            "dynamics": dynamics, "rollouts": compute[0]["rollouts"], "rollout_tokens": compute[0]["rollout_tokens"],
            "tokens_trained": trained}


def final_metric(result: dict, benchmark: str, metric: str) -> float:
    """The value of `metric` on `benchmark` at the run's last evaluated step (nan when absent)."""
    rows = [r for r in result["eval"] if r["benchmark"] == benchmark and r["metric"] == metric]
    if not rows:
        return math.nan
    return max(rows, key=lambda r: int(r["policy_version"]))["value"]


def best_lr(results: list[dict], *, metric: str, tie_metric: str) -> float:
    """The learning rate whose run scores highest on the validation set at its last step; ties go to
    `tie_metric`, then to the smaller rate (the safer choice). Never looks at the test sets.

    results: the learning-rate search runs of one method (one seed)."""
    def key(r: dict) -> tuple[float, float, float]:
        score = final_metric(r, "val", metric)
        tie = final_metric(r, "val", tie_metric)
        return (-math.inf if math.isnan(score) else score, -math.inf if math.isnan(tie) else tie, -r["lr"])

    return max(results, key=key)["lr"]


class Scheduler:
    """Runs specs `jobs` at a time, each job on its own cores, printing one line per finished run."""

    def __init__(self, v: Variant, lay: Layout, policy: Path, *, jobs: int, cores: int):
        self.v, self.lay, self.policy = v, lay, policy
        per = max(1, cores // jobs)
        self.slots: queue.Queue = queue.Queue()
        for j in range(jobs):
            self.slots.put(tuple(range(j * per, (j + 1) * per)) if jobs > 1 else None)
        self.jobs = jobs
        self.lock = threading.Lock()

    def run_all(self, specs: list[RunSpec], label: str) -> list[dict]:
        results: dict[str, dict] = {}
        for spec in specs:  # finished on an earlier invocation: not run, not counted in the rate
            result_file = self.lay.results / f"{spec.name}.json"
            if result_file.is_file():
                results[spec.name] = json.loads(result_file.read_text())
        todo = [s for s in specs if s.name not in results]
        if results:
            print(f"  [{label}] {len(results)} of {len(specs)} runs finished earlier; {len(todo)} to run", flush=True)
        errors: list[str] = []
        start, finished, total = time.perf_counter(), 0, len(todo)

        def worker() -> None:
            nonlocal finished
            while True:
                with self.lock:
                    if not todo or errors:
                        return
                    spec = todo.pop(0)
                cores = self.slots.get()
                try:
                    results[spec.name] = run_one(spec, self.v, self.lay, self.policy, cores)
                except CommandFailed as exc:
                    with self.lock:
                        errors.append(f"{spec.name}: {exc}")
                finally:
                    self.slots.put(cores)
                with self.lock:
                    finished += 1
                    elapsed = time.perf_counter() - start
                    eta = elapsed / finished * (total - finished)
                    print(f"  [{label} {finished}/{total}] {spec.name} done; {elapsed / 60:.1f} min so far, "
                          f"~{eta / 60:.1f} min left", flush=True)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise CommandFailed("; ".join(errors))
        return [results[s.name] for s in specs]
