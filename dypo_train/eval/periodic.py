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

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from dypo_data.backends import SamplingConfig
from dypo_data.contracts import EVAL_RESULTS, TRACES, VERDICTS, settings_hash, stable_hash
from dypo_data.contracts.rows import eval_result_row, trace_row, trace_settings, utc_now
from dypo_data.errors import ConfigError, InputError
from dypo_data.evaluation.summary import MetricValue, ProblemSamples, default_pass_at, summarize
from dypo_data.grading import VerifierConfig, VerifierPool
from dypo_data.grading.classes import answer_classes, comparisons_needed, string_classes
from dypo_data.prompts import PromptSource, load_prompts
from dypo_data.store import ShardWriter, connect
from dypo_train.config import EvalConfig
from dypo_train.online.rollouts import grade_rows

log = logging.getLogger(__name__)

ROLE = "eval"
BACKEND = "vllm"
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
        name, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():
            name, path = "", spec
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
        sets.append(HeldOutSet(name, path, table, table["prompt_id"].to_pylist(), _messages(table), table["answer"].to_pylist()))
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
        self.sampling = SamplingConfig(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                                       seed=cfg.seed, logprobs=True)
        self.pass_at = default_pass_at(cfg.k)

    # -- set-up --------------------------------------------------------------------------------------

    def _store_prompts(self, tables: list[pa.Table]) -> None:
        """Store the problems the store lacks (looked up by id, not by reading the whole prompts table)."""
        ids = sorted({pid for t in tables for pid in t["prompt_id"].to_pylist()})
        con = connect(self.root)
        try:
            known = {r[0] for r in con.execute("SELECT prompt_id FROM prompts WHERE list_contains(?, prompt_id)", [ids]).fetchall()}
        finally:
            con.close()
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
            values, settings = self._evaluate_set(engine, held, step, writer)
            for v in values:
                out[f"eval/{held.name}/{v.metric}"] = v.value
            results += self._result_rows(held, step, values, settings)
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

    def _evaluate_set(self, engine: Any, held: HeldOutSet, step: int, writer: ShardWriter) -> tuple[list[MetricValue], dict]:
        started = time.perf_counter()
        samples = engine.generate(list(zip(held.prompt_ids, held.messages)), k=self.cfg.k, temperature=self.cfg.temperature,
                                  top_p=self.cfg.top_p, max_tokens=self.cfg.max_tokens, seed=self.cfg.seed)
        seconds = time.perf_counter() - started
        settings = trace_settings(ROLE, engine.spec, self.sampling,
                                  {"instruction": self.cfg.instruction, "system_prompt": None})
        rows = self._trace_rows(held, samples, settings, step, seconds)
        writer.write("traces", pa.Table.from_pylist(rows, schema=TRACES))  # kept even if grading fails
        verdicts = grade_rows(rows, dict(zip(held.prompt_ids, held.answers)), self.pool)
        writer.write("verdicts", pa.Table.from_pylist([verdicts[r["trace_id"]] for r in rows], schema=VERDICTS))
        k = self.cfg.k
        per_problem = [rows[i * k:(i + 1) * k] for i in range(len(held.prompt_ids))]
        graded = [[verdicts[r["trace_id"]] for r in group] for group in per_problem]
        values = summarize(self._problems(per_problem, graded), k=k, pass_at=self.pass_at, seed=self.cfg.seed)
        return values, settings

    def _trace_rows(self, held: HeldOutSet, samples: list, settings: dict, step: int, seconds: float) -> list[dict]:
        shash, sampling_json, now = settings_hash(settings), json.dumps(settings, sort_keys=True), utc_now()
        return [
            trace_row(prompt_id=pid, model=self.run_id, role=ROLE, sample_idx=i, shash=shash, policy_version=str(step),
                      completion=s.text, num_tokens=len(s.completion_token_ids), finish_reason=s.finish_reason,
                      sampling_json=sampling_json, backend=BACKEND, source=f"train-eval:{self.run_id}",
                      run_id=self.run_id, model_path=None, gen_seconds=seconds, created_at=now,
                      prompt_token_ids=s.prompt_token_ids, completion_token_ids=s.completion_token_ids,
                      completion_logprobs=s.logprobs)
            for pid, group in zip(held.prompt_ids, samples)
            for i, s in enumerate(group)
        ]

    def _problems(self, rows: list[list[dict]], verdicts: list[list[dict]]) -> list[ProblemSamples]:
        """Per problem: verdicts, answers and their verifier classes (maj@k), finish reasons, lengths."""
        # only graded samples vote (see evaluation.metrics.majority_vote)
        answers = [[v["extracted_answer"] if v["correct"] is not None else None for v in per] for per in verdicts]
        labels = answer_classes(answers, self.pool) if comparisons_needed(answers) else string_classes(answers)
        return [
            ProblemSamples(correct=[v["correct"] for v in per_v], answers=[v["extracted_answer"] for v in per_v],
                           labels=lab, finish_reasons=[r["finish_reason"] for r in per_r],
                           num_tokens=[r["num_tokens"] for r in per_r])
            for per_r, per_v, lab in zip(rows, verdicts, labels)
        ]

    def _result_rows(self, held: HeldOutSet, step: int, values: list[MetricValue], trace_settings_: dict) -> list[dict]:
        settings = {
            "samples": trace_settings_, "k": self.cfg.k, "pass_at": list(self.pass_at),
            "verifier": self.pool.config.settings(),
            "bootstrap": {"seed": self.cfg.seed, "resamples": 2000, "confidence": 0.95},
            "prompts": {"n": len(held.prompt_ids), "ids_hash": stable_hash("prompt-set", sorted(held.prompt_ids))},
        }
        shash = settings_hash(settings)
        settings_json = json.dumps({**settings, "recorded": {"during_training": True, "prompt_file": held.path}}, sort_keys=True)
        now = utc_now()
        return [
            eval_result_row(run_id=self.run_id, model=self.run_id, policy_version=str(step), benchmark=held.name,
                            metric=v.metric, value=v.value, low=v.low, high=v.high, n_problems=v.n_problems,
                            k=self.cfg.k, settings_json=settings_json, shash=shash, created_at=now)
            for v in values
        ]

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            if self.owns_engine and self.engine is not None:
                self.engine.close()
                self.engine = None


def _messages(table: pa.Table) -> list[list[dict]]:
    return [json.loads(m) if isinstance(m, str) else m for m in table["messages"].to_pylist()]
