"""Store and grade the rollouts of one online training step.

`record_rollouts` writes the step's samples as `traces` rows (role "policy", policy_version =
str(step), one group per prompt) and their grades as `verdicts` rows, built by the same row
builders as `dypo-data generate` and `dypo-data verify` (`dypo_data.contracts.rows`), so the
store's views (groups, scored_traces) and a later `dypo-data verify` treat them like any other
rollouts: the verdicts carry the verifier-settings hash `dypo-data verify` would use, so it does not
grade them again.

Ids are stable: rerunning a step (a resumed run) writes rows with the same trace and verdict ids,
which the deduplicated views count once (they keep the first-written trace and the newest verdict).

The VerifierPool is the caller's, opened once for the whole run: starting math-verify workers
takes seconds, grading one step's rollouts takes milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from dypo_data.backends import ModelSpec, SamplingConfig
from dypo_data.contracts import TRACES, VERDICTS, settings_hash
from dypo_data.contracts.rows import trace_row, trace_settings, utc_now, verdict_row, verifier_settings_hash
from dypo_data.errors import ConfigError
from dypo_data.grading import GradeItem, VerifierPool, verifier_version
from dypo_data.store import ShardWriter
from dypo_train.online.engine import RolloutSample

log = logging.getLogger(__name__)

ROLE = "policy"
BACKEND = "vllm"


def rollout_rows(
    prompt_ids: Sequence[str], samples: Sequence[Sequence[RolloutSample]], *, run_id: str, step: int,
    model: ModelSpec, sampling: SamplingConfig, gen_seconds: float | None = None,
) -> list[list[dict]]:
    """Traces rows of one step's samples, per prompt: (B, G) rows. Pure (no I/O)."""
    return sample_rows(prompt_ids, samples, role=ROLE, settings=trace_settings(ROLE, model, sampling), name=model.name,
                       version=str(step), source=f"online:{run_id}", run_id=run_id, model_path=model.path,
                       gen_seconds=gen_seconds)


def sample_rows(
    prompt_ids: Sequence[str], samples: Sequence[Sequence[RolloutSample]], *, role: str, settings: dict, name: str,
    version: str, source: str, run_id: str, model_path: str | None, gen_seconds: float | None,
) -> list[list[dict]]:
    """Traces rows of engine samples of `role` (policy rollouts, held-out eval samples): (B, G) rows,
    recorded as model `name` at policy version `version` with trace `settings` (hashed into the ids). Pure."""
    shash = settings_hash(settings)
    sampling_json = json.dumps(settings, sort_keys=True)
    now = utc_now()
    return [
        [
            trace_row(
                prompt_id=pid, model=name, role=role, sample_idx=idx, shash=shash, policy_version=version,
                completion=s.text, num_tokens=len(s.completion_token_ids), finish_reason=s.finish_reason,
                sampling_json=sampling_json, backend=BACKEND, source=source, run_id=run_id,
                model_path=model_path, gen_seconds=gen_seconds, created_at=now,
                prompt_token_ids=s.prompt_token_ids, completion_token_ids=s.completion_token_ids,
                completion_logprobs=s.logprobs,
            )
            for idx, s in enumerate(group)
        ]
        for pid, group in zip(prompt_ids, samples)
    ]


def grade_rows(traces: list[dict], golds: dict[str, str], pool: VerifierPool) -> dict[str, dict]:
    """Grade traces rows with `pool`; returns their verdicts rows by trace id."""
    settings = pool.config.settings()
    vhash = verifier_settings_hash(settings)
    settings_json = json.dumps(settings, sort_keys=True)
    version = verifier_version()
    items = [GradeItem(row["trace_id"], golds[row["prompt_id"]], row["completion"]) for row in traces]
    gold_of = {item.key: item.gold for item in items}
    return {
        grade.key: verdict_row(grade, gold_of[grade.key], vhash=vhash, settings_json=settings_json, version=version)
        for grade in pool.grade(items)
    }


def record_rollouts(
    store_root: str | os.PathLike, *, run_id: str, step: int, model: ModelSpec, sampling: SamplingConfig,
    prompt_ids: Sequence[str], golds: Sequence[str], samples: Sequence[Sequence[RolloutSample]],
    pool: VerifierPool, gen_seconds: float | None = None,
) -> list[list[float | None]]:
    """Write one step's rollouts and their verdicts to the store; return the rewards, (B, G).

    `samples[b]` are the k samples of prompt `prompt_ids[b]` (gold answer `golds[b]`), as
    `RolloutEngine.generate` returned them with `sampling` (`rollout_sampling(...)`); `model` is
    the spec traces record (`model.name` is the policy's name; the engine's `spec` fits).
    A reward is None when its verdict could not grade the sample (timeout, parse or verifier error).
    Writes one traces shard, then one verdicts shard, named after `run_id`.
    """
    if not len(prompt_ids) == len(golds) == len(samples):
        raise ConfigError(
            f"prompt_ids ({len(prompt_ids)}), golds ({len(golds)}) and samples ({len(samples)}) differ in length",
            "pass one gold answer and one group of samples per prompt id, in the same order",
        )
    if len(set(prompt_ids)) != len(prompt_ids):
        raise ConfigError("a prompt id appears twice in one step", "sample each prompt once per step, with k samples")
    rows = rollout_rows(
        prompt_ids, samples, run_id=run_id, step=step, model=model, sampling=sampling, gen_seconds=gen_seconds
    )
    return record_rows(store_root, rows, dict(zip(prompt_ids, golds)), pool=pool, run_id=run_id, step=step)


def record_rows(store_root: str | os.PathLike, rows: list[list[dict]], golds: dict[str, str], *, pool: VerifierPool,
                run_id: str, step: int) -> list[list[float | None]]:
    """Write `rollout_rows` output (B, G) and its verdicts to the store; return the rewards, (B, G).

    `golds` maps each prompt id to its gold answer. Writes one traces shard, then one verdicts shard.
    """
    flat = [row for group in rows for row in group]
    writer = ShardWriter(Path(store_root).expanduser(), run_id)
    writer.write("traces", pa.Table.from_pylist(flat, schema=TRACES))  # kept even if grading fails
    started = time.perf_counter()
    verdicts = grade_rows(flat, golds, pool)
    writer.write("verdicts", pa.Table.from_pylist([verdicts[row["trace_id"]] for row in flat], schema=VERDICTS))
    statuses = Counter(v["status"] for v in verdicts.values())
    seconds = time.perf_counter() - started
    log.info("step %d: %d rollouts graded in %.2f s (%s)", step, len(flat), seconds, dict(statuses))
    return [[verdicts[row["trace_id"]]["reward"] for row in group] for group in rows]
