"""The `[NAME=]PATH` convention shared by --prompts, --run, --model and eval.prompts."""

from __future__ import annotations

from dypo_data.contracts import split_named_path
from dypo_train.eval.periodic import parse_sets


def test_a_name_before_the_first_equals_sign_names_the_path(tmp_path):
    assert split_named_path("aime=../shared/benchmarks/aime24.jsonl") == ("aime", "../shared/benchmarks/aime24.jsonl")
    assert split_named_path("a=b=c") == ("a", "b=c")
    assert split_named_path(str(tmp_path / "x.jsonl")) == ("", str(tmp_path / "x.jsonl"))


def test_an_existing_path_with_an_equals_sign_is_a_path_not_a_name(tmp_path):
    run = tmp_path / "lr=1e-3"
    run.mkdir()
    assert split_named_path(str(run)) == ("", str(run))
    data = tmp_path / "k=8.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n')
    assert parse_sets([str(data), f"named={data}"]) == [("k=8", str(data)), ("named", str(data))]
