"""A `solution` column (MATH, NuminaMath, `dypo-data synth`) is imported as one teacher trace per row."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prompt_files import PROBLEMS, write_jsonl

from dypo_data.contracts import TRACES
from dypo_data.errors import ConfigError, InputError
from dypo_data.prompts import ColumnMap, PromptSource, load_prompts


def worked(answer: str) -> str:
    return f"First we work it out.\nSo the answer is $\\boxed{{{answer}}}$."


def math_rows() -> list[dict]:
    """MATH's layout: problem, level, type, solution (with the boxed answer inside), plus a gold answer."""
    return [{"problem": p, "level": "Level 1", "type": "Algebra", "solution": worked(a), "answer": a}
            for p, a in PROBLEMS]


def test_math_style_solution_becomes_a_reference_trace(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", math_rows())
    loaded = load_prompts(PromptSource(str(path)))
    assert loaded.traces.schema.equals(TRACES, check_metadata=True)
    traces = loaded.traces.to_pylist()
    assert [t["completion"] for t in traces] == [worked(a) for _, a in PROBLEMS]
    assert [t["prompt_id"] for t in traces] == loaded.prompts["prompt_id"].to_pylist()
    for t in traces:
        assert (t["role"], t["model"], t["sample_idx"], t["backend"]) == ("teacher", "reference", 0, "import")
        assert t["source"] == "import:problem_answer:math.jsonl:solution"
        assert t["group_id"] is None and t["policy_version"] is None and t["source_correct"] is None
        assert json.loads(t["sampling"]) == {"import": "solution", "column": "solution"}
    meta = json.loads(loaded.prompts["metadata"][0].as_py())
    assert meta == {"level": "Level 1", "type": "Algebra"}  # the solution lives in the traces table only


def test_teacher_name_column_mapping_and_stable_ids(tmp_path):
    rows = [{"problem": p, "answer": a, "worked": worked(a)} for p, a in PROBLEMS]
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    assert load_prompts(PromptSource(str(path))).traces.num_rows == 0  # no `solution` column: nothing imported
    mapped = load_prompts(PromptSource(str(path), columns=ColumnMap(solution="worked"), solution_teacher="gold-sol"))
    assert set(mapped.traces["model"].to_pylist()) == {"gold-sol"}
    assert mapped.traces["source"][0].as_py() == "import:problem_answer:w.jsonl:worked"
    # the id depends on the prompt and the teacher name only: the same solutions under another column
    # name, or from a Parquet copy, are the same traces
    renamed = write_jsonl(tmp_path / "w2.jsonl",
                          [{"problem": p, "answer": a, "solution": worked(a)} for p, a in PROBLEMS])
    again = load_prompts(PromptSource(str(renamed), source="w", solution_teacher="gold-sol"))
    assert again.traces["trace_id"].to_pylist() == mapped.traces["trace_id"].to_pylist()
    parquet = tmp_path / "w.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    from_parquet = load_prompts(PromptSource(str(parquet), columns={"solution": "worked"}, solution_teacher="gold-sol"))
    assert from_parquet.traces["trace_id"].to_pylist() == mapped.traces["trace_id"].to_pylist()
    other = load_prompts(PromptSource(str(path), columns=ColumnMap(solution="worked")))
    assert not set(other.traces["trace_id"].to_pylist()) & set(mapped.traces["trace_id"].to_pylist())


def test_rows_without_a_solution_import_without_a_trace(tmp_path):
    rows = math_rows() + [{"problem": "What is $3 \\cdot 3$?", "answer": "9", "solution": None},
                          {"problem": "What is $4 \\cdot 4$?", "answer": "16", "solution": "   "},
                          {"problem": "What is $5 \\cdot 5$?", "answer": "25"}]
    path = write_jsonl(tmp_path / "gaps.jsonl", rows)
    loaded = load_prompts(PromptSource(str(path)))
    assert loaded.prompts.num_rows == 6
    assert loaded.traces.num_rows == 3 and loaded.skipped["empty_solution"] == 3
    assert set(loaded.traces["prompt_id"].to_pylist()) == set(loaded.prompts["prompt_id"].to_pylist()[:3])


def test_question_answer_solution_and_traces_side_by_side(tmp_path):
    rows = [{"question": p, "answer": a, "solution": worked(a), "sols": [f"\\boxed{{{a}}}"]} for p, a in PROBLEMS]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    loaded = load_prompts(PromptSource(str(path), columns=ColumnMap(traces="sols")))
    assert loaded.format == "question_answer"
    models = loaded.traces["model"].to_pylist()
    assert sorted(models) == ["import"] * 3 + ["reference"] * 3
    assert len(set(loaded.traces["trace_id"].to_pylist())) == 6


def test_openr1_solution_is_metadata_unless_mapped(openr1_parquet):
    default = load_prompts(PromptSource(str(openr1_parquet)))
    assert set(default.traces["model"].to_pylist()) == {"openr1"}
    assert "solution" in json.loads(default.prompts["metadata"][0].as_py())
    mapped = load_prompts(PromptSource(str(openr1_parquet), columns=ColumnMap(solution="solution")))
    assert mapped.traces["model"].to_pylist().count("reference") == 3
    assert mapped.traces.num_rows == default.traces.num_rows + 3


def test_no_traces_skips_solutions(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", math_rows())
    assert load_prompts(PromptSource(str(path), import_traces=False)).traces.num_rows == 0


def test_a_solution_that_is_not_text_names_the_row(tmp_path):
    rows = math_rows()
    rows[1]["solution"] = ["two", "solutions"]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError) as info:
        load_prompts(PromptSource(str(path)))
    assert "line 2" in info.value.message and "bad.jsonl" in info.value.message
    assert "columns.solution" in info.value.hint


@pytest.mark.parametrize("name", ["", "  "])
def test_blank_solution_teacher(tmp_path, name):
    with pytest.raises(ConfigError) as info:
        PromptSource(str(tmp_path / "p.jsonl"), solution_teacher=name)
    assert "solution_teacher" in info.value.message and info.value.hint


def test_unknown_solution_column_is_a_config_error(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", math_rows())
    with pytest.raises(ConfigError) as info:
        load_prompts(PromptSource(str(path), columns=ColumnMap(solution="worked")))
    assert "columns.solution" in info.value.message
