"""Bad input through the real CLI: one line naming the input and the fix, non-zero exit, store intact."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_run import assert_one_line_error, run

from dypo_data.store import read_table


@pytest.fixture
def problems(tmp_path) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"problem": f"What is {i}+1?", "answer": str(i + 1)}) for i in range(3)) + "\n")
    return path


def test_missing_prompt_file(tmp_path, cache):
    r = run("generate", "--store", str(tmp_path / "st"), "--prompts", str(tmp_path / "nope.jsonl"),
            "--policy", "tiny", cache=cache)
    assert_one_line_error(r, "nope.jsonl")


def test_malformed_jsonl_names_the_line(tmp_path, cache):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": oops\n')
    r = run("generate", "--store", str(tmp_path / "st"), "--prompts", str(bad), "--policy", "tiny", cache=cache)
    assert_one_line_error(r, "bad.jsonl", "2")


def test_prompt_without_gold_answer(tmp_path, cache):
    bad = tmp_path / "nogold.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    r = run("generate", "--store", str(tmp_path / "st"), "--prompts", str(bad), "--policy", "tiny", cache=cache)
    assert_one_line_error(r, "nogold.jsonl", "answer")


def test_unknown_format(tmp_path, cache, problems):
    r = run("generate", "--store", str(tmp_path / "st"), "--prompts", str(problems), "--format", "nonsense",
            "--policy", "tiny", cache=cache)
    assert_one_line_error(r, "nonsense")


def test_model_path_that_does_not_exist(tmp_path, cache, problems):
    r = run("generate", "--store", str(tmp_path / "st"), "--prompts", str(problems),
            "--policy", f"p={tmp_path / 'no_model'}", cache=cache)
    assert_one_line_error(r, "no_model")
    assert not (tmp_path / "st" / "traces").exists()


def test_unreachable_server(tmp_path, cache, problems):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    model_dir = run("models", "tiny", cache=cache).stdout.split("\t")[-1].strip()
    r = run("generate", "--store", str(tmp_path / "st"), "--prompts", str(problems), "--policy", f"p={model_dir}",
            "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1", "--request-timeout", "5", cache=cache)
    assert_one_line_error(r, f"127.0.0.1:{port}")
    # prompts were stored before the backend failed, and nothing half-written remains
    assert read_table(tmp_path / "st", "prompts").num_rows == 3
    assert read_table(tmp_path / "st", "traces").num_rows == 0


def test_foreign_parquet_in_store(tmp_path, cache):
    store = tmp_path / "st"
    (store / "traces").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1]}), store / "traces" / "stray.parquet")
    for cmd in (["verify"], ["stats"], ["sql", "SELECT 1"]):
        r = run(*cmd, "--store", str(store), cache=cache)
        assert_one_line_error(r, "stray.parquet", "move")
    assert (store / "traces" / "stray.parquet").exists()


def test_corrupt_parquet_in_store(tmp_path, cache):
    store = tmp_path / "st"
    (store / "verdicts").mkdir(parents=True)
    (store / "verdicts" / "part-broken.parquet").write_bytes(b"\x00" * 100)
    assert_one_line_error(run("stats", "--store", str(store), cache=cache), "part-broken.parquet")


def test_missing_store(tmp_path, cache):
    assert_one_line_error(run("stats", "--store", str(tmp_path / "none"), cache=cache), "does not exist")


def test_read_only_store(tmp_path, cache, problems):
    store = tmp_path / "mnt"
    store.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(store)]).returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        store.chmod(0o500)
    try:
        r = run("generate", "--store", str(store), "--prompts", str(problems), "--policy", "tiny", cache=cache)
        assert_one_line_error(r, "not writable", str(store))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(store)])


def test_no_model_named(tmp_path, cache, problems):
    assert_one_line_error(run("generate", "--store", str(tmp_path / "st"), "--prompts", str(problems), cache=cache),
                          "--teacher")


@pytest.mark.parametrize("command", [["stats"], ["verify"], ["sql", "SELECT 1"], ["generate", "--policy", "tiny"]])
def test_store_that_is_a_file(tmp_path, cache, command):
    store = tmp_path / "store.parquet"
    store.write_text("not a directory")
    r = run(*command[:1], "--store", str(store), *command[1:], cache=cache)
    assert_one_line_error(r, str(store), "is a file, not a directory", "--store")


def test_missing_gold_answer_fix_names_the_flag(tmp_path, cache):
    bad = tmp_path / "nogold.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    for command in (["import", str(bad)], ["generate", "--prompts", str(bad), "--policy", "tiny"]):
        r = run(*command, "--store", str(tmp_path / "st"), cache=cache)
        assert_one_line_error(r, "nogold.jsonl", "--skip-missing-answer")
    # the flag does what the fix says, in both commands
    r = run("import", str(bad), "--store", str(tmp_path / "st"), "--skip-missing-answer", cache=cache)
    assert r.returncode == 0, r.stderr
    assert read_table(tmp_path / "st", "prompts").num_rows == 1


@pytest.mark.parametrize("flags, fragments", [
    (["--backend", "openai", "--base-url", "notaurl"], ["notaurl", "--base-url http://"]),
    (["-k", "0"], ["-k 0", "pass -k 1 or more"]),
    (["--max-tokens", "0"], ["max_tokens=0", "--max-tokens"]),
])
def test_bad_generation_flags_name_the_fix(tmp_path, cache, problems, flags, fragments):
    r = run("generate", "--store", str(tmp_path / "st"), "--prompts", str(problems), "--policy", "p=tiny", *flags,
            cache=cache)
    err = assert_one_line_error(r, *fragments)
    assert "(fix: " in err
    assert not (tmp_path / "st" / "traces").exists()


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_verify_limit_below_one(tmp_path, cache, limit):
    from store_factory import build_store

    store = build_store(tmp_path / "st")
    r = run("verify", "--store", str(store.root), "--limit", limit, cache=cache)
    assert_one_line_error(r, f"limit={limit}", "--limit")
    assert len(read_table(store.root, "verdicts")) == len(store.verdicts)  # nothing written
