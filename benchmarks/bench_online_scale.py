"""Online training beyond one process, in one run on one machine and one store:

1. steps  online steps/s of the same run (tiny model by default, `--recipe`, prompts, k, tokens) with
          (a) one process and its in-process engine, (b) 2 data-parallel processes, each with its own
          engine on its own cores (accelerate launch, gloo on CPU), (c) one trainer process sampling
          from 2 vLLM servers (rollout.backend=server, shared-path weight push). Speed: the median of
          `time/step` over the steps after the first; `time/weight_sync` as a share of the step (target < 5%).
          Target where the cores allow: (b) >= 1.6x (a). On 2 cores, (b) gives each process one core
          that (a) would use both of, so it shows the overhead of the exchange rather than a speed-up.
2. push   weight-push seconds against model size, per transport: the in-process engine's
          `load_weights` (reload_weights over an iterator) and the shared-path transport to one server
          (safetensors written once, reload_weights from the path, prefix cache reset, version set).
          Models: `--push-models` (tiny, smollm2).

    python benchmarks/bench_online_scale.py                        # both sections, tiny model, a few minutes
    python benchmarks/bench_online_scale.py --sections push --push-models tiny,smollm2

Run it with no other heavy job on the machine (two vLLM-CPU engines starve each other); the table names the
CPU and the load average. The last line printed is one JSON object with the metrics, device, versions and config.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import _version, build_store, model_path  # noqa: E402 - the shared store builder

TARGET_PUSH_SHARE = 0.05
TARGET_TWO_PROCESSES = 1.6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sets(a: argparse.Namespace, name: str, *extra: str) -> list[str]:
    sets = [f"data.store={a.store}", f"model.policy={a.model_path}", "model.name=bench-policy", "model.mixed_precision=no",
            "run.report_to=[]", f"run.output_dir={a.tmp}/runs", f"run.name={name}", f"run.max_steps={a.steps}",
            f"run.prompts_per_step={a.prompts}", f"rollout.k={a.k}", f"rollout.max_tokens={a.max_tokens}",
            "rollout.kv_cache_gib=1", "optim.lr=1e-4", *extra]
    return [x for s in sets for x in ("--set", s)]


def env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def step_times(a: argparse.Namespace, name: str) -> dict:
    from dypo_data.store.views import connect

    con = connect(Path(a.store))
    rows = con.execute("SELECT step, name, value FROM train_metrics WHERE run_id = ? AND name IN "
                       "('time/step', 'time/weight_sync', 'time/generate', 'time/train')", [name]).fetchall()
    con.close()
    by = {}
    for step, key, value in rows:
        by.setdefault(key, {})[step] = value
    later = lambda key: [v for s, v in sorted(by.get(key, {}).items()) if s > 1]  # noqa: E731 - the first step starts things
    step = statistics.median(later("time/step"))
    push = statistics.median(later("time/weight_sync"))
    return {"step_s": step, "steps_per_s": 1 / step, "weight_sync_s": push, "push_share": push / step,
            "generate_s": statistics.median(later("time/generate")), "train_s": statistics.median(later("time/train"))}


def launch(cmd: list[str], label: str) -> None:
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{label} failed:\n{out.stderr[-3000:]}")
    print(f"  {label}: {time.perf_counter() - started:.0f} s wall", flush=True)


def section_steps(a: argparse.Namespace) -> dict:
    from dypo_train.online.serve import rollout_server_spec, start_rollout_servers

    cli = [sys.executable, "-m", "dypo_train.cli", "run", "--mode", "online"]
    launch([*cli, *run_sets(a, "one")], "1 process, colocated")
    launch([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--mixed_precision",
            "no", "--dynamo_backend", "no", "--num_machines", "1", "--main_process_port", str(free_port()), "-m",
            "dypo_train.cli", "run", "--mode", "online", *run_sets(a, "two")], "2 processes, colocated")
    servers = start_rollout_servers(rollout_server_spec(a.model_path, name="bench-policy"), count=2, port=free_port(),
                                    log_dir=a.tmp)
    try:
        urls = ",".join(s.base_url for s in servers)
        launch([*cli, *run_sets(a, "servers", "rollout.backend=server", f"rollout.base_urls=[{urls}]")], "1 trainer, 2 servers")
    finally:
        for s in servers:
            s.stop()
    out = {label: step_times(a, label) for label in ("one", "two", "servers")}
    out["two_vs_one"] = out["two"]["steps_per_s"] / out["one"]["steps_per_s"]
    out["servers_vs_one"] = out["servers"]["steps_per_s"] / out["one"]["steps_per_s"]
    print(f"\n{'online steps':24s} {'step s':>8s} {'steps/s':>8s} {'generate':>9s} {'train':>7s} {'push s':>8s} {'push %':>7s}")
    for label, title in (("one", "1 process, colocated"), ("two", "2 processes, colocated"), ("servers", "1 trainer, 2 servers")):
        r = out[label]
        print(f"{title:24s} {r['step_s']:8.3f} {r['steps_per_s']:8.2f} {r['generate_s']:9.3f} {r['train_s']:7.3f} "
              f"{r['weight_sync_s']:8.4f} {100 * r['push_share']:6.1f}%")
    print(f"2 processes / 1: {out['two_vs_one']:.2f}x (target {TARGET_TWO_PROCESSES}x where there are cores for it); "
          f"2 servers / colocated: {out['servers_vs_one']:.2f}x")
    return out


def section_push(a: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from dypo_train.online import RolloutEngine
    from dypo_train.online.serve import rollout_server_spec, start_rollout_servers
    from dypo_train.online.weight_transfer import SharedPathTransport

    out = {}
    print(f"\n{'weight push':24s} {'params':>10s} {'engine s':>9s} {'shared path s':>14s}")
    for spec in a.push_models.split(","):
        path = model_path(spec, None)
        state = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()
        params = sum(t.numel() for t in state.values())
        with RolloutEngine(path, dtype="float32", kv_cache_gib=1) as engine:
            engine_s = statistics.median(engine.load_weights(state) for _ in range(3))
        (server,) = start_rollout_servers(rollout_server_spec(path, name="push"), count=1, port=free_port(), log_dir=a.tmp)
        try:
            transport = SharedPathTransport(Path(a.tmp) / f"weights-{spec}", [server.base_url], dtype=torch.float32)
            times = []
            for version in range(3):
                started = time.perf_counter()
                transport.push(state, version)
                times.append(time.perf_counter() - started)
            shared_s = statistics.median(times)
        finally:
            server.stop()
        out[spec] = {"params": params, "engine_s": engine_s, "shared_path_s": shared_s}
        print(f"{spec:24s} {params:10d} {engine_s:9.3f} {shared_s:14.3f}")
    return out


def device() -> dict:
    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return {"cpu": name, "cores": len(os.sched_getaffinity(0)), "amx": "amx_bf16" in flags, "avx512": "avx512f" in flags,
            "loadavg_1m": os.getloadavg()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="steps,push")
    p.add_argument("--model", default="tiny")
    p.add_argument("--push-models", default="tiny,smollm2")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    a = p.parse_args()
    a.tmp = tempfile.mkdtemp(prefix="bench-online-scale-")
    a.model_path = model_path(a.model, None)
    a.store = str(Path(a.tmp) / "store")
    from transformers import AutoTokenizer

    build_store(Path(a.store), AutoTokenizer.from_pretrained(a.model_path), n_prompts=4 * a.prompts, k=a.k,
                completion_tokens=a.max_tokens)
    dev = device()
    print(f"CPU {dev['cpu']} ({dev['cores']} cores, amx {dev['amx']}, avx512 {dev['avx512']}), load {dev['loadavg_1m']:.2f}")
    results = {}
    if "steps" in a.sections:
        results["steps"] = section_steps(a)
    if "push" in a.sections:
        results["push"] = section_push(a)
    print(json.dumps({"metrics": results, "device": dev, "config": {k: v for k, v in vars(a).items()},
                      "versions": {n: _version(n) for n in ("torch", "vllm-cpu", "accelerate", "transformers")}}))


if __name__ == "__main__":
    main()
