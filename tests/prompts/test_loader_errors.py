"""Bad input gives a DypoError that names the file (and row) and says what to do, on one line."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prompt_files import write_jsonl

from dypo_data.errors import ConfigError, DypoError, InputError
from dypo_data.prompts import ColumnMap, PromptSource, load_prompts


def load_error(src: PromptSource, kind: type[DypoError], *fragments: str) -> DypoError:
    with pytest.raises(kind) as info:
        load_prompts(src)
    text = str(info.value)
    assert "\n" not in info.value.message, text  # the CLI shows one line
    assert info.value.hint, text  # ... followed by the fix
    for fragment in fragments:
        assert fragment in text, text
    return info.value


def test_missing_file(tmp_path):
    load_error(PromptSource(str(tmp_path / "nope.jsonl")), InputError, "nope.jsonl", "does not exist")


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "1+1", "answer": "2"}\n\n{"problem": oops\n')
    load_error(PromptSource(str(path)), InputError, "bad.jsonl", "line 3", "not valid JSON")


def test_malformed_line_after_the_peeked_rows(tmp_path):
    path = tmp_path / "long.jsonl"
    lines = [json.dumps({"problem": f"q{i}", "answer": str(i)}) for i in range(100)]
    lines[89] = "{broken"
    path.write_text("\n".join(lines) + "\n")
    load_error(PromptSource(str(path)), InputError, "long.jsonl", "line 90")


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n[1, 2]\n')
    load_error(PromptSource(str(path)), InputError, "list.jsonl", "line 2", "not an object")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"problem": "café", "answer": "1"}\n'.encode("latin-1"))
    load_error(PromptSource(str(path)), InputError, "latin1.jsonl", "UTF-8")


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 64)
    load_error(PromptSource(str(path)), InputError, "broken.parquet", "Parquet")


def test_empty_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    load_error(PromptSource(str(tmp_path / "empty.jsonl")), InputError, "empty.jsonl", "no rows")
    pq.write_table(pa.table({"problem": pa.array([], pa.string()), "answer": pa.array([], pa.string())}),
                   tmp_path / "empty.parquet")
    load_error(PromptSource(str(tmp_path / "empty.parquet")), InputError, "empty.parquet", "no rows")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "problems.csv"
    path.write_text("problem,answer\n1+1,2\n")
    load_error(PromptSource(str(path)), InputError, "problems.csv", "unsupported", ".jsonl")


def test_directory_that_is_not_a_saved_dataset(tmp_path):
    load_error(PromptSource(str(tmp_path)), InputError, str(tmp_path), "save")


def test_missing_split_lists_the_splits(hf_dataset_dict_dir):
    load_error(PromptSource(str(hf_dataset_dict_dir), split="validation"), ConfigError, "validation", "train", "test")


def test_unknown_mapped_column_lists_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": "a", "answer": "1", "meta": {"level": 2}}])
    err = load_error(PromptSource(str(path), columns=ColumnMap(answer="gold")), ConfigError,
                     "'gold'", "columns.answer", "p.jsonl")
    assert "problem, answer, meta, meta.level" in err.message
    load_error(PromptSource(str(path), columns=ColumnMap(answer="meta.gold")), ConfigError, "meta.gold", "meta.level")


def test_unknown_nested_field_in_parquet(luffy_parquet):
    load_error(PromptSource(str(luffy_parquet), columns=ColumnMap(answer="reward_model.answer")), ConfigError,
               "reward_model.answer", "reward_model.ground_truth")


def test_format_that_lacks_its_columns(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "a", "answer": "1"}])
    load_error(PromptSource(str(path), format="verl"), ConfigError, "qa.jsonl", "verl", "columns.")


def test_undetectable_format(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"text": "1+1", "label": "2"}])
    load_error(PromptSource(str(path)), InputError, "odd.jsonl", "text, label", "format=")


def test_prompt_without_gold_answer_names_the_row(tmp_path):
    path = write_jsonl(tmp_path / "nogold.jsonl", [{"problem": "1+1", "answer": "2"}, {"problem": "2+2"}])
    load_error(PromptSource(str(path)), InputError, "nogold.jsonl", "line 2", "answer", "on_missing_answer")


def test_parquet_row_without_answer(tmp_path):
    pq.write_table(pa.table({"problem": ["a", "b", "c"], "answer": ["1", "2", None]}), tmp_path / "gaps.parquet")
    load_error(PromptSource(str(tmp_path / "gaps.parquet")), InputError, "gaps.parquet", "row 3")


def test_problem_missing(tmp_path):
    path = write_jsonl(tmp_path / "noq.jsonl", [{"problem": "", "answer": "1"}])
    load_error(PromptSource(str(path)), InputError, "noq.jsonl", "line 1", "problem")


def test_answer_that_is_an_object(tmp_path):
    path = write_jsonl(tmp_path / "obj.jsonl", [{"problem": "a", "answer": {"value": "1"}}])
    load_error(PromptSource(str(path)), InputError, "obj.jsonl", "line 1", "answer.value")


def test_bad_chat_messages(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"problem": "a", "answer": "1", "messages": [{"role": "user"}]}])
    load_error(PromptSource(str(path)), InputError, "chat.jsonl", "line 1", "content")
    path = write_jsonl(tmp_path / "nouser.jsonl", [{"problem": "a", "answer": "1",
                                                    "messages": [{"role": "system", "content": "x"}]}])
    load_error(PromptSource(str(path)), InputError, "nouser.jsonl", "no user message")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"format": "nonsense"}, "nonsense"),
        ({"on_missing_answer": "drop"}, "on_missing_answer"),
        ({"limit": 0}, "limit=0"),
        ({"split": ""}, "split"),
        ({"columns": {"answers": "x"}}, "answers"),
        ({"columns": {"problem": ".x"}}, "columns.problem"),
        ({"teacher_names": ("a", " ")}, "teacher name"),
    ],
)
def test_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        PromptSource("p.jsonl", **kwargs)
    assert fragment in str(info.value) and info.value.hint
