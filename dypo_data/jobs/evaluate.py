"""`dypo-data eval`: sample k answers per benchmark problem, grade them, store the metrics.

For every model (a model directory, or a training run's checkpoint at its step) and every prompt
set, in four phases that each skip what the store already holds:

1. load  the prompt sets, all before anything is written, so bad input stops the run with the
         store untouched; new prompts are stored (their source is the benchmark's name), their
         shipped solutions are not (a benchmark's solutions must never reach the teacher pool);
2. generate  k samples per problem through the generate job (role `eval`, one engine start per
         model over all benchmarks, trace ids stable, shards flushed as results arrive);
3. grade  just those samples through the verify job;
4. measure  each (model, policy version, benchmark) from the store: avg@k, pass@j, maj@k with
         bootstrap intervals, ungradable samples, truncation rate, mean length (evaluation/summary.py),
         written as one `eval_results` shard. maj@k's answer classes come from the verifier
         (grading/classes.py).

So a killed eval, run again, generates only the missing samples, grades only the ungraded ones and
recomputes the metrics; the `eval_results` view keeps the newest numbers per setting.

The prompt each model sees is the benchmark problem with `instruction` appended (unless the problem
already ends with it), rendered with the model's chat template; the instruction is recorded with
every sample and hashed into its id, so two instructions never share samples.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dypo_data.backends import ModelSpec, SamplingConfig
from dypo_data.contracts import EVAL_RESULTS, settings_hash, trace_id
from dypo_data.contracts.rows import eval_result_rows, eval_settings, verifier_settings_hash
from dypo_data.errors import ConfigError, InputError
from dypo_data.evaluation.summary import check_k, check_pass_at, default_pass_at, problem_samples, summarize, voting_answers
from dypo_data.grading import VerifierConfig, VerifierPool
from dypo_data.grading.classes import answer_classes, comparisons_needed, string_classes
from dypo_data.jobs.common import JobStats, make_progress, new_run_id
from dypo_data.jobs.generate import GenerateConfig, run_generate, traces_settings
from dypo_data.jobs.verify import VerifyConfig, run_verify
from dypo_data.prompts import DEFAULT_INSTRUCTION, FORMATS, ColumnMap, LoadedPrompts, PromptSource, load_prompts
from dypo_data.prompts.readers import open_rows
from dypo_data.store import ShardWriter, check_writable, reading
from dypo_data.store.queries import eval_samples, stored_prompt_ids

log = logging.getLogger(__name__)

ROLE = "eval"


@dataclass(frozen=True)
class Benchmark:
    name: str = field(metadata={"help": "Benchmark name: the prompts' source and the eval_results key."})
    path: str = field(metadata={"help": "Prompt file (JSONL, JSON, Parquet) or a saved Hugging Face dataset."})
    format: str = field(default="auto", metadata={"help": "Prompt format (see PromptSource.format)."})
    columns: ColumnMap = field(default_factory=ColumnMap, metadata={"help": "Column mapping (see ColumnMap)."})

    def __post_init__(self) -> None:
        if isinstance(self.columns, dict):
            object.__setattr__(self, "columns", ColumnMap.from_dict(self.columns))
        if not self.name.strip():
            raise ConfigError(f"prompt set {self.path} has a blank name", "write NAME=FILE with a non-empty NAME")


@dataclass(frozen=True)
class EvalModel:
    spec: ModelSpec = field(metadata={"help": "The model; spec.name is what the results record."})
    policy_version: str = field(default="base", metadata={"help": "'base', or the training step of a checkpoint."})


@dataclass(frozen=True)
class EvalConfig:
    store: str = field(metadata={"help": "Store directory (created if missing)."})
    models: tuple[EvalModel, ...] = field(metadata={"help": "Models (and checkpoints) to evaluate, one after another."})
    benchmarks: tuple[Benchmark, ...] = field(metadata={"help": "Prompt sets to evaluate on."})
    k: int = field(default=8, metadata={"help": "Samples per problem (avg@k, maj@k; pass@j needs j <= k)."})
    pass_at: tuple[int, ...] | None = field(
        default=None, metadata={"help": "The j of pass@j (each <= k). Default: 1, 2, 4, ... up to k, and k."}
    )
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(temperature=0.6, top_p=0.95, max_tokens=8192),
        metadata={"help": "Sampling settings (n is set to k). Default: the paper's, temperature 0.6, top_p 0.95."},
    )
    instruction: str = field(
        default=DEFAULT_INSTRUCTION,
        metadata={"help": "Appended to each problem unless it already contains it; '' for none."},
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System message of every prompt."})
    split: str = field(default="test", metadata={"help": "Split recorded with new prompts (and read from a saved DatasetDict)."})
    limit: int | None = field(default=None, metadata={"help": "Use the first N problems of each prompt set."})
    backend: str = field(default="vllm", metadata={"help": "vllm | openai | transformers."})
    backend_options: dict = field(default_factory=dict, metadata={"help": "Backend-specific options."})
    verifier: VerifierConfig = field(default_factory=VerifierConfig, metadata={"help": "Verifier settings."})
    bootstrap_seed: int = field(default=0, metadata={"help": "Seed of the bootstrap intervals (same seed, same intervals)."})
    bootstrap_resamples: int = field(default=2000, metadata={"help": "Bootstrap resamples per interval."})
    confidence: float = field(default=0.95, metadata={"help": "Confidence of the intervals."})
    flush_every: int = field(default=256, metadata={"help": "Write a trace shard every this many samples."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        check_k(self.k)
        check_pass_at(self.pass_at_list, self.k)
        if not self.models:
            raise ConfigError("no model to evaluate", "pass --model NAME=PATH or --run RUNS/NAME")
        if not self.benchmarks:
            raise ConfigError("no prompt set to evaluate on", "pass --prompts FILE (e.g. ../shared/benchmarks/math500.jsonl)")
        keys = [(m.spec.name, m.policy_version) for m in self.models]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"models repeat (name, version): {keys}", "give each model a distinct NAME=PATH")
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ConfigError(f"benchmark names repeat: {names}", "name them apart with --prompts NAME=FILE")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit={self.limit} must be >= 1", "omit --limit to use every problem")

    @property
    def pass_at_list(self) -> tuple[int, ...]:
        return default_pass_at(self.k) if self.pass_at is None else tuple(self.pass_at)

    @property
    def prompt_settings(self) -> dict[str, Any]:
        return {"instruction": self.instruction, "system_prompt": self.system_prompt}


@dataclass
class EvalOutcome:
    stats: JobStats
    results: pa.Table  # the eval_results rows this run wrote


# -- 1. prompts ------------------------------------------------------------------------------------


def _source(b: Benchmark, cfg: EvalConfig) -> PromptSource:
    return PromptSource(path=b.path, format=b.format, columns=b.columns, source=b.name, split=cfg.split,
                        system_prompt=cfg.system_prompt, instruction=cfg.instruction, limit=cfg.limit,
                        import_traces=False, on_missing_answer="error")


def _check_gold_column(b: Benchmark, cfg: EvalConfig) -> None:
    """A prompt set with no gold answer column cannot be scored: say so before format detection does."""
    rows = open_rows(b.path, cfg.split)
    wanted = [b.columns.answer] if b.columns.answer else sorted({c for f in FORMATS.values() for c in f.defaults["answer"]})
    if not any(c in rows.paths for c in wanted):
        raise InputError(f"prompt set {b.name} ({b.path}) has no gold answer column (it has: {', '.join(rows.columns)})",
                         "evaluation needs a gold answer per problem: add an `answer` column, "
                         "or map one with --column answer=COLUMN")


def load_benchmarks(cfg: EvalConfig) -> dict[str, LoadedPrompts]:
    """Every prompt set, loaded and checked before anything is written."""
    loaded = {}
    for b in cfg.benchmarks:
        _check_gold_column(b, cfg)
        data = load_prompts(_source(b, cfg))
        if data.prompts.num_rows == 0:
            raise InputError(f"prompt set {b.name} ({b.path}) has no problems", "check the file, or drop it from --prompts")
        loaded[b.name] = data
    return loaded


def _store_prompts(root: Path, loaded: dict[str, LoadedPrompts], writer: ShardWriter, stats: JobStats) -> None:
    with reading(root) as con:
        known = stored_prompt_ids(con, sorted({pid for data in loaded.values() for pid in data.prompts["prompt_id"].to_pylist()}))
    for data in loaded.values():
        table = data.prompts
        if known:
            table = table.filter(pc.invert(pc.is_in(table["prompt_id"], value_set=pa.array(sorted(known), pa.string()))))
        writer.write("prompts", table)
        known.update(table["prompt_id"].to_pylist())
        stats.add("prompts_loaded", data.prompts.num_rows)
        stats.add("prompts_new", table.num_rows)


def _requests_table(loaded: dict[str, LoadedPrompts]) -> pa.Table:
    """(prompt_id, messages) of every benchmark, each prompt once, in benchmark order."""
    tables = [data.prompts.select(["prompt_id", "messages"]) for data in loaded.values()]
    table = pa.concat_tables(tables)
    ids = table["prompt_id"].to_pylist()
    first = sorted({pid: i for i, pid in reversed(list(enumerate(ids)))}.values())
    return table.take(first)


# -- 2. generate, 3. grade ---------------------------------------------------------------------------


def _generate_config(cfg: EvalConfig, model: EvalModel) -> GenerateConfig:
    return GenerateConfig(
        store=cfg.store, role=ROLE, models=(model.spec,), sampling=replace(cfg.sampling, n=cfg.k),
        backend=cfg.backend, backend_options=cfg.backend_options, policy_version=model.policy_version,
        prompt_settings=cfg.prompt_settings, flush_every=cfg.flush_every, progress=cfg.progress,
    )


def _sample_ids(prompt_ids: list[str], model: EvalModel, k: int, shash: str) -> list[str]:
    return [trace_id(pid, model.spec.name, ROLE, i, shash, model.policy_version) for pid in prompt_ids for i in range(k)]


# -- 4. measure --------------------------------------------------------------------------------------


@dataclass
class _Cell:
    """One (model, version, benchmark): its samples per problem, then its answer classes."""

    model: EvalModel
    benchmark: str
    settings: dict[str, Any]  # what the numbers depend on (hashed)
    recorded: dict[str, Any]  # where they came from (stored beside the settings, not hashed)
    rows: dict[str, list[dict]]  # prompt id -> its samples in sample order


def _collect(con: Any, cfg: EvalConfig, model: EvalModel, trace_settings: dict, benchmark: Benchmark,
             prompt_ids: list[str], vhash: str) -> _Cell:
    table = eval_samples(con, model=model.spec.name, policy_version=model.policy_version,
                         trace_settings_hash=settings_hash(trace_settings), verifier_settings_hash=vhash, k=cfg.k,
                         prompt_ids=prompt_ids)
    rows: dict[str, list[dict]] = {pid: [] for pid in prompt_ids}
    for row in table.to_pylist():
        rows[row["prompt_id"]].append(row)
    short = [pid for pid, samples in rows.items() if len(samples) != cfg.k]
    if short:
        raise InputError(f"{model.spec.name}@{model.policy_version} on {benchmark.name}: {len(short)} problems lack some "
                         f"of their {cfg.k} samples", "rerun the same command: it generates only what is missing")
    recorded = {"model_path": model.spec.path, "backend": cfg.backend, "prompt_file": benchmark.path}
    return _Cell(model, benchmark.name, _cell_settings(cfg, trace_settings, prompt_ids), recorded, rows)


def _label_answers(cells: list[_Cell], verifier: VerifierConfig, progress: bool) -> list[list[list[int | None]]]:
    """Answer classes of every problem of every cell; one verifier pool for all, only if needed."""
    # only the samples that vote (graded, see metrics.majority_vote) found or join classes
    answers = [voting_answers(list(cell.rows.values())) for cell in cells]
    flat = [per for cell in answers for per in cell]
    if comparisons_needed(flat):
        with VerifierPool(verifier) as pool, make_progress(progress) as bar:
            task = bar.add_task("maj@k answer classes", total=None, rate="")
            started = time.monotonic()

            def advance(done: int) -> None:
                bar.update(task, completed=done, rate=f"{done / max(time.monotonic() - started, 1e-9):,.0f} cmp/s")

            labels = answer_classes(flat, pool, on_compared=advance)
    else:
        labels = string_classes(flat)
    out, at = [], 0
    for cell in answers:
        out.append(labels[at:at + len(cell)])
        at += len(cell)
    return out


def _result_rows(cell: _Cell, labels: list[list[int | None]], cfg: EvalConfig, run_id: str) -> list[dict]:
    # a sample without a verdict cannot be counted either way: it is ungradable, like a timeout
    problems = [problem_samples(samples, lab) for samples, lab in zip(cell.rows.values(), labels)]
    values = summarize(problems, k=cfg.k, pass_at=cfg.pass_at_list, seed=cfg.bootstrap_seed,
                       n_resamples=cfg.bootstrap_resamples, confidence=cfg.confidence)
    return eval_result_rows(values, run_id=run_id, model=cell.model.spec.name, policy_version=cell.model.policy_version,
                            benchmark=cell.benchmark, k=cfg.k, settings=cell.settings, recorded=cell.recorded)


def _cell_settings(cfg: EvalConfig, trace_settings: dict, prompt_ids: list[str]) -> dict[str, Any]:
    """What one cell's numbers depend on (hashed into eval_results.settings_hash)."""
    return eval_settings(
        samples=trace_settings, k=cfg.k, pass_at=cfg.pass_at_list, verifier=cfg.verifier.settings(),
        bootstrap={"seed": cfg.bootstrap_seed, "resamples": cfg.bootstrap_resamples, "confidence": cfg.confidence},
        prompt_ids=prompt_ids,
    )


# -- the job -----------------------------------------------------------------------------------------


def run_eval(cfg: EvalConfig) -> EvalOutcome:
    """Load, generate, grade and measure (see the module docstring); returns the rows written."""
    root = Path(cfg.store).expanduser()
    check_writable(root)
    stats = JobStats("eval", new_run_id("eval"))
    writer = ShardWriter(root, stats.run_id)
    loaded = load_benchmarks(cfg)
    _store_prompts(root, loaded, writer, stats)
    requests = _requests_table(loaded)
    settings_of: dict[tuple[str, str], dict] = {}
    sample_ids: list[str] = []
    for model in cfg.models:
        gen = _generate_config(cfg, model)
        gen_stats = run_generate(gen, prompts_table=requests)
        stats.add("samples_generated", gen_stats.counts.get("traces_written", 0))
        for key, seconds in gen_stats.timings.items():  # engine start and generation, per model
            stats.time(f"{key}@{model.policy_version}", seconds)
        for key in (k for k in gen_stats.counts if k.startswith("tokens_generated/")):
            stats.add(f"{key}@{model.policy_version}", gen_stats.counts[key])
        settings_of[(model.spec.name, model.policy_version)] = traces = traces_settings(gen, model.spec)
        sample_ids += _sample_ids(requests["prompt_id"].to_pylist(), model, cfg.k, settings_hash(traces))
    verify_stats = run_verify(VerifyConfig(store=cfg.store, verifier=cfg.verifier, trace_ids=tuple(sample_ids), wait=True,
                                           progress=cfg.progress))
    stats.add("samples_graded", verify_stats.counts.get("traces_to_verify", 0))
    stats.time("verify_seconds", verify_stats.timings.get("verify_seconds", 0.0))
    started = time.monotonic()
    results = _measure(root, cfg, loaded, settings_of, stats.run_id)
    stats.time("measure_seconds", time.monotonic() - started)
    writer.write("eval_results", results)
    stats.add("eval_results_written", results.num_rows)
    writer.write_manifest(stats.manifest(cfg))
    return EvalOutcome(stats, results)


def _measure(root: Path, cfg: EvalConfig, loaded: dict[str, LoadedPrompts], settings_of: dict, run_id: str) -> pa.Table:
    vhash = verifier_settings_hash(cfg.verifier.settings())
    with reading(root) as con:
        cells = []
        for model in cfg.models:
            traces = settings_of[(model.spec.name, model.policy_version)]
            for b in cfg.benchmarks:
                ids = loaded[b.name].prompts["prompt_id"].to_pylist()
                cells.append(_collect(con, cfg, model, traces, b, ids, vhash))
    labels = _label_answers(cells, cfg.verifier, cfg.progress)
    rows = [row for cell, lab in zip(cells, labels) for row in _result_rows(cell, lab, cfg, run_id)]
    return pa.Table.from_pylist(rows, schema=EVAL_RESULTS)
