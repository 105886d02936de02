"""`dypo-data generate`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from dypo_data.cli.common import build_prompt_source, field_help, out_console, reporting, setup_logging, show_progress
from dypo_data.errors import ConfigError
from dypo_data.jobs.generate import GenerateConfig
from dypo_data.prompts import PromptSource


def parse_model_arg(arg: str, *, cache_dir: str | None = None) -> tuple[str, str]:
    """`NAME=SPEC` or `SPEC` (a model directory, `smollm2`, `tiny` or `tiny:SEED`) -> (name, path)."""
    from dypo_data.models import resolve_model

    name, sep, spec = arg.partition("=")
    if not sep:
        name, spec = "", arg
    if sep and not name:
        raise ConfigError(f"model argument {arg!r} has an empty name", "write NAME=PATH, e.g. qwen=/models/qwen")
    ref = resolve_model(spec, cache_dir=cache_dir)
    return name or ref.name, str(ref.path)


def generate(
    store: Annotated[Path, typer.Option(help="Store directory (created if missing).")],
    prompts: Annotated[Optional[Path], typer.Option(help="Prompt file (JSONL, Parquet or a saved HF dataset); default: the store's prompts.")] = None,
    prompt_format: Annotated[str, typer.Option("--format", help="Prompt file format: auto, problem_answer, question_answer, verl, openr1.")] = "auto",
    column: Annotated[Optional[list[str]], typer.Option(help="Map a prompt field to an input column, FIELD=COLUMN (repeatable; nested: reward_model.ground_truth).")] = None,
    instruction: Annotated[Optional[str], typer.Option(help="Text appended to each problem (default asks for a \\boxed{} answer; '' for none).")] = None,
    solution_teacher: Annotated[str, typer.Option(help=field_help(PromptSource, "solution_teacher"))] = PromptSource.solution_teacher,
    skip_missing_answer: Annotated[bool, typer.Option(help="Skip prompt rows with no gold answer instead of failing.")] = False,
    teacher: Annotated[Optional[list[str]], typer.Option(help="Teacher model as NAME=PATH or PATH (repeat for several). PATH may be smollm2 or tiny[:SEED].")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Policy model as NAME=PATH or PATH; its rollouts form groups of k.")] = None,
    m: Annotated[int, typer.Option("-m", "--m", help="Traces per prompt per teacher.")] = 2,
    k: Annotated[int, typer.Option("-k", "--k", help="Rollouts per prompt for the policy (the group size).")] = 8,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling probability mass.")] = 1.0,
    max_tokens: Annotated[int, typer.Option(help="Maximum completion tokens.")] = 512,
    stop: Annotated[Optional[list[str]], typer.Option(help="Stop string (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    backend: Annotated[str, typer.Option(help="vllm (default), openai (a running OpenAI-compatible server) or transformers.")] = "vllm",
    base_url: Annotated[Optional[list[str]], typer.Option(help="OpenAI-compatible server URL, e.g. http://host:8000/v1 (repeat to spread over a fleet).")] = None,
    max_concurrency: Annotated[int, typer.Option(help="openai backend: requests in flight per server.")] = 16,
    request_timeout: Annotated[float, typer.Option(help="openai backend: seconds per request.")] = 600.0,
    dtype: Annotated[str, typer.Option(help="Model dtype: auto, float32, bfloat16, float16.")] = "auto",
    kv_cache_gib: Annotated[float, typer.Option(help="vLLM on CPU: KV cache size in GiB.")] = 2.0,
    eager: Annotated[bool, typer.Option("--eager/--compile", help="vLLM: eager mode starts in seconds; compiled is ~20% faster after a long start.")] = True,
    tensor_parallel_size: Annotated[int, typer.Option("--tp", help="vLLM: tensor-parallel GPUs per engine.")] = 1,
    data_parallel_size: Annotated[int, typer.Option("--dp", help="vLLM: data-parallel engine replicas.")] = 1,
    max_model_len: Annotated[Optional[int], typer.Option(help="vLLM: context length (default: the model's).")] = None,
    policy_version: Annotated[str, typer.Option(help="Version tag of the policy (e.g. its training step).")] = "base",
    system_prompt: Annotated[Optional[str], typer.Option(help="System message for prompts built from a problem.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use at most this many prompts.")] = None,
    flush_every: Annotated[int, typer.Option(help=field_help(GenerateConfig, "flush_every"))] = GenerateConfig.flush_every,
    flush_seconds: Annotated[float, typer.Option(help=field_help(GenerateConfig, "flush_seconds"))] = GenerateConfig.flush_seconds,
    wait: Annotated[bool, typer.Option("--wait", help=field_help(GenerateConfig, "wait"))] = False,
    cache_dir: Annotated[Optional[str], typer.Option(help="Where built-in models are cached (default $DYPO_CACHE or ~/.cache/dypo).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log engine and job details.")] = False,
) -> None:
    """Sample teacher traces (m per prompt per teacher) and policy rollout groups (k per prompt) into the store.

    Examples:

      dypo-data generate --store st --prompts problems.jsonl --teacher smollm2 -m 2 --policy smollm2 -k 8

      dypo-data generate --store st --teacher big=/models/qwen --backend openai --base-url http://n1:8000/v1 --base-url http://n2:8000/v1
    """
    setup_logging(verbose)
    with reporting():
        from dypo_data.backends import ModelSpec, SamplingConfig
        from dypo_data.backends.slot import BackendSlot
        from dypo_data.jobs.generate import run_generate
        from dypo_data.jobs.ingest import run_import

        if not teacher and not policy:
            raise ConfigError("nothing to generate: no --teacher and no --policy", "name at least one model")
        for flag, value, used in (("-m", m, teacher), ("-k", k, policy)):
            if used and value < 1:
                raise ConfigError(f"{flag} {value}: samples per prompt must be at least 1", f"pass {flag} 1 or more")
        src = build_prompt_source(prompts, fmt=prompt_format, columns=column, instruction=instruction,
                                  system_prompt=system_prompt, solution_teacher=solution_teacher,
                                  on_missing_answer="skip" if skip_missing_answer else "error") if prompts else None
        base = SamplingConfig(n=1, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                              stop=tuple(stop or ()), seed=seed)
        options = {}
        if backend == "openai":
            options = {"base_urls": tuple(base_url or ()), "max_concurrency": max_concurrency,
                       "timeout_s": request_timeout}
        elif base_url:
            raise ConfigError(f"--base-url is for --backend openai, not {backend}", "add --backend openai")

        def spec(arg: str) -> ModelSpec:
            name, path = parse_model_arg(arg, cache_dir=cache_dir)
            return ModelSpec(name=name, path=path, dtype=dtype, max_model_len=max_model_len, enforce_eager=eager,
                             kv_cache_gib=kv_cache_gib, tensor_parallel_size=tensor_parallel_size,
                             data_parallel_size=data_parallel_size)

        jobs = []
        if teacher:
            jobs.append(("teacher", tuple(spec(t) for t in teacher), replace(base, n=m)))
        if policy:
            jobs.append(("policy", (spec(policy),), replace(base, n=k)))
        configs = [  # validated before anything is written
            GenerateConfig(
                store=str(store), role=role, models=models, sampling=sampling, backend=backend,
                backend_options=options, policy_version=policy_version, limit=limit, flush_every=flush_every,
                flush_seconds=flush_seconds, wait=wait, progress=show_progress(quiet, as_json),
            )
            for role, models, sampling in jobs
        ]
        summaries = []
        if src is not None:  # load the file once; every role then samples the same prompts
            import_stats, ids = run_import(str(store), src)
            configs = [replace(cfg, prompt_ids=tuple(ids)) for cfg in configs]
            summaries.append({"role": "import", "run_id": import_stats.run_id, **dict(import_stats.counts)})
        with BackendSlot() as engines:  # a teacher that is also the policy starts one engine for both
            for cfg in configs:
                stats = run_generate(cfg, engines=engines)
                summaries.append({"role": cfg.role, "run_id": stats.run_id, **dict(stats.counts), **stats.timings})
        if as_json:
            print(json.dumps(summaries, default=str))
        elif not quiet:
            for s in summaries:
                out_console.print(f"[green]{s['role']}[/]: " + ", ".join(f"{k}={v}" for k, v in s.items() if k != "role"),
                                  highlight=False)
