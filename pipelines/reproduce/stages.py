"""The stages before the compared runs: problems, teachers, teacher traces, the policy's warm start.

Each stage is skipped when its marker exists, so a killed experiment rerun continues where it stopped.
Everything goes through the toolkit's own commands (`dypo-data synth/import/models/generate/verify`,
`dypo-train run`); the pipeline only chooses sizes and names.
"""

from __future__ import annotations

import json
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from commands import done, mark_done, run, store_rows, tool
from settings import TEACHER_COMPACT, TEACHER_NOISY, TEACHER_WORKED, TinyArch, Variant

NO_INSTRUCTION = ""  # the tiny models see the bare problem: the same text in training, generation and evaluation


@dataclass(frozen=True)
class Layout:
    """Where an experiment keeps its files (all under one work directory)."""

    root: Path
    results_dir: Path | None = None  # per-run result files (default: root/results)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def markers(self) -> Path:
        return self.root / "done"

    @property
    def teacher_store(self) -> Path:
        return self.root / "teacher-training.store"

    @property
    def base_store(self) -> Path:
        return self.root / "base.store"  # training prompts + verified teacher traces: each run starts from a copy

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def results(self) -> Path:
        return self.results_dir or self.root / "results"

    def split(self, name: str) -> Path:
        return self.data / f"{name}.jsonl"

    def model(self, name: str) -> Path:
        return self.models / name

    @property
    def eval_sets(self) -> list[str]:
        return [f"{name}={self.split(name)}" for name in ("val", "test", "ood")]


def _write_rows(path: Path, rows: list[dict], *, keep_solution: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            out = dict(row) if keep_solution else {k: v for k, v in row.items() if k != "solution"}
            fh.write(json.dumps(out, ensure_ascii=False) + "\n")


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def problems(v: Variant, lay: Layout) -> None:
    """One list of distinct problems split by position into teacher, warm-start, train, val and test
    sets; the out-of-distribution set comes from other kinds or levels (`ood_kinds`, `ood_level`). Only the
    teacher and warm-start sets keep their worked solutions; no split shares a problem text with another
    (with `operation` at level 1 the same sum can recur in another phrasing: 243 sums, 3 phrasings)."""
    marker = lay.markers / "problems.json"
    if done(marker):
        return
    sizes = {"teacher": v.n_teacher, "warm": v.n_warm, "train": v.n_train, "val": v.n_val, "test": v.n_test}
    total = sum(sizes.values())
    log = lay.logs / "problems.log"
    kinds = [a for k in v.kinds for a in ("--kind", k)]
    for style in ("worked", "compact"):
        run([tool("dypo-data"), "synth", "--out", str(lay.data / f"all-{style}.jsonl"), "-n", str(total),
             "--difficulty", str(v.level), "--seed", "0", "--style", style, *kinds], log)
    ood_kinds = [a for k in v.ood_kinds for a in ("--kind", k)]
    run([tool("dypo-data"), "synth", "--out", str(lay.split("ood")), "-n", str(v.n_ood),
         "--difficulty", str(v.ood_level), "--seed", "1", *ood_kinds], log)
    worked, compact = _read_rows(lay.data / "all-worked.jsonl"), _read_rows(lay.data / "all-compact.jsonl")
    start = 0
    for name, size in sizes.items():
        rows = worked[start:start + size]
        _write_rows(lay.split(name), rows, keep_solution=name in ("teacher", "warm"))
        if name == "teacher":
            _write_rows(lay.split("teacher-compact"), compact[start:start + size], keep_solution=True)
        start += size
    _write_rows(lay.split("ood"), _read_rows(lay.split("ood")), keep_solution=False)
    mark_done(marker, {"sizes": {**sizes, "ood": v.n_ood}})


def _init_model(lay: Layout, name: str, seed: int, arch: TinyArch, log: Path) -> Path:
    out = lay.model(name)
    run([tool("dypo-data"), "models", f"tiny:{seed}", *arch.cli(), "--out", str(out)], log)
    return out


def _final_model(run_dir: Path) -> Path:
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    return run_dir / "checkpoints" / latest / "model"


def _sft(store: Path, init: Path, name: str, *, teachers: list[str], steps: int, lr: float, batch: int, seed: int,
         max_tokens: int, lay: Layout, log: Path, cores: tuple[int, ...] | None = None) -> Path:
    """An SFT run on the store's verified traces of `teachers`; returns its final model directory."""
    run_dir = lay.runs / name
    if (run_dir / "checkpoints" / "latest").is_file():
        return _final_model(run_dir)
    run([tool("dypo-train"), "run", "--recipe", "sft", "--store", str(store), "--policy", str(init),
         "--output-dir", str(lay.runs), "--name", name, "--max-steps", str(steps), "--quiet",
         "--set", f"data.teachers=[{','.join(teachers)}]", "--set", f"optim.lr={lr}",
         "--set", "optim.warmup_steps=10", "--set", f"run.prompts_per_step={batch}",
         "--set", f"run.micro_batch_size={batch}", "--set", f"run.seed={seed}", "--set", f"data.seed={seed}",
         "--set", f"data.max_completion_tokens={max_tokens}", "--set", "model.mixed_precision=no",
         "--set", "run.report_to=[]"], log, cores=cores)
    return _final_model(run_dir)


def teachers(v: Variant, lay: Layout) -> dict[str, Path]:
    """Three teachers trained by the `sft` recipe on the teacher set's solutions: the worked style, the
    compact style, and a noisy one (the compact style trained far less, so its traces are often wrong)."""
    marker = lay.markers / "teachers.json"
    if done(marker):
        return {k: Path(p) for k, p in json.loads(marker.read_text())["models"].items()}
    log = lay.logs / "teachers.log"
    store = str(lay.teacher_store)
    for style, file in (("worked", lay.split("teacher")), ("compact", lay.split("teacher-compact"))):
        run([tool("dypo-data"), "import", str(file), "--store", store, "--instruction", NO_INSTRUCTION,
             "--solution-teacher", f"solutions-{style}"], log)
    run([tool("dypo-data"), "verify", "--store", store, "--quiet"], log)
    plan = ((TEACHER_WORKED, "solutions-worked", v.teacher_steps, 11),
            (TEACHER_COMPACT, "solutions-compact", v.teacher_steps, 12),
            (TEACHER_NOISY, "solutions-compact", v.noisy_steps, 13))
    inits = {name: _init_model(lay, f"{name}-init", seed, v.teacher_arch, log) for name, _, _, seed in plan}
    cores: queue.Queue = queue.Queue()  # a free core per job: teachers side by side, each on its own core
    for c in range(min(2, os.cpu_count() or 1)):
        cores.put((c,) if (os.cpu_count() or 1) >= 2 else None)

    def train(i: int) -> tuple[str, Path]:
        name, solutions, steps, seed = plan[i]
        mine = cores.get()
        try:
            return name, _sft(lay.teacher_store, inits[name], f"teacher-{name}", teachers=[solutions], steps=steps,
                              lr=v.teacher_lr, batch=v.teacher_batch, seed=seed, max_tokens=v.max_tokens, lay=lay,
                              log=lay.logs / f"teacher-{name}.log", cores=mine)
        finally:
            cores.put(mine)

    with ThreadPoolExecutor(max_workers=cores.qsize()) as pool:
        models = dict(pool.map(train, range(len(plan))))
    mark_done(marker, {"models": {k: str(p) for k, p in models.items()}})
    return models


def teacher_traces(v: Variant, lay: Layout, models: dict[str, Path]) -> dict:
    """The base store: the training prompts (no solutions) and m traces per prompt from each teacher,
    generated with vLLM and verified; only verified-correct traces are ever SFT targets."""
    marker = lay.markers / "teacher-traces.json"
    if done(marker):
        return json.loads(marker.read_text())
    log = lay.logs / "teacher-traces.log"
    store = str(lay.base_store)
    run([tool("dypo-data"), "import", str(lay.split("train")), "--store", store, "--no-traces",
         "--instruction", NO_INSTRUCTION], log)
    teacher_args = [a for name, path in sorted(models.items()) for a in ("--teacher", f"{name}={path}")]
    run([tool("dypo-data"), "generate", "--store", store, *teacher_args, "-m", str(v.m),
         "--temperature", str(v.teacher_temperature), "--max-tokens", str(v.max_tokens), "--kv-cache-gib", "0.5",
         "--dtype", "float32", "--quiet"], log)
    run([tool("dypo-data"), "verify", "--store", store, "--quiet"], log)
    rows = store_rows(lay.base_store, "SELECT model, count(*) AS traces, avg(CAST(correct AS DOUBLE)) AS accuracy, "
                                    "count(DISTINCT prompt_id) FILTER (WHERE correct) AS prompts_covered "
                                    "FROM scored_traces WHERE role = 'teacher' GROUP BY model ORDER BY model")
    pool = store_rows(lay.base_store, "SELECT count(DISTINCT prompt_id) AS prompts FROM teacher_pool")
    info = {"teachers": rows, "pool_prompts": pool[0]["prompts"] if pool else 0, "train_prompts": v.n_train}
    mark_done(marker, info)
    return info


def warm_start(v: Variant, lay: Layout) -> Path:
    """The policy: a smaller tiny model with a short SFT on the warm-start set's worked solutions (one
    seed for every compared run), so that its first groups are a mix of easy, mid and hard."""
    marker = lay.markers / "warm-start.json"
    if done(marker):
        return Path(json.loads(marker.read_text())["model"])
    log = lay.logs / "warm-start.log"
    store = lay.root / "warm-start.store"
    run([tool("dypo-data"), "import", str(lay.split("warm")), "--store", str(store), "--instruction", NO_INSTRUCTION,
         "--solution-teacher", "solutions-worked"], log)
    run([tool("dypo-data"), "verify", "--store", str(store), "--quiet"], log)
    init = _init_model(lay, "policy-init", 21, v.policy_arch, log)
    model = _sft(store, init, "policy-warm-start", teachers=["solutions-worked"], steps=v.warm_steps, lr=v.warm_lr,
                 batch=v.warm_batch, seed=21, max_tokens=v.max_tokens, lay=lay, log=log)
    mark_done(marker, {"model": str(model)})
    return model
