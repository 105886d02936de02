"""Load a prompt set, and the teacher traces it carries, into the prompts and traces tables.

    src = PromptSource("openr1.parquet")                    # format detected from the columns
    loaded = load_prompts(src)                              # loaded.prompts: PROMPTS, loaded.traces: TRACES
    load_prompts(PromptSource("gsm8k.jsonl", format="question_answer"))
    load_prompts(PromptSource("data.parquet", columns=ColumnMap(answer="meta.gold")))

Prompt ids hash the source and the whitespace-normalised problem, so the same file gives the same ids on
every machine, and a prompt repeated in the file is kept once (the first). Teacher solutions shipped with
the data (LUFFY's `target`, DYPO's two-teacher `target`, OpenR1's `generations`) become teacher traces
with backend "import"; their correctness flags, where the data has them, go to `source_correct`, and
the verifier still grades them like any other trace. A worked reference solution per row (a `solution`
column, as MATH and `dypo-data synth` write) becomes one more teacher trace, of model
`solution_teacher` ("reference" by default); its id depends only on the prompt and that name, so
importing it again, from any file or column, adds nothing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import pyarrow as pa

from dypo_data.contracts import PROMPTS, TRACES, Role, prompt_id, settings_hash, trace_id
from dypo_data.errors import ConfigError, InputError
from dypo_data.prompts.formats import (
    DEFAULT_INSTRUCTION,
    FORMAT_NAMES,
    FORMATS,
    ColumnMap,
    Format,
    RawTrace,
    build_messages,
    detect_format,
    get_path,
    gold_answer,
    pop_path,
    prompt_messages,
    resolve_columns,
    split_traces,
)
from dypo_data.prompts.readers import Rows, open_rows

FormatName = Literal["auto", "problem_answer", "question_answer", "verl", "openr1"]


@dataclass(frozen=True)
class PromptSource:
    """A prompt file and how to read it."""

    path: str = field(
        metadata={"help": "Prompt file: .jsonl, .json, .parquet, or a directory saved with datasets' save_to_disk."}
    )
    format: FormatName = field(
        default="auto",
        metadata={"help": "auto (detect from the columns), problem_answer, question_answer, "
                          "verl (LUFFY/DYPO Parquet) or openr1."},
    )
    columns: ColumnMap = field(
        default_factory=ColumnMap, metadata={"help": "Input columns for each field, overriding the format's defaults."}
    )
    source: str | None = field(
        default=None,
        metadata={"help": "Source name hashed into every prompt id. Default: the data_source column, "
                          "else the file name without extension."},
    )
    split: str = field(
        default="train",
        metadata={"help": "Split recorded with the prompts; also picks the split of a saved DatasetDict."},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System message for prompts built from a problem (input chat messages are kept as "
                          "they are)."},
    )
    instruction: str = field(
        default=DEFAULT_INSTRUCTION,
        metadata={"help": "Appended to the problem in the user message unless the problem already contains it; "
                          "'' for none."},
    )
    limit: int | None = field(default=None, metadata={"help": "Keep at most this many prompts (after de-duplication)."})
    import_traces: bool = field(
        default=True,
        metadata={"help": "Import the teacher solutions the data carries (columns.traces and columns.solution) "
                          "as teacher traces."},
    )
    teacher_name: str | None = field(
        default=None,
        metadata={"help": "Model name of imported traces when the data names none. Default: luffy-target (verl; "
                          "dypo-target for DYPO's list of traces), openr1, import."},
    )
    teacher_names: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Model names by position for rows with several traces from different teachers (DYPO's "
                          "two-teacher target), e.g. ('qwen', 'deepseek'); beats teacher_name, not names in the data."},
    )
    solution_teacher: str = field(
        default="reference",
        metadata={"help": "Model name of the teacher traces imported from the solution column (columns.solution): "
                          "one trace per row that has a solution."},
    )
    on_missing_answer: Literal["error", "skip"] = field(
        default="error", metadata={"help": "A row without a gold answer: error (name the row) or skip it (counted)."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))
        if isinstance(self.columns, dict):
            object.__setattr__(self, "columns", ColumnMap.from_dict(self.columns))
        if isinstance(self.teacher_names, (list, str)):
            names = [self.teacher_names] if isinstance(self.teacher_names, str) else self.teacher_names
            object.__setattr__(self, "teacher_names", tuple(names))
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError(f"path={self.path!r} must name a prompt file",
                              "give a .jsonl, .parquet or saved dataset path")
        if self.format not in FORMAT_NAMES:
            raise ConfigError(f"format={self.format!r} is not a prompt format",
                              f"use one of: {', '.join(FORMAT_NAMES)}")
        if not isinstance(self.columns, ColumnMap):
            raise ConfigError(f"columns={self.columns!r} must be a ColumnMap", "build it with ColumnMap(answer=...)")
        if self.on_missing_answer not in ("error", "skip"):
            raise ConfigError(f"on_missing_answer={self.on_missing_answer!r} is not a choice", "use 'error' or 'skip'")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit={self.limit} must be >= 1", "leave it unset to keep every prompt")
        if not self.split:
            raise ConfigError("split must not be empty", "use e.g. 'train' or 'test'")
        if self.source is not None and not self.source.strip():
            raise ConfigError(f"source={self.source!r} is blank", "give a name or leave it unset to use the file name")
        for name in (self.teacher_name, *self.teacher_names):
            if name is not None and (not isinstance(name, str) or not name.strip()):
                raise ConfigError(f"teacher name {name!r} is blank", "give each teacher a non-empty name")
        if not isinstance(self.solution_teacher, str) or not self.solution_teacher.strip():
            raise ConfigError(f"solution_teacher={self.solution_teacher!r} is blank",
                              "name the teacher of imported solutions, e.g. 'reference'")


@dataclass
class LoadedPrompts:
    prompts: pa.Table  # PROMPTS schema, one row per prompt_id (the first occurrence)
    traces: pa.Table  # TRACES schema: imported teacher traces (maybe empty)
    skipped: dict[str, int]  # reason -> count: missing_answer, duplicate, empty_trace, empty_solution
    format: str = ""  # the format used (after detection)


@dataclass(frozen=True)
class _Context:
    """What every row of one load shares."""

    src: PromptSource
    fmt: Format
    cols: dict[str, str | None]
    rows: Rows
    created_at: datetime
    trace_settings: str  # settings_hash of the import
    origin: str  # absolute path of the input

    @property
    def trace_source(self) -> str:
        return f"import:{self.fmt.name}:{self.rows.name}"

    def value(self, row: dict[str, Any], name: str) -> Any:
        """The row's value for ColumnMap field `name` (None when the field has no column)."""
        path = self.cols[name]
        return get_path(row, path) if path is not None else None


def load_prompts(src: PromptSource) -> LoadedPrompts:
    """Read `src`, build prompt rows (deduplicated by prompt id) and imported teacher traces."""
    rows = open_rows(src.path, src.split)
    fmt = FORMATS[src.format] if src.format != "auto" else detect_format(rows.columns, rows.file, src.columns)
    ctx = _Context(
        src=src, fmt=fmt, cols=resolve_columns(fmt, src.columns, rows.paths, rows.file), rows=rows,
        created_at=datetime.now(timezone.utc), trace_settings=settings_hash({"import": fmt.name}),
        origin=os.path.abspath(rows.file),
    )
    prompts: list[dict[str, Any]] = []
    traces: list[dict[str, Any]] = []
    seen: set[str] = set()
    skipped: Counter[str] = Counter()
    for where, row in rows.rows:
        prompt = _prompt_row(row, where, ctx)
        if prompt is None:
            skipped["missing_answer"] += 1
            continue
        if prompt["prompt_id"] in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(prompt["prompt_id"])
        prompts.append(prompt)
        if src.import_traces and ctx.cols["traces"] is not None:
            found = _trace_rows(row, where, prompt["prompt_id"], ctx)
            skipped["empty_trace"] += sum(1 for t in found if t is None)
            traces.extend(t for t in found if t is not None)
        if src.import_traces and ctx.cols["solution"] is not None:
            solution = _solution_row(row, where, prompt["prompt_id"], ctx)
            if solution is None:
                skipped["empty_solution"] += 1
            else:
                traces.append(solution)
        if src.limit is not None and len(prompts) >= src.limit:
            break
    return LoadedPrompts(
        prompts=pa.Table.from_pylist(prompts, schema=PROMPTS),
        traces=pa.Table.from_pylist(traces, schema=TRACES),
        skipped={k: v for k, v in skipped.items() if v},
        format=fmt.name,
    )


def _text(value: Any, what: str, at: str) -> str | None:
    """Stripped text, None for a missing or blank value; anything else is an error naming the row."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"the {what} at {at} is a {type(value).__name__}, not text",
                         f"map columns.{what} to a text column")
    return value.strip() or None


def _prompt_row(row: dict[str, Any], where: str, ctx: _Context) -> dict[str, Any] | None:
    """One PROMPTS row, or None when the row has no gold answer and on_missing_answer is 'skip'."""
    src, file = ctx.src, ctx.rows.file
    at = f"{where} of {file}"
    raw_messages = ctx.value(row, "messages")
    messages = prompt_messages(raw_messages, at) if raw_messages is not None else None
    problem = _text(ctx.value(row, "problem"), "problem", at)
    if problem is None and messages is not None:
        problem = messages[-1]["content"].strip() or None
    if problem is None:
        raise InputError(f"{file} has no problem text at {where}",
                         "fill it in, or map columns.problem to another column")
    answer, extra = gold_answer(ctx.value(row, "answer"), at)
    if answer is None:
        if src.on_missing_answer == "skip":
            return None
        raise InputError(
            f"{file} has no gold answer at {where} (column {ctx.cols['answer']!r})",
            "add the answer, map another column with --column answer=COLUMN, or pass --skip-missing-answer to skip "
            "such rows (on_missing_answer='skip')",
        )
    source = src.source or _text(ctx.value(row, "source"), "source", at) or ctx.rows.stem
    split = _text(ctx.value(row, "split"), "split", at) or src.split
    if messages is None:
        messages = build_messages(problem, system_prompt=src.system_prompt, instruction=src.instruction)
    return {
        "prompt_id": prompt_id(source, problem),
        "source": source,
        "split": split,
        "problem": problem,
        "answer": answer,
        "messages": messages,
        "metadata": json.dumps(_metadata(row, ctx, extra), ensure_ascii=False, default=str),
        "origin": ctx.origin,
        "created_at": ctx.created_at,
    }


def _metadata(row: dict[str, Any], ctx: _Context, extra: dict[str, Any]) -> dict[str, Any]:
    """The rest of the row: every column no field consumed, plus what reading added (answer_raw, input_id)."""
    rest = dict(row)
    for name in ctx.fmt.drop:
        rest.pop(name, None)
    for path in ctx.cols.values():
        if path is not None:
            pop_path(rest, path)
    input_id = ctx.value(row, "id")
    if input_id is not None:
        rest["input_id"] = input_id
    rest.update(extra)
    return rest


def _trace_rows(row: dict[str, Any], where: str, pid: str, ctx: _Context) -> list[dict[str, Any] | None]:
    """TRACES rows of the teacher solutions in `row` (None for an empty one, which is skipped)."""
    found = split_traces(
        ctx.value(row, "traces"),
        f"{where} of {ctx.rows.file}",
        correct=ctx.value(row, "correct"),
        finish_reason=ctx.value(row, "finish_reason"),
        teacher=ctx.value(row, "teacher"),
    )
    per_model: Counter[str] = Counter()  # sample_idx counts within (prompt, model)
    out: list[dict[str, Any] | None] = []
    for position, raw in enumerate(found):
        model = _teacher(raw, position, ctx)
        sample_idx = per_model[model]  # an empty trace keeps its index, so the others' ids do not shift
        per_model[model] += 1
        out.append(_trace_row(raw, pid, model, sample_idx, ctx) if raw.completion.strip() else None)
    return out


SOLUTION_SETTINGS = settings_hash({"import": "solution"})  # the same for every file, format and column


def _solution_row(row: dict[str, Any], where: str, pid: str, ctx: _Context) -> dict[str, Any] | None:
    """The TRACES row of the row's reference solution, or None when it has none (missing or blank)."""
    value = ctx.value(row, "solution")
    if value is not None and not isinstance(value, str):
        raise InputError(
            f"the solution at {where} of {ctx.rows.file} is a {type(value).__name__}, not text",
            "map columns.solution to a column of solution texts, or import with --no-traces (import_traces=False)",
        )
    if value is None or not value.strip():
        return None
    column = ctx.cols["solution"]
    raw = RawTrace(completion=value, teacher=None, multi=False, correct=None, finish_reason=None)
    return _trace_row(raw, pid, ctx.src.solution_teacher, 0, ctx, shash=SOLUTION_SETTINGS,
                      source=f"{ctx.trace_source}:{column}", sampling={"import": "solution", "column": column})


def _teacher(raw: RawTrace, position: int, ctx: _Context) -> str:
    """The data's name, else the configured name for this position, else the configured or format default."""
    names = ctx.src.teacher_names
    if raw.teacher:
        return raw.teacher
    if position < len(names):
        return names[position]
    if ctx.src.teacher_name:
        return ctx.src.teacher_name
    return (raw.multi and ctx.fmt.multi_teacher_default) or ctx.fmt.teacher_default


def _trace_row(raw: RawTrace, pid: str, model: str, sample_idx: int, ctx: _Context, *, shash: str | None = None,
               source: str | None = None, sampling: dict[str, Any] | None = None) -> dict[str, Any]:
    """One imported teacher trace; settings hash, source and sampling default to the import's."""
    role = Role.TEACHER.value
    shash = shash or ctx.trace_settings
    return {
        "trace_id": trace_id(pid, model, role, sample_idx, shash),
        "prompt_id": pid,
        "run_id": None,
        "role": role,
        "model": model,
        "model_path": None,
        "group_id": None,
        "sample_idx": sample_idx,
        "policy_version": None,
        "completion": raw.completion,
        "num_tokens": None,
        "finish_reason": raw.finish_reason,
        "sampling": json.dumps(sampling or {"import": ctx.fmt.name}),
        "settings_hash": shash,
        "backend": "import",
        "source": source or ctx.trace_source,
        "source_correct": raw.correct,
        "gen_seconds": None,
        "created_at": ctx.created_at,
        "prompt_token_ids": None,
        "completion_token_ids": None,
        "completion_logprobs": None,
    }
