"""Row builders of the traces, verdicts and eval_results tables: one place decides what a stored row holds.

`dypo-data generate` / `verify` and the trainer's online rollouts build their rows here, so the
views (groups, scored_traces, teacher_pool) cannot tell the writers apart. Stdlib only: the
arguments are plain values or objects duck-typed by the attributes they need (a backend's
`ModelSpec` / `SamplingConfig` through `.settings()`, a grading `Grade` through its fields).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, Protocol

from dypo_data.contracts.ids import group_id, settings_hash, stable_hash, trace_id, verdict_id

VERIFIER_NAME = "math-verify"


class _HasSettings(Protocol):
    def settings(self) -> dict[str, Any]: ...


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# Roles whose traces record the policy version that sampled them (and hash it into their ids).
VERSIONED_ROLES = ("policy", "eval")


def trace_settings(role: str, model: _HasSettings, sampling: _HasSettings, prompt: dict[str, Any] | None = None) -> dict:
    """Everything that shapes a sample, recorded with each trace and hashed into its id.

    `prompt`: how the prompt text was built when it is not the stored prompt's own (eval: the
    instruction and system prompt); left out when empty, so other traces keep their ids.
    """
    settings = {"role": role, "model": model.settings(), "sampling": sampling.settings()}
    if prompt:
        settings["prompt"] = prompt
    return settings


def trace_version(role: str, policy_version: str | None) -> str | None:
    """The policy version a trace of `role` records: policy rollouts and eval samples keep it."""
    return policy_version if role in VERSIONED_ROLES else None


def trace_row(
    *, prompt_id: str, model: str, role: str, sample_idx: int, shash: str, policy_version: str | None,
    completion: str, num_tokens: int | None, finish_reason: str | None, sampling_json: str, backend: str,
    source: str, run_id: str | None, model_path: str | None, gen_seconds: float | None, created_at: dt.datetime,
    prompt_token_ids: Sequence[int] | None = None, completion_token_ids: Sequence[int] | None = None,
    completion_logprobs: Sequence[float] | None = None,
) -> dict:
    """One traces row. Policy rollouts and eval samples carry a policy version; only policy rollouts
    carry a group id (prompt, model, settings, version): the k samples of one prompt under one
    setting form one group. Eval samples are measurements and never form groups."""
    version = trace_version(role, policy_version)
    return {
        "trace_id": trace_id(prompt_id, model, role, sample_idx, shash, version),
        "prompt_id": prompt_id,
        "run_id": run_id,
        "role": role,
        "model": model,
        "model_path": model_path,
        "group_id": group_id(prompt_id, model, shash, version) if role == "policy" else None,
        "sample_idx": sample_idx,
        "policy_version": version,
        "completion": completion,
        "num_tokens": num_tokens,
        "finish_reason": finish_reason,
        "sampling": sampling_json,
        "settings_hash": shash,
        "backend": backend,
        "source": source,
        "gen_seconds": gen_seconds,
        "created_at": created_at,
        "prompt_token_ids": None if prompt_token_ids is None else list(prompt_token_ids),
        "completion_token_ids": None if completion_token_ids is None else list(completion_token_ids),
        "completion_logprobs": None if completion_logprobs is None else list(completion_logprobs),
    }


def verifier_settings_hash(settings: dict[str, Any]) -> str:
    """The hash that keys verdicts: the verifier's name and its `VerifierConfig.settings()`."""
    return settings_hash({"verifier": VERIFIER_NAME, **settings})


def verdict_row(grade: Any, gold: str, *, vhash: str, settings_json: str, version: str) -> dict:
    """One verdicts row from a grading `Grade` (key = the trace id)."""
    return {
        "verdict_id": verdict_id(grade.key, vhash),
        "trace_id": grade.key,
        "reward": grade.reward,
        "correct": grade.correct,
        "extracted_answer": grade.extracted_answer,
        "gold": gold,
        "status": grade.status.value,
        "verifier": VERIFIER_NAME,
        "verifier_version": version,
        "settings": settings_json,
        "settings_hash": vhash,
        "seconds": grade.seconds,
        "created_at": utc_now(),
    }


def eval_result_row(*, run_id: str, model: str, policy_version: str, benchmark: str, metric: str, value: float,
                    low: float | None, high: float | None, n_problems: int, k: int, settings_json: str,
                    shash: str, created_at: dt.datetime) -> dict:
    """One eval_results row: one metric of one (model, policy version, benchmark) under one setting."""
    return {
        "run_id": run_id, "model": model, "policy_version": policy_version, "benchmark": benchmark,
        "metric": metric, "value": value, "low": low, "high": high, "n_problems": n_problems, "k": k,
        "settings": settings_json, "settings_hash": shash, "created_at": created_at,
    }


def eval_settings(*, samples: dict[str, Any], k: int, pass_at: Sequence[int], verifier: dict[str, Any],
                  bootstrap: dict[str, Any], prompt_ids: Sequence[str]) -> dict[str, Any]:
    """What one evaluation's numbers depend on (hashed into eval_results.settings_hash): the samples'
    trace settings, k and the pass@j list, the verifier, the bootstrap, and which problems."""
    return {
        "samples": samples, "k": k, "pass_at": list(pass_at), "verifier": verifier,
        "verifier_settings_hash": verifier_settings_hash(verifier), "bootstrap": bootstrap,
        "prompts": {"n": len(prompt_ids), "ids_hash": stable_hash("prompt-set", sorted(prompt_ids))},
    }


def eval_result_rows(values: Sequence[Any], *, run_id: str, model: str, policy_version: str, benchmark: str, k: int,
                     settings: dict[str, Any], recorded: dict[str, Any]) -> list[dict]:
    """eval_results rows of one evaluation: one per metric value (`metric`, `value`, `low`, `high`,
    `n_problems`). `settings` (see `eval_settings`) is hashed; `recorded` (where the numbers came
    from) is stored beside it in the settings JSON but not hashed."""
    shash = settings_hash(settings)
    settings_json = json.dumps({**settings, "recorded": recorded}, sort_keys=True)
    now = utc_now()
    return [
        eval_result_row(run_id=run_id, model=model, policy_version=policy_version, benchmark=benchmark, metric=v.metric,
                        value=v.value, low=v.low, high=v.high, n_problems=v.n_problems, k=k,
                        settings_json=settings_json, shash=shash, created_at=now)
        for v in values
    ]
