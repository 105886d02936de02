"""Throughput of `dypo-data eval` against calling vLLM directly on the same benchmark prompts.

Both sides run in fresh processes, one after the other, repeated `--repeats` times in alternating
order, with the same engine settings (the dtype, thread binding and step bounds `dypo-data cpu`
prints: the comparison is of what runs around the engine, not of engine settings):

- `raw`   renders the prompts (problem + instruction, chat template) and calls `LLM.generate` once
          with n = k at the paper's sampling settings;
- `eval`  runs the eval job into an empty store: k seeded samples per problem streamed into Parquet
          shards, graded by the verifier pool, metrics with bootstrap intervals, eval_results written.

Engine start-up is timed apart and left out. Two ratios of time per generated token (eval / raw;
1.00 = no overhead): `generation` (the generate phase alone) and `with grading` (generation, then
grading, answer classes, bootstrap metrics and the eval_results write: what an evaluation adds to
sampling). What does not grow with the tokens is printed apart: the eval side's fixed seconds
outside those phases (fitting the context to the longest prompt, planning the resume, shutting
the engine down; the raw side does the first outside its timing and never shuts down).

    python benchmarks/bench_eval.py                          # SmolLM2-135M, first 32 MATH-500 problems, k=4, 256 tokens
    python benchmarks/bench_eval.py --problems 64 --k 8 --max-tokens 512

The last line printed is one JSON object with the metrics, device, versions and config.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from bench_common import alternate, print_result, run_child

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
TEMPERATURE, TOP_P = 0.6, 0.95


def _spec(args: argparse.Namespace):
    """The ModelSpec both sides use."""
    from dypo_data.backends import ModelSpec

    return ModelSpec(name="bench", path=args.model_path, dtype=args.dtype, kv_cache_gib=args.kv_cache_gib)


def run_raw(args: argparse.Namespace) -> dict:
    """Plain vLLM: LLM(...) with the job's engine settings, then one LLM.generate with n = k."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    from dypo_data.backends.vllm_engine import engine_kwargs, plan_for, scoped_environment, set_cpu_kv_cache
    from dypo_data.prompts import DEFAULT_INSTRUCTION, PromptSource, load_prompts

    spec = _spec(args)
    loaded = load_prompts(PromptSource(path=args.prompts_file, limit=args.problems, import_traces=False,
                                       instruction=DEFAULT_INSTRUCTION))  # what the eval job appends
    tok = AutoTokenizer.from_pretrained(args.model_path)
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
             for m in loaded.prompts["messages"].to_pylist()]
    plan = None
    if current_platform.is_cpu():
        set_cpu_kv_cache(spec.kv_cache_gib)
        plan = plan_for(spec)
    env = plan.environment() if plan is not None else {}
    t0 = time.perf_counter()
    with scoped_environment(env):
        llm = LLM(**engine_kwargs(spec, cpu=plan))
    start_s = time.perf_counter() - t0
    params = SamplingParams(n=args.k, temperature=TEMPERATURE, top_p=TOP_P, max_tokens=args.max_tokens, seed=0)
    t0 = time.perf_counter()
    outputs = llm.generate([{"prompt": t} for t in texts], params, use_tqdm=False)
    gen_s = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return {"start_s": start_s, "gen_s": gen_s, "tokens": tokens, "work_s": gen_s, "fixed_s": 0.0}


def run_eval_job(args: argparse.Namespace) -> dict:
    """The eval job, one model, one benchmark, into a fresh store."""
    from dypo_data.backends import SamplingConfig
    from dypo_data.grading import VerifierConfig
    from dypo_data.jobs.evaluate import Benchmark, EvalConfig, EvalModel, run_eval

    spec = _spec(args)
    cfg = EvalConfig(
        store=tempfile.mkdtemp(prefix="bench-eval-"), models=(EvalModel(spec),),
        benchmarks=(Benchmark(name="bench", path=args.prompts_file),), k=args.k, limit=args.problems,
        sampling=SamplingConfig(temperature=TEMPERATURE, top_p=TOP_P, max_tokens=args.max_tokens, seed=0),
        verifier=VerifierConfig(workers=args.workers), progress=False,
    )
    t0 = time.perf_counter()
    outcome = run_eval(cfg)
    total_s = time.perf_counter() - t0
    t = outcome.stats.timings
    start_s, gen_s = t["engine_start_seconds/bench@base"], t["generate_seconds/bench@base"]
    work_s = gen_s + t.get("verify_seconds", 0.0) + t.get("measure_seconds", 0.0)
    return {"start_s": start_s, "gen_s": gen_s, "tokens": outcome.stats.counts["tokens_generated/bench@base"],
            "work_s": work_s, "fixed_s": total_s - start_s - work_s,
            "verify_s": t.get("verify_seconds", 0.0), "measure_s": t.get("measure_seconds", 0.0)}


def _child(mode: str, args: argparse.Namespace) -> dict:
    return run_child(__file__, mode, ["--model-path", args.model_path, "--prompts-file", args.prompts_file,
                                      "--problems", str(args.problems), "--k", str(args.k), "--max-tokens", str(args.max_tokens),
                                      "--dtype", args.dtype, "--kv-cache-gib", str(args.kv_cache_gib),
                                      "--workers", str(args.workers)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2, tiny[:SEED] or a model directory")
    p.add_argument("--prompts-file", default=str(BENCHMARKS / "math500.jsonl"), help="problem/answer JSONL")
    p.add_argument("--problems", type=int, default=32, help="the first N problems")
    p.add_argument("--k", type=int, default=4, help="samples per problem")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--dtype", default="auto", help="auto picks what the CPU runs fast (see `dypo-data cpu`)")
    p.add_argument("--kv-cache-gib", type=float, default=2.0)
    p.add_argument("--workers", type=int, default=2, help="grading processes of the eval side")
    p.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating")
    p.add_argument("--child", choices=["raw", "eval"], help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        result = run_raw(args) if args.child == "raw" else run_eval_job(args)
        print_result(result)
        return

    from dypo_data.jobs.common import package_versions
    from dypo_data.models import resolve_model

    if not Path(args.prompts_file).is_file():
        raise SystemExit(f"error: prompt file {args.prompts_file} does not exist (fix: pass --prompts-file FILE, "
                         "a JSONL of problem and answer)")
    args.model_path = str(resolve_model(args.model).path)
    runs = alternate(("raw", "eval"), args.repeats, lambda mode: _child(mode, args))

    def best(mode: str, key: str) -> dict:  # the fastest run of each side: least disturbed by the shared machine
        return min(runs[mode], key=lambda r: r[key] / max(r["tokens"], 1))

    def per_token(r: dict, key: str) -> float:
        return r[key] / max(r["tokens"], 1)

    raw, ev = best("raw", "gen_s"), best("eval", "gen_s")
    gen_ratio = per_token(ev, "gen_s") / per_token(raw, "gen_s")
    ev_work = best("eval", "work_s")
    work_ratio = per_token(ev_work, "work_s") / per_token(best("raw", "work_s"), "work_s")
    print(f"{'side':<6} {'tokens':>8} {'gen s':>8} {'tokens/s':>10} {'start s':>8}")
    for name, r in (("raw", raw), ("eval", ev)):
        print(f"{name:<6} {r['tokens']:>8} {r['gen_s']:>8.2f} {r['tokens'] / r['gen_s']:>10.1f} {r['start_s']:>8.2f}")
    print(f"eval: grading {ev_work['verify_s']:.2f} s, answer classes and metrics {ev_work['measure_s']:.2f} s; "
          f"fixed (context fit, resume planning, engine shutdown) {ev_work['fixed_s']:.2f} s")
    print(f"overhead, time per token (eval / raw): generation {gen_ratio:.3f}, with grading {work_ratio:.3f}  target <= 1.05")
    print(json.dumps({
        "metrics": {"raw_tokens_per_s": raw["tokens"] / raw["gen_s"], "eval_tokens_per_s": ev["tokens"] / ev["gen_s"],
                    "generation_ratio": gen_ratio, "with_grading_ratio": work_ratio, "raw_runs": runs["raw"],
                    "eval_runs": runs["eval"]},
        "device": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor()},
        "versions": package_versions(),
        "config": {"model": args.model, "prompts_file": args.prompts_file, "problems": args.problems, "k": args.k,
                   "max_tokens": args.max_tokens, "dtype": args.dtype, "repeats": args.repeats},
    }))


if __name__ == "__main__":
    main()
