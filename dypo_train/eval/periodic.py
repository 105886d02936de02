"""Evaluation during training: every `eval.every` steps, the current weights answer a held-out set.

    sets = load_held_out(cfg.eval)      # before the engine starts: its context must hold the longest prompt
    evaluator = PeriodicEval(cfg.eval, sets, store=cfg.data.store, run_id=run_dir.name, engine=online.engine)
    if evaluator.due(step, total):
        metrics.update(evaluator.evaluate(step, model))      # eval/<benchmark>/avg@4, pass@1, maj@4, ...
    evaluator.close()

What runs where:
- Generation goes through an in-process vLLM engine (`online.engine.RolloutEngine`) holding the
  current weights. Online runs use the rollout engine itself: its weights were pushed after the
  update, so nothing is loaded again. Offline runs start an engine of their own at the first
  evaluation (seconds on the embedded model; the model's size again in memory, plus `rollout.kv_cache_gib`)
  and push the trained weights into it before each evaluation.
- Each prompt set is loaded once, before the first step, and stored with split `test` (online
  training draws only `data.prompt_split`, offline training only policy groups: a held-out set
  never becomes training data). Its problems get `eval.instruction` appended.
- The samples are stored as traces of role `eval` under the run's id (model = the run's name,
  policy version = the step), graded by the verifier into `verdicts`, and measured exactly as
  `dypo-data eval` measures them (dypo_data.evaluation.summary): the numbers go into the step's
  train metrics as `eval/<benchmark>/<metric>` and into `eval_results` rows, so
  `dypo-data eval-report --store ST` plots the run's curve beside evaluations of its checkpoints.
- Every evaluation samples with the same seed, so two steps differ only by their weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from dypo_data.backends import SamplingConfig
from dypo_data.contracts import EVAL_RESULTS, TRACES, VERDICTS, split_named_path
from dypo_data.contracts.rows import eval_result_rows, eval_settings, trace_settings
from dypo_data.errors import ConfigError, InputError
from dypo_data.evaluation.summary import MetricValue, default_pass_at, problem_samples, summarize, voting_answers
from dypo_data.grading import VerifierConfig, VerifierPool
from dypo_data.grading.classes import answer_classes
from dypo_data.prompts import PromptSource, load_prompts
from dypo_data.store import ShardWriter, reading
from dypo_data.store.queries import stored_prompt_ids
from dypo_train.config import EvalConfig
from dypo_train.online.rollouts import grade_rows, sample_rows

log = logging.getLogger(__name__)

ROLE = "eval"
SPLIT = "test"


@dataclass(frozen=True)
class HeldOutSet:
    """One prompt set: its name and problems in file order."""

    name: str
    path: str
    prompts: pa.Table  # PROMPTS rows, stored (split test) when the evaluator starts
    prompt_ids: list[str]
    messages: list[list[dict]]
    answers: list[str]


def parse_sets(specs: list[str]) -> list[tuple[str, str]]:
    """`[NAME=]FILE` -> (name, path); the name defaults to the file's stem."""
    out = []
    for spec in specs:
        name, path = split_named_path(spec)
        p = Path(path).expanduser()
        if not p.exists():
            raise InputError(f"eval.prompts: {path} does not exist",
                             "name a JSONL/Parquet file of problems and answers, e.g. ../shared/benchmarks/math500.jsonl")
        out.append((name or p.stem, str(p)))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"eval.prompts names repeat: {names}", "name them apart as NAME=FILE")
    return out


def load_held_out(cfg: EvalConfig) -> list[HeldOutSet]:
    """Every prompt set of `cfg.prompts`, with `cfg.instruction` appended and split `test` (nothing stored yet)."""
    sets = []
    for name, path in parse_sets(cfg.prompts):
        loaded = load_prompts(PromptSource(path=path, source=name, split=SPLIT, instruction=cfg.instruction,
                                           limit=cfg.limit or None, import_traces=False, on_missing_answer="error"))
        table = loaded.prompts
        if table.num_rows == 0:
            raise InputError(f"eval.prompts: {path} has no problems", "check the file, or drop it from eval.prompts")
        sets.append(HeldOutSet(name, path, table, table["prompt_id"].to_pylist(), table["messages"].to_pylist(),
                                table["answer"].to_pylist()))
    return sets


def longest_prompt(sets: list[HeldOutSet], tokenizer: Any) -> int:
    """Tokens of the longest held-out prompt in the policy's chat template: the engine must hold it plus eval.max_tokens."""
    from dypo_train.stream.tokens import render_prompt

    return max(len(render_prompt(tokenizer, m)) for held in sets for m in held.messages)


class PeriodicEval:
    """Evaluates the weights being trained on held-out sets; see the module docstring."""

    def __init__(self, cfg: EvalConfig, sets: list[HeldOutSet], *, store: str, run_id: str, engine: Any | None = None,
                 engine_factory: Any | None = None) -> None:
        """`sets`: from `load_held_out(cfg)`. `engine`: a running RolloutEngine that already holds the current
        weights (online). Otherwise `engine_factory()` starts one at the first evaluation and each
        evaluation loads the weights into it."""
        if engine is None and engine_factory is None:
            raise ConfigError("periodic evaluation needs an engine or a way to start one", "pass engine= or engine_factory=")
        self.cfg, self.root, self.run_id, self.sets = cfg, Path(store).expanduser(), run_id, sets
        self.engine, self.engine_factory, self.owns_engine = engine, engine_factory, engine is None
        self._store_prompts([held.prompts for held in sets])
        self.pool = VerifierPool(VerifierConfig(workers=1))
        sampled = SamplingConfig(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                                 seed=cfg.seed, logprobs=True)
        greedy = SamplingConfig(n=1, temperature=0.0, top_p=1.0, max_tokens=cfg.max_tokens, seed=cfg.seed, logprobs=True)
        self.decodings = [("", sampled)] + ([("greedy/", greedy)] if cfg.greedy else [])  # (metric prefix, sampling)

    # -- set-up --------------------------------------------------------------------------------------

    def _store_prompts(self, tables: list[pa.Table]) -> None:
        """Store the problems the store lacks."""
        with reading(self.root) as con:
            known = stored_prompt_ids(con, sorted({pid for t in tables for pid in t["prompt_id"].to_pylist()}))
        writer = ShardWriter(self.root, self.run_id)
        for table in tables:
            new = [i for i, pid in enumerate(table["prompt_id"].to_pylist()) if pid not in known]
            if new:
                writer.write("prompts", table.take(new))
                known.update(table["prompt_id"].to_pylist())

    # -- one evaluation ------------------------------------------------------------------------------

    def due(self, step: int, total: int) -> bool:
        """Whether to evaluate after `step` (1-based) of `total`: every `eval.every` steps and after the last."""
        return self.cfg.every > 0 and (step % self.cfg.every == 0 or step == total)

    def evaluate(self, step: int, model: Any) -> dict[str, float]:
        """Sample, store, grade and measure every held-out set with `model`'s weights (the trained,
        unwrapped module); returns `eval/<benchmark>/<metric>` values and `time/eval`."""
        started = time.perf_counter()
        engine = self._engine(model)
        out: dict[str, float] = {}
        results: list[dict] = []
        writer = ShardWriter(self.root, self.run_id)
        for held in self.sets:
            for prefix, sampling in self.decodings:
                values, rows = self._evaluate_set(engine, held, step, writer, sampling)
                out.update({f"eval/{held.name}/{prefix}{v.metric}": v.value for v in values})
                results += rows
        writer.write("eval_results", pa.Table.from_pylist(results, schema=EVAL_RESULTS))
        out["time/eval"] = time.perf_counter() - started
        return out

    def _engine(self, model: Any) -> Any:
        if not self.owns_engine:
            return self.engine  # online: the rollout engine already holds the weights of this step
        if self.engine is None:
            self.engine = self.engine_factory()
            log.info("evaluation engine started in %.1f s", self.engine.start_seconds)
        self.engine.load_weights(model.state_dict())
        return self.engine

    def _evaluate_set(self, engine: Any, held: HeldOutSet, step: int, writer: ShardWriter,
                      sampling: SamplingConfig) -> tuple[list[MetricValue], list[dict]]:
        """Sample (with `sampling`), store and grade one set; its metric values and eval_results rows."""
        started = time.perf_counter()
        k, pass_at = sampling.n, default_pass_at(sampling.n)
        samples = engine.generate(list(zip(held.prompt_ids, held.messages)), k=k, temperature=sampling.temperature,
                                  top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=sampling.seed)
        seconds = time.perf_counter() - started
        settings = trace_settings(ROLE, engine.spec, sampling,
                                  {"instruction": self.cfg.instruction, "system_prompt": None})
        rows = sample_rows(held.prompt_ids, samples, role=ROLE, settings=settings, name=self.run_id, version=str(step),
                           source=f"train-eval:{self.run_id}", run_id=self.run_id, model_path=None,
                           gen_seconds=seconds)  # (P, k)
        flat = [row for per in rows for row in per]
        writer.write("traces", pa.Table.from_pylist(flat, schema=TRACES))  # kept even if grading fails
        verdicts = grade_rows(flat, dict(zip(held.prompt_ids, held.answers)), self.pool)
        writer.write("verdicts", pa.Table.from_pylist([verdicts[r["trace_id"]] for r in flat], schema=VERDICTS))
        graded = [[{**verdicts[r["trace_id"]], "finish_reason": r["finish_reason"], "num_tokens": r["num_tokens"]}
                   for r in per] for per in rows]
        labels = answer_classes(voting_answers(graded), self.pool)  # maj@k's classes: verifier-equal answers
        values = summarize([problem_samples(per, lab) for per, lab in zip(graded, labels)], k=k,
                           pass_at=pass_at, seed=self.cfg.seed)
        metric_settings = eval_settings(samples=settings, k=k, pass_at=pass_at,
                                        verifier=self.pool.config.settings(),
                                        bootstrap={"seed": self.cfg.seed, "resamples": 2000, "confidence": 0.95},
                                        prompt_ids=held.prompt_ids)
        results = eval_result_rows(values, run_id=self.run_id, model=self.run_id, policy_version=str(step),
                                   benchmark=held.name, k=k, settings=metric_settings,
                                   recorded={"during_training": True, "prompt_file": held.path})
        return values, results

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            if self.owns_engine and self.engine is not None:
                self.engine.close()
                self.engine = None

