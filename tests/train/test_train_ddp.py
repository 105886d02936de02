"""Data parallel on CPU: two gloo processes (accelerate launch, the shipped cpu_2proc.yaml) train exactly like one
process on the same global batch; and every shipped accelerate config loads with accelerate's own loader.

`accelerate launch --cpu --num_processes 2` (and distributed_type MULTI_CPU) starts ONE process; `--multi_gpu`
starts two through torch.distributed.run, and the trainer asks accelerate for gloo on CPU when it finds no GPU."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_runs import (
    CLI_TIMEOUT_S,
    checkpoint_weights,
    cli_command,
    cli_env,
    make_store,
    max_abs_diff,
    model_weights,
    overrides,
    sets_args,
    step_lines,
    step_metrics,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "accelerate"
PROBE = Path(__file__).with_name("ddp_probe.py")
TOL = 1e-5
LR = "optim.lr=1e-4"  # see test_train_offline.LR_COMPARED: AdamW amplifies float noise in tiny gradients up to lr
COMPARED = ("loss/total", "loss/sft", "loss/rl", "loss/gal", "grad/norm", "policy/entropy", "tier/easy", "tier/mid",
            "tier/hard", "tier/offline_ratio", "reward/mean")


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir):
    return make_store(tmp_path_factory.mktemp("ddp-store") / "store", tiny_model_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(*args: str, env: dict[str, str]) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("accelerate")
    launcher = [str(exe)] if exe.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]
    return subprocess.Popen([*launcher, *(["launch"] if exe.is_file() else []), "--main_process_port", str(free_port()), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, out + err
    return out, err


def assert_same_run(store_root: Path, one: str, two: str, steps: int) -> None:
    a, b = step_metrics(store_root, one), step_metrics(store_root, two)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    for step in a:
        for key in COMPARED:
            assert (key in a[step]) == (key in b[step]), (step, key)
            if key in a[step]:
                assert a[step][key] == pytest.approx(b[step][key], abs=TOL), (step, key, a[step][key], b[step][key])


def test_two_processes_train_like_one(store, tiny_model_dir, tmp_path):
    """3 steps of 7 prompts (the third starts a new epoch): rank 0 trains 4 prompts a step, rank 1 trains 3; the
    summed losses, gradient norm and final weights equal those of one process."""
    out, probes = tmp_path / "runs", tmp_path / "probes"
    probes.mkdir()

    def sets(name):
        return sets_args(overrides(store.root, tiny_model_dir, out, name, "run.max_steps=3", LR))

    one = subprocess.Popen([*cli_command(), "run", *sets("one")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=cli_env())
    two = accelerate_launch("--config_file", str(CONFIGS / "cpu_2proc.yaml"), str(PROBE), "run", *sets("two"),
                            env=cli_env(DYPO_TEST_PROBE_DIR=str(probes)))
    finish(one)
    stdout, _ = finish(two)

    ranks = [json.loads((probes / f"rank-{i}.json").read_text()) for i in range(2)]
    for i, rank in enumerate(ranks):
        assert (rank["process_index"], rank["num_processes"], rank["env_world_size"]) == (i, 2, "2"), rank
        assert rank["distributed_type"].endswith("MULTI_CPU") and rank["model_class"] == "DistributedDataParallel", rank
    assert step_lines(stdout) == ["step 1/3", "step 2/3", "step 3/3"]  # rank 0 reports, rank 1 does not

    assert_same_run(store.root, "one", "two", 3)
    single = step_metrics(store.root, "one")
    for step in (1, 2, 3):  # the work was split: each rank trained part of the step's tokens, together all of them
        shares = [rank["tokens"][step - 1] for rank in ranks]
        assert all(s > 0 for s in shares) and sum(shares) == single[step]["perf/tokens"], (step, shares)
    assert max_abs_diff(checkpoint_weights(out / "one"), model_weights(tiny_model_dir)) > 5e-5  # trained ...
    assert max_abs_diff(checkpoint_weights(out / "one"), checkpoint_weights(out / "two")) < TOL  # ... alike


def test_documented_launch_line(store, tiny_model_dir, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m dypo_train.cli run ...` (the line in the docs) on CPU."""
    out = tmp_path / "runs"

    def sets(name):
        return sets_args(overrides(store.root, tiny_model_dir, out, name, "run.max_steps=1", LR))

    one = subprocess.Popen([*cli_command(), "run", *sets("one-b")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=cli_env())
    two = accelerate_launch("--multi_gpu", "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
                            "--num_machines", "1", "-m", "dypo_train.cli", "run", *sets("two-b"), env=cli_env())
    finish(one)
    stdout, _ = finish(two)
    assert step_lines(stdout) == ["step 1/1"]
    assert_same_run(store.root, "one-b", "two-b", 1)
    assert max_abs_diff(checkpoint_weights(out / "one-b"), checkpoint_weights(out / "two-b")) < TOL


# -- the shipped accelerate configs --------------------------------------------------------------------------

EXPECTED = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED", "cpu_2proc": "MULTI_GPU"}


def test_every_config_is_covered():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_loads(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
    )

    path = CONFIGS / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("# ") and "accelerate launch --config_file configs/accelerate/" in text  # says when and how
    config = load_config_from_file(str(path))  # unknown top-level keys raise here
    assert config.distributed_type.value == EXPECTED[name] and config.num_processes >= 2 and config.num_machines == 1
    parser = launch_command_parser()
    known = {action.dest for action in parser._actions}
    for key in [*config.fsdp_config, *config.deepspeed_config]:  # nested keys become launch arguments: no typos
        assert key in known, (name, key)
    args, _, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "train.py"]))
    assert args.num_processes == config.num_processes
    if name == "fsdp":
        assert args.use_fsdp and config.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if name == "zero3":
        assert args.use_deepspeed and config.deepspeed_config["zero_stage"] == 3
    if name in ("ddp", "cpu_2proc"):
        assert args.multi_gpu
