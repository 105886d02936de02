"""The offline trainer end to end on the tiny policy (float32, no autocast): micro-batch invariance,
the store's train tables, GAL's gradient, kill-and-resume across an epoch boundary through the real
CLI, a non-finite loss and a full disk leaving the last checkpoint intact."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_runs import (
    CLI_TIMEOUT_S,
    PROMPTS_PER_STEP,
    STEPS_PER_EPOCH,
    assert_one_line_error,
    checkpoint_weights,
    cli,
    cli_command,
    cli_env,
    latest_dir,
    make_store,
    max_abs_diff,
    model_weights,
    overrides,
    reset_accelerate,
    sets_args,
    step_lines,
    step_metrics,
    tmp_entries,
    train,
    tree_hashes,
)
from train_store import NO_TEACHER
from typer.testing import CliRunner

from dypo_data.errors import StoreError
from dypo_data.store.views import connect
from dypo_train.cli import app
from dypo_train.loop.trainer import TrainingError

TOL = 1e-5
COMPARED = ("loss/total", "loss/sft", "loss/rl", "loss/gal", "grad/norm")
PAUSER = Path(__file__).with_name("pausing_cli.py")
# AdamW turns float noise in near-zero gradients into updates of up to lr: at 1e-3 two float32 runs that agree
# to 5e-7 in loss end 4e-6 apart in weights; at 1e-4 the weights still move by ~2e-4 and agree to ~5e-7.
LR_COMPARED = "optim.lr=1e-4"


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir):
    return make_store(tmp_path_factory.mktemp("train-store") / "store", tiny_model_dir)


def sets(store, tiny_model_dir, out, name, *extra):
    return overrides(store.root, tiny_model_dir, out, name, *extra)


def assert_same_steps(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]], steps) -> None:
    for step in steps:
        for key in COMPARED:
            assert (key in a[step]) == (key in b[step]), (step, key)
            if key in a[step]:
                assert a[step][key] == pytest.approx(b[step][key], abs=TOL), (step, key, a[step][key], b[step][key])


# -- invariance ---------------------------------------------------------------------------------------------


def test_micro_batch_size_does_not_change_the_step(store, tiny_model_dir, tmp_path):
    """Whole-step denominators: micro-batches of 2 rows (each group alone, SFT rows paired) vs 8 give the same
    losses, gradient norm and weights."""
    runs = {}
    for micro in (2, 8):
        run_dir, history = train("dypo", sets(store, tiny_model_dir, tmp_path, f"micro{micro}", "run.max_steps=2",
                                              f"run.micro_batch_size={micro}", LR_COMPARED))
        runs[micro] = (run_dir, {i + 1: h for i, h in enumerate(history)})
    (dir2, h2), (dir8, h8) = runs[2], runs[8]
    assert all(k in h2[1] for k in COMPARED), sorted(h2[1])  # the step trains all three terms
    assert_same_steps(h2, h8, (1, 2))
    w0, w2, w8 = model_weights(tiny_model_dir), checkpoint_weights(dir2), checkpoint_weights(dir8)
    assert max_abs_diff(w2, w0) > 5e-5  # the weights moved ...
    assert max_abs_diff(w2, w8) < TOL  # ... the same way


# -- the store's train tables ------------------------------------------------------------------------------


def test_store_tables_record_every_step_and_route(store, tiny_model_dir, tmp_path):
    run_dir, history = train("dypo", sets(store, tiny_model_dir, tmp_path, "tables", "run.epochs=1"))
    assert len(history) == STEPS_PER_EPOCH
    metrics = step_metrics(store.root, run_dir.name)
    assert sorted(metrics) == [1, 2]
    for step, logged in metrics.items():
        for name in ("loss/total", "loss/sft", "loss/rl", "loss/gal", "tier/easy", "tier/mid", "tier/hard",
                     "tier/offline_ratio", "reward/mean", "grad/norm", "lr", "policy/entropy", "time/step"):
            assert name in logged, (step, name)
        for name in ("loss/total", "tier/offline_ratio", "grad/norm"):
            assert logged[name] == pytest.approx(history[step - 1][name], rel=1e-6)

    con = connect(store.root)
    samples = con.execute("SELECT s.step, s.prompt_id, s.group_id, s.tier, s.route, s.teacher_trace_id, s.n_rollouts, "
                          "s.n_correct, g.tier AS group_tier, g.k, g.n_correct AS group_correct "
                          "FROM train_samples s LEFT JOIN groups g USING (group_id) WHERE s.run_id = ? ORDER BY s.step",
                          [run_dir.name]).fetchall()
    pool = {r[0] for r in con.execute("SELECT trace_id FROM teacher_pool").fetchall()}
    scored = {r[0] for r in con.execute("SELECT group_id FROM groups WHERE tier <> 'unscored'").fetchall()}
    con.close()
    cols = ("step", "prompt_id", "group_id", "tier", "route", "teacher", "n_rollouts", "n_correct", "group_tier", "k", "group_correct")
    rows = [dict(zip(cols, r)) for r in samples]
    assert len(rows) == STEPS_PER_EPOCH * PROMPTS_PER_STEP
    assert {r["group_id"] for r in rows} == scored  # one epoch: every graded group once, no unscored one
    no_teacher = store.prompts[NO_TEACHER]["prompt_id"]
    expected = {"mid": "rl", "easy": "skip:easy"}
    for r in rows:
        assert r["tier"] == r["group_tier"] == store.tiers[r["group_id"]], r
        assert (r["n_rollouts"], r["n_correct"]) == (r["k"], r["group_correct"]), r
        if r["prompt_id"] == no_teacher:
            assert (r["tier"], r["route"], r["teacher"]) == ("hard", "skip:no_teacher", None), r
        elif r["tier"] == "hard":
            assert r["route"] == "sft" and r["teacher"] in pool, r  # a verified teacher trace is the target
        else:
            assert r["route"] == expected[r["tier"]] and r["teacher"] is None, r
    assert no_teacher in {r["prompt_id"] for r in rows}
    for step, logged in metrics.items():  # the step's counters agree with its rows
        mine = [r for r in rows if r["step"] == step]
        for tier in ("easy", "mid", "hard"):
            assert logged[f"tier/{tier}"] == sum(r["tier"] == tier for r in mine)
        assert logged["tier/offline_ratio"] == pytest.approx(sum(r["route"] == "sft" for r in mine) / PROMPTS_PER_STEP)
        assert logged["route/hard_without_teacher"] == sum(r["route"] == "skip:no_teacher" for r in mine)


# -- GAL has a gradient -------------------------------------------------------------------------------------


def test_gal_alone_moves_the_weights(store, tiny_model_dir, tmp_path):
    """alpha = 0 and gamma = 0: GAL is the only term (an early public DYPO detached it: no gradient)."""
    run_dir, history = train("dypo", sets(store, tiny_model_dir, tmp_path, "gal", "run.max_steps=1", "loss.alpha=0",
                                          "loss.gamma=0"))
    first = history[0]
    assert "loss/sft" not in first and "loss/rl" not in first
    # at step 1 the policy is its own reference: every pair's margin is 0 and -log sigmoid(0) = log 2
    assert first["loss/gal"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["loss/total"] == pytest.approx(first["loss/gal"], abs=1e-6)
    assert "gal/pair_acc" in first and "gal/margin" in first
    assert first["grad/norm"] > 1e-4
    assert max_abs_diff(checkpoint_weights(run_dir), model_weights(tiny_model_dir)) > 1e-4


# -- kill and resume through the CLI --------------------------------------------------------------------------


def run_args(store, tiny_model_dir, out, name, *extra) -> list[str]:
    return ["run", *sets_args(sets(store, tiny_model_dir, out, name, "run.epochs=2", "run.checkpoint_every=1", *extra))]


def wait_for_latest(run_dir: Path, name: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    pointer = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pointer.is_file() and pointer.read_text().strip() == name:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {name}: rc={proc.returncode}\n{proc.stdout.read()}\n{proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"no {name} after {timeout}s")


def test_kill_and_resume_at_the_epoch_boundary(store, tiny_model_dir, tmp_path):
    """4 steps (2 epochs of 2); SIGKILL once checkpoint 2 (the epoch boundary) is complete; `--resume` trains
    exactly steps 3 and 4, and the run matches an uninterrupted one. Then: a changed loss.alpha is refused, a
    finished run trains nothing more, and a longer run.epochs extends it."""
    out = tmp_path / "runs"
    straight = subprocess.Popen([*cli_command(), *run_args(store, tiny_model_dir, out, "straight")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=cli_env())
    # the pausing wrapper is the real CLI that sleeps after writing checkpoint 2, so the kill lands there
    killed = subprocess.Popen([sys.executable, str(PAUSER), *run_args(store, tiny_model_dir, out, "killed")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env(DYPO_TEST_PAUSE_AFTER_CHECKPOINT="2"))
    run_dir = out / "killed"
    try:
        wait_for_latest(run_dir, "step-000002", killed)
        # while it trains, a second launch of the same run fails at once naming the holder, and changes nothing
        before = tree_hashes(run_dir / "checkpoints", stamps=True)
        twice = cli("run", "--resume", str(run_dir))
        err = assert_one_line_error(twice, "training of run killed is already running in run directory", f"pid {killed.pid}")
        assert "--wait" not in err and "--resume" in err  # the trainer has no --wait
        assert tree_hashes(run_dir / "checkpoints", stamps=True) == before
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=60)
        stdout, stderr = straight.communicate(timeout=CLI_TIMEOUT_S)
    assert killed.returncode == -signal.SIGKILL
    assert straight.returncode == 0, stderr
    assert step_lines(stdout) == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert json.loads((latest_dir(run_dir) / "trainer_state.json").read_text())["step"] == 2
    assert sorted(step_metrics(store.root, "killed")) == [1, 2]  # the metrics of checkpointed steps are in the store

    resumed = cli("run", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert step_lines(resumed.stdout) == ["step 3/4", "step 4/4"]  # exactly the second epoch, nothing skipped
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 2
    assert latest_dir(run_dir).name == "step-000004" and tmp_entries(run_dir) == []

    a, b = step_metrics(store.root, "killed"), step_metrics(store.root, "straight")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert_same_steps(a, b, (1, 2, 3, 4))
    assert max_abs_diff(checkpoint_weights(run_dir), checkpoint_weights(out / "straight")) < TOL
    con = connect(store.root)
    order = con.execute("SELECT run_id, step, list(group_id ORDER BY group_id) FROM train_samples "
                        "WHERE run_id IN ('killed', 'straight') GROUP BY run_id, step").fetchall()
    con.close()
    groups = {(run_id, step): g for run_id, step, g in order}
    assert all(groups[("killed", s)] == groups[("straight", s)] for s in (1, 2, 3, 4))  # same data order
    assert set(groups[("killed", 3)] + groups[("killed", 4)]) == set(groups[("killed", 1)] + groups[("killed", 2)])

    # resuming with another objective is refused before anything runs
    changed = cli("run", "--resume", str(run_dir), "--set", "loss.alpha=0.8")
    assert_one_line_error(changed, "loss.alpha")
    # a finished run resumed trains nothing and leaves its checkpoint and metrics as they were
    before, rows_before = tree_hashes(latest_dir(run_dir), stamps=True), step_metrics(store.root, "killed")
    again = cli("run", "--resume", str(run_dir))
    assert again.returncode == 0, again.stderr
    assert step_lines(again.stdout) == [] and json.loads(again.stdout.strip().splitlines()[-1])["steps"] == 0
    assert tree_hashes(latest_dir(run_dir), stamps=True) == before  # not even rewritten with the same bytes
    assert step_metrics(store.root, "killed") == rows_before
    # run.epochs may change on resume: a third epoch trains steps 5 and 6
    longer = cli("run", "--resume", str(run_dir), "--set", "run.epochs=3")
    assert longer.returncode == 0, longer.stderr
    assert step_lines(longer.stdout) == ["step 5/6", "step 6/6"]


# -- a non-finite loss --------------------------------------------------------------------------------------


def test_non_finite_loss_stops_before_the_update(store, tiny_model_dir, tmp_path, monkeypatch):
    """A NaN loss at step 3: TrainingError, the weights in memory are those of checkpoint 2, and checkpoint 2
    (files and latest pointer) is exactly as written."""
    from dypo_train.loop import trainer as trainer_mod

    seen: dict = {"hashes": {}, "poison": False}
    real_step, real_loss, real_checkpoint = trainer_mod.Trainer.train_step, trainer_mod.micro_batch_loss, trainer_mod.Trainer.checkpoint

    def train_step(self, step, groups):
        seen["trainer"], seen["poison"] = self, step >= 2
        return real_step(self, step, groups)

    def micro_batch_loss(*args, **kwargs):
        loss, sums = real_loss(*args, **kwargs)
        if seen["poison"]:
            loss = loss * float("nan")
            sums = {k: v * float("nan") if k.startswith("loss/") else v for k, v in sums.items()}
        return loss, sums

    def checkpoint(self, step, store_metrics):
        path = real_checkpoint(self, step, store_metrics)
        seen["hashes"][step] = tree_hashes(path)
        return path

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", train_step)
    monkeypatch.setattr(trainer_mod, "micro_batch_loss", micro_batch_loss)
    monkeypatch.setattr(trainer_mod.Trainer, "checkpoint", checkpoint)
    with pytest.raises(TrainingError) as e:
        train("dypo", sets(store, tiny_model_dir, tmp_path, "nan", "run.max_steps=4", "run.checkpoint_every=1"))
    assert "non-finite" in e.value.message and e.value.hint
    run_dir = tmp_path / "nan"
    assert latest_dir(run_dir).name == "step-000002" and tmp_entries(run_dir) == []
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-")) == ["step-000001", "step-000002"]
    assert tree_hashes(latest_dir(run_dir)) == seen["hashes"][2]
    model = seen["trainer"].setup.model
    in_memory = {k: v.detach() for k, v in model.state_dict().items()}
    saved = checkpoint_weights(run_dir)
    assert max(float((in_memory[k] - saved[k]).abs().max()) for k in saved) == 0.0  # the bad step changed nothing
    assert sorted(step_metrics(store.root, "nan")) == [1, 2]


def test_non_finite_loss_through_the_cli(store, tiny_model_dir, tmp_path):
    """lr = 1e30: step 1 sends the weights to ~1e30, step 2's loss overflows; one line, non-zero exit, checkpoint 1 kept."""
    out = tmp_path / "runs"
    result = cli("run", *sets_args(sets(store, tiny_model_dir, out, "boom", "run.max_steps=4", "run.checkpoint_every=1",
                                        "optim.lr=1e30")))
    assert_one_line_error(result, "non-finite loss")
    run_dir = out / "boom"
    assert latest_dir(run_dir).name == "step-000001" and tmp_entries(run_dir) == []
    assert not (run_dir / "checkpoints" / "step-000002").exists()
    assert json.loads((latest_dir(run_dir) / "trainer_state.json").read_text())["step"] == 1
    assert all(math.isfinite(float(v.abs().max())) for v in checkpoint_weights(run_dir).values())


# -- a full disk ------------------------------------------------------------------------------------------------


def test_full_disk_at_checkpoint_is_one_line_and_keeps_the_previous(store, tiny_model_dir, tmp_path, monkeypatch):
    """ENOSPC while checkpoint 2's state is half written (injected into Accelerator.save_state), through the CLI's
    formatter (in-process): a StoreError line, no temporary directory left, checkpoint 1 untouched."""
    from accelerate import Accelerator

    real_save = Accelerator.save_state

    def save_state(self, output_dir=None, **kwargs):
        if "step-000002" in str(output_dir):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "optimizer.bin").write_bytes(b"\0" * 1024)  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    out = tmp_path / "runs"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reset_accelerate()
    try:
        result = CliRunner().invoke(app, ["run", *sets_args(sets(store, tiny_model_dir, out, "full", "run.max_steps=3",
                                                                 "run.checkpoint_every=1"))])
    finally:
        reset_accelerate()
        torch.set_num_threads(threads)
    assert result.exit_code != 0
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith("error: could not write checkpoint") and "No space left on device" in err, result.stderr
    assert "previous checkpoint is intact" in err
    assert isinstance(result.exception, SystemExit)  # the CLI's clean exit, not a crash
    run_dir = out / "full"
    assert tmp_entries(run_dir) == [] and latest_dir(run_dir).name == "step-000001"
    assert not (run_dir / "checkpoints" / "step-000002").exists()
    hashes = tree_hashes(latest_dir(run_dir))
    assert "model/model.safetensors" in hashes and "trainer_state.json" in hashes
    assert json.loads((latest_dir(run_dir) / "trainer_state.json").read_text())["step"] == 1


def test_full_disk_store_error_type(store, tiny_model_dir, tmp_path, monkeypatch):
    """The library raises StoreError (the CLI maps it to the line above)."""
    from transformers import PreTrainedModel

    real = PreTrainedModel.save_pretrained

    def save_pretrained(self, save_directory, *args, **kwargs):
        if ".tmp-step-000002" in str(save_directory):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, save_directory, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_pretrained)
    with pytest.raises(StoreError) as e:
        train("dypo", sets(store, tiny_model_dir, tmp_path, "full2", "run.max_steps=3", "run.checkpoint_every=1"))
    assert "No space left on device" in e.value.message
    run_dir = tmp_path / "full2"
    assert tmp_entries(run_dir) == [] and latest_dir(run_dir).name == "step-000001"


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False, capture_output=True).returncode == 0


def test_full_disk_on_a_real_tmpfs(store, tiny_model_dir, tmp_path):
    """output_dir on a small tmpfs: checkpoint 1 (4 copies' worth of the weights: model, state, AdamW's two moments)
    fits in 6 copies, checkpoint 2 does not."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, str(6 * (Path(tiny_model_dir) / "model.safetensors").stat().st_size)):
        pytest.skip("mounting a tmpfs needs root")
    try:
        result = cli("run", *sets_args(sets(store, tiny_model_dir, mnt, "tight", "run.max_steps=3", "run.checkpoint_every=1")))
        assert_one_line_error(result, "could not write checkpoint", "No space left on device")
        run_dir = mnt / "tight"
        assert tmp_entries(run_dir) == [] and latest_dir(run_dir).name == "step-000001"
        assert json.loads((latest_dir(run_dir) / "trainer_state.json").read_text())["step"] == 1
        assert checkpoint_weights(run_dir)  # complete and loadable
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


def test_a_full_tmpdir_is_one_line_naming_it(store, tiny_model_dir, tmp_path):
    """The run's working set goes to TMPDIR: a TMPDIR too small for it is a one-line error naming it, before any step."""
    mnt = tmp_path / "tiny-tmp"
    if not _mount_tmpfs(mnt, "8k"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        result = cli("run", *sets_args(sets(store, tiny_model_dir, tmp_path, "no-tmp", "run.max_steps=1")),
                     env=cli_env(TMPDIR=str(mnt)))
        assert_one_line_error(result, "no room for the run's working set", str(mnt), "TMPDIR")
        assert not (tmp_path / "no-tmp" / "checkpoints").exists()
        assert list(mnt.iterdir()) == []  # the partial working set is removed
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


def test_the_reader_thread_plans_the_step_it_read(store, tiny_model_dir, tmp_path):
    """The offline source plans each step in its reader thread (off the critical path) and hands that plan over
    only for the step and the very groups it was made of."""
    import threading

    from dypo_train.loop.offline import OfflineSource
    from dypo_train.recipes import resolve

    cfg = resolve("dypo", overrides=sets(store, tiny_model_dir, tmp_path, "ahead"))
    source = OfflineSource(cfg)
    try:
        source.plan_ahead(lambda step, groups: (step, threading.current_thread().name, [g.group_id for g in groups]))
        first, _ = source.groups(0)
        step, thread, units = source.planned(0, first)
        assert step == 0 and units == [g.group_id for g in first] and len(units) == PROMPTS_PER_STEP
        assert thread.startswith("store-reader") and thread != threading.current_thread().name
        assert source.planned(1, first) is None and source.planned(0, list(first)) is None
        second, _ = source.groups(1)  # read (and planned) while step 0 was being used
        assert source.planned(1, second)[0] == 1 and source.planned(0, first) is None
    finally:
        source.close()
