"""Bad input to `dypo-train run` through the real CLI: one `error: ... (fix: ...)` line on stderr,
a non-zero exit, no traceback, and no checkpoint written."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest
from train_runs import assert_one_line_error, cli, make_store, overrides, sets_args

from dypo_data.contracts import PROMPTS
from dypo_data.store import ShardWriter


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir):
    return make_store(tmp_path_factory.mktemp("cli-errors") / "store", tiny_model_dir)


def run(store_root, model_dir, out, *extra_sets, args=()):
    return cli("run", *args, *sets_args(overrides(store_root, model_dir, out, "r", "run.max_steps=1", *extra_sets)))


def assert_nothing_trained(out):
    assert not list(out.glob("*/checkpoints")), list(out.rglob("*"))


def test_store_with_prompts_only(store, tiny_model_dir, tmp_path):
    root = tmp_path / "prompts-only"
    ShardWriter(root, "t").write("prompts", pa.Table.from_pylist(store.prompts, schema=PROMPTS))
    r = run(root, tiny_model_dir, tmp_path / "out")
    assert_one_line_error(r, "no graded rollout groups", str(root), "dypo-data generate")
    assert_nothing_trained(tmp_path / "out")


def test_store_mixing_group_sizes(tiny_model_dir, tmp_path):
    root = tmp_path / "mixed"
    make_store(root, tiny_model_dir, k=4)
    make_store(root, tiny_model_dir, k=3, seed=1, policy="tiny-policy-k3")
    r = run(root, tiny_model_dir, tmp_path / "out")
    assert_one_line_error(r, "k=[3, 4]", "data.rollout_model")
    assert_nothing_trained(tmp_path / "out")
    # the hint works: one rollout model has one k
    ok = run(root, tiny_model_dir, tmp_path / "out2", "data.rollout_model=tiny-policy-k3", "run.prompts_per_step=4")
    assert ok.returncode == 0, ok.stderr


def test_policy_path_that_does_not_exist(store, tiny_model_dir, tmp_path):
    missing = tmp_path / "no-such-model"
    r = run(store.root, tiny_model_dir, tmp_path / "out", f"model.policy={missing}")
    assert_one_line_error(r, "no-such-model")
    assert_nothing_trained(tmp_path / "out")


def test_policy_directory_without_config(store, tiny_model_dir, tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    assert_one_line_error(run(store.root, tiny_model_dir, tmp_path / "out", f"model.policy={empty}"), "config.json")


def test_tokenizer_without_chat_template(store, tiny_model_dir, tmp_path):
    plain = tmp_path / "plain-model"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink()  # transformers 5 keeps the template here ...
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)  # ... older saves keep it here
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    r = run(store.root, tiny_model_dir, tmp_path / "out", f"model.policy={plain}")
    assert_one_line_error(r, "chat template", "plain-model")
    assert_nothing_trained(tmp_path / "out")


def test_recipe_file_with_unknown_key(store, tiny_model_dir, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("recipe: dypo\nloss:\n  alpah: 0.3\n")
    r = run(store.root, tiny_model_dir, tmp_path / "out", args=("--config", str(path)))
    assert_one_line_error(r, "loss.alpah", "'loss.alpha'")
    assert not (tmp_path / "out").exists()


def test_unknown_key_in_set(store, tiny_model_dir, tmp_path):
    assert_one_line_error(run(store.root, tiny_model_dir, tmp_path / "out", "optim.lrr=1e-3"), "optim.lrr", "'optim.lr'")


def test_unknown_recipe(store, tiny_model_dir, tmp_path):
    assert_one_line_error(run(store.root, tiny_model_dir, tmp_path / "out", args=("--recipe", "grpoo")), "grpoo", "'grpo'")


def test_alpha_outside_unit_interval(store, tiny_model_dir, tmp_path):
    r = run(store.root, tiny_model_dir, tmp_path / "out", "loss.alpha=1.5")
    assert_one_line_error(r, "loss.alpha=1.5", "[0, 1]")
    assert not (tmp_path / "out").exists()


def test_grpo_online_with_one_rollout(store, tiny_model_dir, tmp_path):
    r = run(store.root, tiny_model_dir, tmp_path / "out", "rollout.k=1", args=("--recipe", "grpo", "--mode", "online"))
    assert_one_line_error(r, "rollout.k=1", ">= 2")
    assert not (tmp_path / "out").exists()


def test_negative_staleness(store, tiny_model_dir, tmp_path):
    r = run(store.root, tiny_model_dir, tmp_path / "out", "rollout.max_staleness=-1", args=("--mode", "online"))
    assert_one_line_error(r, "rollout.max_staleness=-1", ">= 0")
    assert not (tmp_path / "out").exists()


def test_unreachable_rollout_server(store, tiny_model_dir, tmp_path):
    r = run(store.root, tiny_model_dir, tmp_path / "out", "rollout.backend=server", "rollout.base_urls=[http://127.0.0.1:9/v1]",
            args=("--mode", "online"))
    assert_one_line_error(r, "127.0.0.1:9", "start it with")
    assert_nothing_trained(tmp_path / "out")


def test_config_file_missing(store, tiny_model_dir, tmp_path):
    r = run(store.root, tiny_model_dir, tmp_path / "out", args=("--config", str(tmp_path / "absent.yaml")))
    assert_one_line_error(r, "absent.yaml", "does not exist")


def test_store_that_does_not_exist(tiny_model_dir, tmp_path):
    assert_one_line_error(run(tmp_path / "no-store", tiny_model_dir, tmp_path / "out"), "no-store")


def test_no_store_given(tiny_model_dir, tmp_path):
    r = cli("run", "--policy", str(tiny_model_dir), "--set", f"run.output_dir={tmp_path / 'out'}")
    assert_one_line_error(r, "data.store", "--store")


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    assert_one_line_error(cli("run", "--resume", str(tmp_path)), "not a run directory")


def test_type_error_in_set(store, tiny_model_dir, tmp_path):
    assert_one_line_error(run(store.root, tiny_model_dir, tmp_path / "out", "run.max_steps=abc"), "run.max_steps")


@pytest.fixture
def read_only_store(store, tmp_path):
    """The store seen through a read-only bind mount (root), or a directory without write permission."""
    import os
    import subprocess

    view = tmp_path / "ro-store"
    shutil.copytree(store.root, tmp_path / "copy")
    if os.geteuid() != 0:
        (tmp_path / "copy").chmod(0o500)
        yield tmp_path / "copy"
        (tmp_path / "copy").chmod(0o700)
        return
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(tmp_path / "copy"), str(view)], capture_output=True).returncode == 0
    if not mounted or subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True).returncode != 0:
        if mounted:
            subprocess.run(["umount", str(view)])
        pytest.skip("cannot make a read-only bind mount here")
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)])


def test_read_only_store_stops_before_training(read_only_store, tiny_model_dir, tmp_path):
    """Metrics are saved into the store: a store that cannot take them stops the run before its first step."""
    r = run(read_only_store, tiny_model_dir, tmp_path / "out")
    assert_one_line_error(r, "not writable", str(read_only_store))
    assert "step 1" not in r.stdout
    assert_nothing_trained(tmp_path / "out")
