"""Prompt loading: every published layout, stable ids, column mapping, imported teacher traces."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prompt_files import BENCHMARKS, DATA, PROBLEMS, SYSTEM, write_jsonl

from dypo_data.contracts import PROMPTS, TRACES, prompt_id, settings_hash, trace_id
from dypo_data.prompts import DEFAULT_INSTRUCTION, ColumnMap, PromptSource, load_prompts


def meta(table: pa.Table, i: int = 0) -> dict:
    return json.loads(table["metadata"][i].as_py())


def check_schemas(loaded) -> None:
    assert loaded.prompts.schema.equals(PROMPTS, check_metadata=True)
    assert loaded.traces.schema.equals(TRACES, check_metadata=True)


# --- formats -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["math500", "aime24", "aime25", "amc2023", "minervamath"])
def test_benchmark_jsonl(name):
    path = BENCHMARKS / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    loaded = load_prompts(PromptSource(str(path)))
    check_schemas(loaded)
    assert loaded.format == "problem_answer"
    assert loaded.prompts.num_rows + loaded.skipped.get("duplicate", 0) == len(rows)
    assert loaded.traces.num_rows == 0
    assert set(loaded.prompts["source"].to_pylist()) == {name}
    assert loaded.prompts["answer"].to_pylist()[:5] == [str(r["answer"]).strip() for r in rows[:5]]


def test_math500_keeps_the_instruction_once():
    loaded = load_prompts(PromptSource(str(BENCHMARKS / "math500.jsonl")))
    assert loaded.prompts.num_rows == 500
    for problem, messages in zip(loaded.prompts["problem"].to_pylist(), loaded.prompts["messages"].to_pylist()):
        assert [m["role"] for m in messages] == ["user"]
        assert messages[0]["content"].count(DEFAULT_INSTRUCTION) == 1  # the file already carries it
        assert messages[0]["content"] == problem


def test_problem_answer_builds_messages_with_system_prompt_and_instruction(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": "What is $2+2$?", "answer": 4, "level": 1}])
    loaded = load_prompts(PromptSource(str(path), system_prompt="You are a careful mathematician."))
    row = loaded.prompts.to_pylist()[0]
    assert row["answer"] == "4"  # a JSON number becomes text
    assert row["messages"] == [
        {"role": "system", "content": "You are a careful mathematician."},
        {"role": "user", "content": f"What is $2+2$?\n{DEFAULT_INSTRUCTION}"},
    ]
    assert json.loads(row["metadata"]) == {"level": 1}
    assert row["split"] == "train" and row["origin"] == str(path)
    assert row["created_at"] is not None and row["created_at"].tzinfo is not None
    custom = load_prompts(PromptSource(str(path), instruction="Answer with a number."))
    assert custom.prompts["messages"][0].as_py()[0]["content"] == "What is $2+2$?\nAnswer with a number."
    bare = load_prompts(PromptSource(str(path), instruction=""))
    assert bare.prompts["messages"][0].as_py()[0]["content"] == "What is $2+2$?"


def test_gsm8k_style_jsonl():
    loaded = load_prompts(PromptSource(str(DATA / "gsm8k_sample.jsonl")))
    check_schemas(loaded)
    assert loaded.format == "question_answer"
    assert loaded.prompts["answer"].to_pylist() == ["18", "75", "1260", "6"]  # "#### 1,260" -> 1260
    assert meta(loaded.prompts)["answer_raw"].endswith("#### 18")
    assert loaded.prompts["problem"][0].as_py().startswith("A baker fills 14 trays")


def test_luffy_parquet(luffy_parquet):
    loaded = load_prompts(PromptSource(str(luffy_parquet)))
    check_schemas(loaded)
    assert loaded.format == "verl"
    prompts = loaded.prompts.to_pylist()
    assert [p["answer"] for p in prompts] == [a for _, a in PROBLEMS]
    assert [p["problem"] for p in prompts] == [p for p, _ in PROBLEMS]  # the last user message
    assert prompts[0]["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROBLEMS[0][0]}]
    assert {p["source"] for p in prompts} == {"openr1"}  # data_source
    # the rest of the row stays, minus what became fields
    assert meta(loaded.prompts) == {"ability": "math", "reward_model": {"style": "rule"},
                                    "extra_info": {"index": 0, "split": "default"}}

    traces = loaded.traces.to_pylist()
    assert len(traces) == 3
    shash = settings_hash({"import": "verl"})
    for t, p, (_, answer) in zip(traces, prompts, PROBLEMS):
        assert t["prompt_id"] == p["prompt_id"]
        assert (t["role"], t["model"], t["backend"], t["sample_idx"]) == ("teacher", "luffy-target", "import", 0)
        assert t["source"] == "import:verl:openr1.parquet"
        assert t["settings_hash"] == shash
        assert t["trace_id"] == trace_id(p["prompt_id"], "luffy-target", "teacher", 0, shash)
        assert t["completion"].endswith(f"\\boxed{{{answer}}}$.")
        assert t["source_correct"] is None and t["num_tokens"] is None and t["completion_token_ids"] is None


def test_dypo_two_teacher_target(dypo_parquet):
    loaded = load_prompts(PromptSource(str(dypo_parquet)))
    check_schemas(loaded)
    traces = loaded.traces.to_pylist()
    assert len(traces) == 6
    assert [(t["model"], t["sample_idx"]) for t in traces[:2]] == [("dypo-target", 0), ("dypo-target", 1)]
    assert "teacher A" in traces[0]["completion"] and "teacher B" in traces[1]["completion"]
    assert len({t["trace_id"] for t in traces}) == 6

    named = load_prompts(PromptSource(str(dypo_parquet), teacher_names=("qwen", "r1"))).traces.to_pylist()
    assert [(t["model"], t["sample_idx"]) for t in named[:2]] == [("qwen", 0), ("r1", 0)]
    assert "teacher B" in named[1]["completion"]


def test_teacher_name_from_the_data_wins(tmp_path):
    rows = [{"problem": "1+1?", "answer": "2", "response": "It is \\boxed{2}.", "teacher": "big-model"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    loaded = load_prompts(PromptSource(str(path), columns=ColumnMap(traces="response"), teacher_name="fallback"))
    assert loaded.traces["model"].to_pylist() == ["big-model"]
    assert loaded.traces["source"].to_pylist() == ["import:problem_answer:t.jsonl"]
    assert "teacher" not in meta(loaded.prompts) and "response" not in meta(loaded.prompts)


def test_openr1_parquet(openr1_parquet):
    loaded = load_prompts(PromptSource(str(openr1_parquet)))
    check_schemas(loaded)
    assert loaded.format == "openr1"
    row = loaded.prompts.to_pylist()[0]
    assert row["messages"] == [{"role": "user", "content": f"{PROBLEMS[0][0]}\n{DEFAULT_INSTRUCTION}"}]
    extra = json.loads(row["metadata"])
    assert extra["input_id"] == "uuid-0" and extra["source"] == "olympiads"
    assert not {"generations", "messages", "correctness_math_verify", "finish_reasons", "uuid"} & set(extra)

    traces = loaded.traces.to_pylist()
    assert len(traces) == 6
    assert [t["source_correct"] for t in traces] == [True, False] * 3
    assert [t["finish_reason"] for t in traces[:4]] == ["stop", "length", None, None]
    assert {t["model"] for t in traces} == {"openr1"} and [t["sample_idx"] for t in traces[:2]] == [0, 1]
    assert traces[0]["source"] == "import:openr1:openr1_default.parquet"

    assert load_prompts(PromptSource(str(openr1_parquet), import_traces=False)).traces.num_rows == 0
    renamed = load_prompts(PromptSource(str(openr1_parquet), teacher_name="deepseek-r1")).traces
    assert set(renamed["model"].to_pylist()) == {"deepseek-r1"}


def test_saved_hf_dataset(hf_dataset_dir):
    loaded = load_prompts(PromptSource(str(hf_dataset_dir)))
    check_schemas(loaded)
    assert loaded.format == "problem_answer"
    assert loaded.prompts["source"].to_pylist() == ["hf_problems"] * 3
    assert meta(loaded.prompts) == {"level": "Level 1"}


def test_saved_hf_dataset_dict_picks_the_split(hf_dataset_dict_dir):
    train = load_prompts(PromptSource(str(hf_dataset_dict_dir)))
    test = load_prompts(PromptSource(str(hf_dataset_dict_dir), split="test"))
    assert train.prompts.num_rows == 3 and test.prompts.num_rows == 1
    assert test.prompts["answer"].to_pylist() == ["6"] and test.prompts["split"].to_pylist() == ["test"]


def test_json_array_file(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([{"question": "2*3?", "answer": "#### 6"}]))
    assert load_prompts(PromptSource(str(path))).prompts["answer"].to_pylist() == ["6"]


def test_utf8_bom_is_ignored(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"problem": "caf\u00e9 costs 3 + 4?", "answer": "7"}).encode() + b"\n")
    assert load_prompts(PromptSource(str(path))).prompts["problem"].to_pylist() == ["caf\u00e9 costs 3 + 4?"]


def test_chat_messages_in_jsonl_are_kept_without_the_reply(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 3*3."},
                {"role": "assistant", "content": "9"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"problem": "Compute 3*3.", "answer": "9", "messages": messages}])
    loaded = load_prompts(PromptSource(str(path), system_prompt="ignored for input messages"))
    assert loaded.prompts["messages"][0].as_py() == messages[:2]


def test_format_override(tmp_path):
    rows = [{"problem": "unused", "question": "How many legs do 3 cats have?", "answer": "12"}]
    path = write_jsonl(tmp_path / "both.jsonl", rows)
    assert load_prompts(PromptSource(str(path))).prompts["problem"][0].as_py() == "unused"
    forced = load_prompts(PromptSource(str(path), format="question_answer"))
    assert forced.format == "question_answer"
    assert forced.prompts["problem"][0].as_py() == "How many legs do 3 cats have?"


def test_ground_truth_list_and_numbers(tmp_path):
    rows = [{"problem": "a", "answer": ["72"]}, {"problem": "b", "answer": 3.0}, {"problem": "c", "answer": ["1", "one"]}]
    loaded = load_prompts(PromptSource(str(write_jsonl(tmp_path / "g.jsonl", rows))))
    assert loaded.prompts["answer"].to_pylist() == ["72", "3", "1"]
    assert meta(loaded.prompts, 2)["answer_alternatives"] == ["1", "one"]


def test_limit_duplicates_and_source(tmp_path):
    rows = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(5)]
    rows.insert(2, {"problem": "What  is 0 +\n0?", "answer": "0"})  # the first problem again, reformatted
    path = write_jsonl(tmp_path / "dups.jsonl", rows)
    loaded = load_prompts(PromptSource(str(path)))
    assert loaded.prompts.num_rows == 5 and loaded.skipped == {"duplicate": 1}
    assert loaded.prompts["problem"][0].as_py() == "What is 0 + 0?"  # the first occurrence is kept
    limited = load_prompts(PromptSource(str(path), limit=3))
    assert limited.prompts["answer"].to_pylist() == ["0", "2", "4"]
    named = load_prompts(PromptSource(str(path), source="mine", split="test"))
    assert set(named.prompts["source"].to_pylist()) == {"mine"} and set(named.prompts["split"].to_pylist()) == {"test"}


def test_skip_rows_without_answer(tmp_path):
    rows = [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": None}, {"problem": "c", "answer": "  "},
            {"problem": "d"}, {"problem": "e", "answer": "5"}]
    loaded = load_prompts(PromptSource(str(write_jsonl(tmp_path / "gaps.jsonl", rows)), on_missing_answer="skip"))
    assert loaded.prompts["problem"].to_pylist() == ["a", "e"]
    assert loaded.skipped == {"missing_answer": 3}


def test_empty_traces_are_skipped_and_counted(tmp_path):
    rows = [{"problem": "p", "answer": "1", "generations": ["", "The answer is \\boxed{1}."],
             "correctness_math_verify": [False, True]}]
    loaded = load_prompts(PromptSource(str(write_jsonl(tmp_path / "r1.jsonl", rows))))
    assert loaded.format == "openr1"
    assert loaded.skipped == {"empty_trace": 1}
    assert loaded.traces.select(["sample_idx", "source_correct"]).to_pylist() == [{"sample_idx": 1, "source_correct": True}]


# --- stable ids -----------------------------------------------------------------------------------------


def test_ids_are_stable_and_ignore_whitespace(tmp_path):
    rows = [{"problem": "Find $x$ if $2x = 6$.", "answer": "3"}, {"problem": "What is 7 squared?", "answer": "49"}]
    a = load_prompts(PromptSource(str(write_jsonl(tmp_path / "set.jsonl", rows))))
    b = load_prompts(PromptSource(str(write_jsonl(tmp_path / "set.jsonl", rows))))
    assert a.prompts["prompt_id"].to_pylist() == b.prompts["prompt_id"].to_pylist()
    assert a.prompts["prompt_id"][0].as_py() == prompt_id("set", "Find $x$ if $2x = 6$.")

    spaced = [{"problem": "  Find $x$  if\n$2x = 6$. ", "answer": "3"}, rows[1]]
    (tmp_path / "other").mkdir()
    c = load_prompts(PromptSource(str(write_jsonl(tmp_path / "other" / "set.jsonl", spaced))))
    assert c.prompts["prompt_id"].to_pylist() == a.prompts["prompt_id"].to_pylist()
    d = load_prompts(PromptSource(str(tmp_path / "set.jsonl"), source="elsewhere"))
    assert set(d.prompts["prompt_id"].to_pylist()).isdisjoint(a.prompts["prompt_id"].to_pylist())


def test_same_rows_give_same_ids_from_jsonl_and_parquet(tmp_path):
    rows = [{"problem": p, "answer": a} for p, a in PROBLEMS]
    jsonl = load_prompts(PromptSource(str(write_jsonl(tmp_path / "x.jsonl", rows))))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    parquet = load_prompts(PromptSource(str(tmp_path / "x.parquet")))
    assert jsonl.prompts["prompt_id"].to_pylist() == parquet.prompts["prompt_id"].to_pylist()


def test_imported_trace_ids_are_stable(openr1_parquet):
    first = load_prompts(PromptSource(str(openr1_parquet))).traces["trace_id"].to_pylist()
    again = load_prompts(PromptSource(str(openr1_parquet))).traces["trace_id"].to_pylist()
    assert first == again and len(set(first)) == len(first)


# --- column mapping -------------------------------------------------------------------------------------


def test_dotted_paths_in_jsonl(tmp_path):
    rows = [{"q": {"text": "What is 5 - 2?", "lang": "en"}, "meta": {"gold": "3", "id": "a1"}, "tag": "x"}]
    path = write_jsonl(tmp_path / "nested.jsonl", rows)
    loaded = load_prompts(PromptSource(str(path), columns=ColumnMap(problem="q.text", answer="meta.gold", id="meta.id")))
    assert loaded.format == "problem_answer"  # no known layout, but the mapping says where everything is
    row = loaded.prompts.to_pylist()[0]
    assert (row["problem"], row["answer"]) == ("What is 5 - 2?", "3")
    assert json.loads(row["metadata"]) == {"q": {"lang": "en"}, "tag": "x", "input_id": "a1"}


def test_dotted_paths_in_parquet_structs(tmp_path):
    table = pa.table({
        "body": pa.array([{"statement": "Compute 6/3.", "origin": "book"}]),
        "label": pa.array([{"final": "2", "explanation": "six over three"}]),
        "src": ["textbook"],
    })
    pq.write_table(table, tmp_path / "structs.parquet")
    src = PromptSource(str(tmp_path / "structs.parquet"), format="problem_answer",
                       columns={"problem": "body.statement", "answer": "label.final", "source": "src"})
    assert isinstance(src.columns, ColumnMap)
    row = load_prompts(src).prompts.to_pylist()[0]
    assert (row["problem"], row["answer"], row["source"]) == ("Compute 6/3.", "2", "textbook")
    assert json.loads(row["metadata"]) == {"body": {"origin": "book"}, "label": {"explanation": "six over three"}}


def test_split_and_trace_columns_by_mapping(tmp_path):
    rows = [{"problem": "p1", "answer": "1", "part": "dev", "sols": ["s1", "s2"], "ok": [True, None]}]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    loaded = load_prompts(PromptSource(str(path), columns=ColumnMap(split="part", traces="sols", correct="ok")))
    assert loaded.prompts["split"].to_pylist() == ["dev"]
    assert loaded.traces.select(["completion", "source_correct", "model"]).to_pylist() == [
        {"completion": "s1", "source_correct": True, "model": "import"},
        {"completion": "s2", "source_correct": None, "model": "import"},
    ]


def test_list_index_in_path(luffy_parquet):
    loaded = load_prompts(PromptSource(str(luffy_parquet), columns=ColumnMap(traces="target.0.content")))
    assert loaded.traces.num_rows == 3
