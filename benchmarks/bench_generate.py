"""Overhead of `dypo-data generate` against calling vLLM directly on the same prompts.

Both sides run in fresh processes on the same machine, one after the other, repeated `--repeats`
times in alternating order: `raw` builds chat prompts with the tokenizer and calls `LLM.generate`
once; `dypo` runs the generate job (streaming results into Parquet shards, ids, resume planning)
into an empty store. Engine start-up is timed separately and left out of the ratio. The ratio
compares generation wall time per generated token (dypo / raw; 1.00 = no overhead).

    python benchmarks/bench_generate.py                      # embedded SmolLM2-135M, 32 x 8 x 128
    python benchmarks/bench_generate.py --model tiny --prompts 128

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




def _problems(n: int) -> list[dict]:
    from dypo_data.prompts.synthetic import generate_problems

    return generate_problems(n, seed=123, difficulty=2)


def _write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps({"problem": r["problem"], "answer": r["answer"]}) + "\n")


def run_raw(args: argparse.Namespace) -> dict:
    """Plain vLLM: LLM(...) then one LLM.generate over the chat-templated prompts."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from dypo_data.prompts import PromptSource, load_prompts

    loaded = load_prompts(PromptSource(path=args.prompts_file))
    tok = AutoTokenizer.from_pretrained(args.model_path)
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
             for m in loaded.prompts["messages"].to_pylist()]
    t0 = time.perf_counter()
    llm = LLM(model=args.model_path, enforce_eager=True, seed=0, dtype=args.dtype)
    start_s = time.perf_counter() - t0
    params = SamplingParams(n=args.n, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, logprobs=0)
    t0 = time.perf_counter()
    outputs = llm.generate([{"prompt": t} for t in texts], params, use_tqdm=False)
    gen_s = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return {"start_s": start_s, "gen_s": gen_s, "tokens": tokens, "total_s": start_s + gen_s}


def run_dypo(args: argparse.Namespace) -> dict:
    """The generate job, policy role (token ids and logprobs kept), into a fresh store."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))
    from dypo_data.backends import ModelSpec, SamplingConfig
    from dypo_data.jobs.generate import GenerateConfig, run_generate
    from dypo_data.prompts import PromptSource

    store = tempfile.mkdtemp(prefix="bench-store-")
    cfg = GenerateConfig(
        store=store, role="policy",
        models=(ModelSpec(name="bench", path=args.model_path, dtype=args.dtype, kv_cache_gib=args.kv_cache_gib),),
        sampling=SamplingConfig(n=args.n, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, seed=0),
        prompts=PromptSource(path=args.prompts_file), progress=False,
    )
    t0 = time.perf_counter()
    stats = run_generate(cfg)
    total_s = time.perf_counter() - t0
    gen_s = stats.timings["generate_seconds/bench"]
    return {"start_s": total_s - gen_s, "gen_s": gen_s, "tokens": stats.counts["tokens_generated/bench"],
            "total_s": total_s, "traces": stats.counts["traces_written"]}


def _child(mode: str, args: argparse.Namespace) -> dict:
    return run_child(__file__, mode, ["--model-path", args.model_path, "--prompts-file", args.prompts_file, "--n", str(args.n),
                                      "--max-tokens", str(args.max_tokens), "--dtype", args.dtype,
                                      "--kv-cache-gib", str(args.kv_cache_gib)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2, tiny[:SEED] or a model directory")
    p.add_argument("--prompts", type=int, default=32, help="number of prompts")
    p.add_argument("--n", type=int, default=8, help="samples per prompt")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--kv-cache-gib", type=int, default=2, help="CPU KV cache in whole GiB")
    p.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating")
    p.add_argument("--child", choices=["raw", "dypo"], help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        result = run_raw(args) if args.child == "raw" else run_dypo(args)
        print_result(result)
        return

    from dypo_data.jobs.common import package_versions
    from dypo_data.models import resolve_model

    args.model_path = str(resolve_model(args.model).path)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    args.prompts_file = str(tmp / "prompts.jsonl")
    _write_jsonl(_problems(args.prompts), Path(args.prompts_file))

    runs = alternate(("raw", "dypo"), args.repeats, lambda mode: _child(mode, args))

    def best(mode: str) -> dict:  # the fastest run of each side: least disturbed by the shared machine
        return min(runs[mode], key=lambda r: r["gen_s"] / max(r["tokens"], 1))

    raw, dy = best("raw"), best("dypo")
    raw_tps, dy_tps = raw["tokens"] / raw["gen_s"], dy["tokens"] / dy["gen_s"]
    ratio = raw_tps / dy_tps
    print(f"{'side':<6} {'tokens':>8} {'gen s':>8} {'tokens/s':>10} {'start s':>8}")
    for name, r in (("raw", raw), ("dypo", dy)):
        print(f"{name:<6} {r['tokens']:>8} {r['gen_s']:>8.2f} {r['tokens'] / r['gen_s']:>10.1f} {r['start_s']:>8.2f}")
    print(f"overhead (time per token, dypo / raw): {ratio:.3f}  target <= 1.05")
    print(json.dumps({
        "metrics": {"raw_tokens_per_s": raw_tps, "dypo_tokens_per_s": dy_tps, "overhead_ratio": ratio,
                    "raw_runs": runs["raw"], "dypo_runs": runs["dypo"]},
        "device": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor()},
        "versions": package_versions(),
        "config": {"model": args.model, "prompts": args.prompts, "n": args.n, "max_tokens": args.max_tokens,
                   "dtype": args.dtype, "repeats": args.repeats},
    }))


if __name__ == "__main__":
    main()
