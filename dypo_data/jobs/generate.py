"""`dypo-data generate`: teacher traces and policy rollout groups, written to the store as they finish.

For each model and prompt the job computes the trace ids it would write (stable hashes of prompt,
model, role, sample index, settings and policy version), asks the backend only for the samples that
are missing, and writes finished results in shards while the engine keeps working. A rerun, or a
run killed half-way and started again, therefore skips everything stored and loses nothing but the
results of the unflushed buffer (at most `flush_every` traces or `flush_seconds` of work).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import pyarrow as pa

from dypo_data.backends import (
    GenerationRequest, GenerationResult, ModelSpec, SamplingConfig, fit_context, resolve_spec,
)
from dypo_data.contracts import settings_hash, trace_id
from dypo_data.contracts.rows import trace_row, trace_settings, trace_version
from dypo_data.backends.cpu import running_engines
from dypo_data.backends.slot import BackendSlot
from dypo_data.errors import BackendError, ConfigError, InputError
from dypo_data.jobs.common import JobStats, ShardBuffer, make_progress, new_run_id, utc_now
from dypo_data.jobs.ingest import ingest_prompts
from dypo_data.prompts import PromptSource
from dypo_data.store import ShardWriter, check_writable, open_store, read_table
from dypo_data.store.lease import hold_leases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateConfig:
    store: str = field(metadata={"help": "Store directory (created if missing)."})
    role: Literal["teacher", "policy", "eval"] = field(
        default="teacher",
        metadata={"help": "teacher: m traces per prompt per model; policy: a group of k rollouts; eval: k samples "
                          "per prompt that record the policy version but form no group (dypo-data eval)."},
    )
    models: tuple[ModelSpec, ...] = field(default=(), metadata={"help": "Models to sample from, one after another."})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={"help": "Sampling settings."})
    prompts: PromptSource | None = field(
        default=None, metadata={"help": "Prompt file to load first; without it, prompt_ids or every stored prompt."}
    )
    prompt_ids: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Generate for these stored prompts, in this order (when prompts is None)."}
    )
    backend: str = field(default="vllm", metadata={"help": "vllm | openai | transformers."})
    backend_options: dict = field(
        default_factory=dict, metadata={"help": "Backend-specific options (e.g. base_urls for openai)."}
    )
    policy_version: str = field(
        default="base", metadata={"help": "Version tag of the policy (its training step); recorded by policy and eval traces."}
    )
    prompt_settings: dict = field(
        default_factory=dict,
        metadata={"help": "How the prompts' messages were built, recorded with each trace and hashed into its id "
                          "(eval: the instruction); empty for prompts sampled as stored."},
    )
    limit: int | None = field(default=None, metadata={"help": "Use at most this many prompts."})
    flush_every: int = field(default=256, metadata={"help": "Write a shard once this many traces are buffered."})
    flush_seconds: float = field(default=60.0, metadata={"help": "... or once this many seconds have passed."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    wait: bool = field(
        default=False,
        metadata={"help": "When another process is generating the same traces (same model, role, settings and "
                          "version) in this store, wait for it and then generate what it left, instead of failing."},
    )

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("no model to generate with", "pass --model (policy) or --teacher (one or more)")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"model names repeat: {names}", "give each model a distinct NAME=PATH")
        if self.role == "policy" and len(self.models) != 1:
            raise ConfigError(f"role=policy takes one model, got {len(self.models)}", "run once per policy model")
        if self.flush_every < 1:
            raise ConfigError(f"flush_every={self.flush_every} must be >= 1", "use e.g. 256")
        if self.prompts is not None and self.prompt_ids is not None:
            raise ConfigError("both prompts and prompt_ids are set", "give a prompt file or stored prompt ids, not both")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit={self.limit} must be >= 1", "omit --limit to use every prompt")


@dataclass(frozen=True)
class _Planned:
    """A request and the sample indices it covers that are already stored (skipped on write)."""

    request: GenerationRequest
    stored: frozenset[int]

    @property
    def todo(self) -> int:
        return self.request.n - len(self.stored)


def plan_requests(
    prompts: pa.Table, existing: set[str], *, model: ModelSpec, role: str, n: int, shash: str, policy_version: str
) -> list[_Planned]:
    """One request per prompt that lacks samples, from its first missing index to n - 1.

    Samples are seeded per (prompt, index), so a sample regenerated over a gap is the one that
    was lost; indices already stored inside the range are generated again but not written.
    Shapes: prompts has columns prompt_id, messages (one row per prompt).
    """
    version = trace_version(role, policy_version)
    plans = []
    for pid, messages in zip(prompts["prompt_id"].to_pylist(), prompts["messages"].to_pylist()):
        stored = {i for i in range(n) if trace_id(pid, model.name, role, i, shash, version) in existing}
        missing = [i for i in range(n) if i not in stored]
        if missing:
            first = missing[0]
            request = GenerationRequest(key=pid, messages=messages, n=n - first, sample_offset=first)
            plans.append(_Planned(request, frozenset(i for i in stored if i >= first)))
    return plans


def result_rows(
    result: GenerationResult, plan: _Planned, *, model: ModelSpec, role: str, shash: str, sampling_json: str,
    policy_version: str, backend_kind: str, run_id: str,
) -> list[dict]:
    """Trace rows of one finished request (samples already stored are left out)."""
    now = utc_now()
    return [
        trace_row(
            prompt_id=result.key, model=model.name, role=role, sample_idx=c.sample_idx, shash=shash,
            policy_version=policy_version, completion=c.text, num_tokens=c.num_tokens, finish_reason=c.finish_reason,
            sampling_json=sampling_json, backend=backend_kind, source="generated", run_id=run_id,
            model_path=model.path, gen_seconds=result.seconds, created_at=now,
            prompt_token_ids=result.prompt_token_ids if c.token_ids is not None else None,
            completion_token_ids=c.token_ids, completion_logprobs=c.logprobs,
        )
        for c in result.completions
        if c.sample_idx not in plan.stored
    ]


def _select_prompts(root: Path, prompt_ids: list[str] | None, limit: int | None) -> pa.Table:
    prompts = read_table(root, "prompts", ["prompt_id", "messages"])
    if prompt_ids is not None:
        rows = dict(zip(prompts["prompt_id"].to_pylist(), prompts["messages"].to_pylist()))
        ids = [pid for pid in dict.fromkeys(prompt_ids) if pid in rows]
        prompts = pa.table({"prompt_id": ids, "messages": [rows[p] for p in ids]})
    if prompts.num_rows == 0:
        raise InputError(f"store {root} has no prompts to generate for", "pass --prompts FILE")
    return prompts.slice(0, limit) if limit else prompts


def _generate_model(
    model: ModelSpec, prompts: pa.Table, existing: set[str], cfg: GenerateConfig, sampling: SamplingConfig,
    flusher: ShardBuffer, stats: JobStats, run_id: str, engines: BackendSlot,
) -> None:
    model = resolve_spec(cfg.backend, model)  # the dtype the engine really runs is what traces record
    settings = trace_settings(cfg.role, model, sampling, cfg.prompt_settings)
    shash = settings_hash(settings)
    plans = plan_requests(
        prompts, existing, model=model, role=cfg.role, n=sampling.n, shash=shash, policy_version=cfg.policy_version
    )
    wanted = prompts.num_rows * sampling.n
    todo = sum(p.todo for p in plans)
    stats.add(f"samples_already_stored/{model.name}", wanted - todo)
    if not plans:
        log.info("%s: all %d samples already stored", model.name, wanted)
        return
    model = fit_context(cfg.backend, model, [p.request.messages for p in plans], sampling.max_tokens)
    by_key = {p.request.key: p for p in plans}
    sampling_json = json.dumps(settings, sort_keys=True)
    backend = engines.get(cfg.backend, model, cfg.backend_options)
    with make_progress(cfg.progress) as bar:
        stats.time(f"engine_start_seconds/{model.name}", engines.start_seconds)
        tokens, started = 0, time.monotonic()
        task = bar.add_task(f"{cfg.role} {model.name}", total=todo, rate="")
        written = 0
        try:
            for result in backend.generate([p.request for p in plans], sampling):
                rows = result_rows(
                    result, by_key[result.key], model=model, role=cfg.role, shash=shash, sampling_json=sampling_json,
                    policy_version=cfg.policy_version, backend_kind=backend.kind, run_id=run_id,
                )
                flusher.add(rows)
                written += len(rows)
                tokens += sum(c.num_tokens for c in result.completions)
                rate = tokens / max(time.monotonic() - started, 1e-9)
                bar.update(task, advance=len(rows), rate=f"{rate:,.0f} tok/s")
        except BackendError as exc:  # the engine died: say what is kept and how to go on
            raise engine_died(exc, model.name, written, todo) from exc
        finally:
            flusher.flush()  # results already received are never lost, even on Ctrl-C or a backend error
        stats.time(f"generate_seconds/{model.name}", time.monotonic() - started)  # engine start excluded
    stats.add(f"samples_generated/{model.name}", todo)
    stats.add(f"tokens_generated/{model.name}", tokens)


def engine_died(exc: BackendError, model: str, written: int, todo: int) -> BackendError:
    """The backend's error plus what is stored and that a rerun resumes (and why it may have died)."""
    others = running_engines()
    busy = (f"; another vLLM engine runs on this machine (pids {', '.join(map(str, others[:4]))}): "
            "run heavy jobs one at a time" if others else "")
    return BackendError(
        f"{exc.message} ({model}: {written} of {todo} samples were done and are stored)",
        f"rerun the same command: it resumes and generates only the missing samples{busy}",
    )


def traces_settings(cfg: GenerateConfig, model: ModelSpec) -> dict:
    """The settings `run_generate(cfg)` records with `model`'s traces; their hash is in the trace ids."""
    return trace_settings(cfg.role, resolve_spec(cfg.backend, model), cfg.sampling, cfg.prompt_settings)


def generate_leases(cfg: GenerateConfig, sampling: SamplingConfig) -> dict[str, str]:
    """The lease of each model's work (see store/lease.py): {stable key: what it is, for people}."""
    leases = {}
    for model in cfg.models:
        shash = settings_hash(trace_settings(cfg.role, resolve_spec(cfg.backend, model), sampling, cfg.prompt_settings))
        version = trace_version(cfg.role, cfg.policy_version)
        leases[f"generate|{model.name}|{cfg.role}|{shash}|{version}"] = (
            f"generate of {cfg.role} traces of {model.name} (settings {shash[:8]}"
            + (f", policy version {version})" if version is not None else ")"))
    return leases


def run_generate(
    cfg: GenerateConfig, prompts_table: pa.Table | None = None, engines: BackendSlot | None = None,
) -> JobStats:
    """Load prompts (optional), then sample every model's missing traces into the store.

    `engines` lends an open backend across calls (teacher traces and policy groups of one checkpoint
    start one engine); without it the job starts its own and closes it when done.

    `prompts_table` (columns prompt_id, messages; the prompts must be stored already) samples these
    messages instead of the stored ones: `dypo-data eval` renders a benchmark with its own
    instruction, recorded through `cfg.prompt_settings`.
    """
    root = open_store(cfg.store, must_exist=False)
    check_writable(root)
    run_id = new_run_id("generate")
    stats = JobStats("generate", run_id)
    writer = ShardWriter(root, run_id)
    sampling = replace(cfg.sampling, logprobs=True) if cfg.role == "policy" else cfg.sampling
    if prompts_table is not None:
        prompts = prompts_table.select(["prompt_id", "messages"]).slice(0, cfg.limit)
    else:
        if cfg.prompts is not None:
            prompt_ids = ingest_prompts(root, cfg.prompts, writer, stats)
        else:
            prompt_ids = list(cfg.prompt_ids) if cfg.prompt_ids is not None else None
        prompts = _select_prompts(root, prompt_ids, cfg.limit)
    stats.add("prompts_used", prompts.num_rows)
    slot = engines if engines is not None else BackendSlot()
    try:
        with hold_leases(root, generate_leases(cfg, sampling), wait=cfg.wait):
            existing = set(read_table(root, "traces", ["trace_id"])["trace_id"].to_pylist())  # read once the lease is held
            flusher = ShardBuffer(writer, "traces", stats, every=cfg.flush_every, seconds=cfg.flush_seconds)
            for model in cfg.models:
                _generate_model(model, prompts, existing, cfg, sampling, flusher, stats, run_id, slot)
    finally:
        if engines is None:
            slot.close()
    writer.write_manifest(stats.manifest(cfg))
    return stats
