"""The prompt formats people have, and how their columns map onto the prompts and traces tables.

A format is data, not code: the columns that identify it and, for each field of `ColumnMap`, the
columns to try in order. Everything a row holds is read through `ColumnMap` paths, so an unusual
file needs a mapping, never a new code path.

| format          | identified by        | problem           | answer                    | traces                |
|-----------------|----------------------|-------------------|---------------------------|-----------------------|
| openr1          | problem, generations | problem           | answer                    | generations (+ flags) |
| verl            | prompt, reward_model | last user message | reward_model.ground_truth | target (LUFFY / DYPO) |
| problem_answer  | problem, answer      | problem           | answer                    | solution              |
| question_answer | question, answer     | question          | answer (GSM8K "#### 42")  | solution              |

A `solution` column (MATH's worked solutions, `dypo-data synth`'s) holds one reference solution per
row; it becomes one teacher trace named by `PromptSource.solution_teacher`. OpenR1's `solution`
(NuminaMath's) stays metadata unless mapped with columns.solution=solution.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from typing import Any

from dypo_data.errors import ConfigError, InputError

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def _col(help_text: str) -> Any:
    return field(default=None, metadata={"help": help_text})


@dataclass(frozen=True)
class ColumnMap:
    """Which input column feeds each field. None means the format's default; `a.b` is field b of struct a."""

    problem: str | None = _col(
        "Column with the problem text. Default: problem (question for question_answer); with chat messages "
        "and no problem column, the content of the last user message."
    )
    answer: str | None = _col(
        "Column with the gold answer. Default: answer (reward_model.ground_truth for verl). A GSM8K-style "
        "answer '... #### 42' gives the gold 42."
    )
    messages: str | None = _col(
        "Column with chat messages (list of {role, content}) to keep as the prompt; trailing assistant turns "
        "are dropped. Default: prompt for verl, messages for problem_answer/question_answer when present."
    )
    source: str | None = _col(
        "Column naming each row's source (hashed into the prompt id). Default: data_source when present."
    )
    split: str | None = _col("Column naming each row's split; overrides PromptSource.split. Default: none.")
    id: str | None = _col(
        "Column with the input's own row id, kept as metadata.input_id. Default: id, unique_id or uuid when present."
    )
    traces: str | None = _col(
        "Column with teacher solutions to import: a string, a list of strings, or assistant messages whose "
        "content is a string or a list (one trace per teacher). Default: target for verl, generations for openr1."
    )
    correct: str | None = _col(
        "Column with a correctness flag per trace (bool or list of bool), stored as source_correct. "
        "Default: correctness_math_verify for openr1."
    )
    finish_reason: str | None = _col(
        "Column with a finish reason per trace (str or list). Default: finish_reasons for openr1."
    )
    teacher: str | None = _col(
        "Column naming the teacher of each trace (str or list). Default: teacher or teacher_model when present; "
        "a name/model key on target messages is used as well."
    )
    solution: str | None = _col(
        "Column with one worked reference solution per row (text that states its answer, e.g. in \\boxed{}), "
        "imported as a teacher trace named by solution_teacher; an empty or missing value imports none. "
        "Default: solution for problem_answer and question_answer; none for openr1 and verl."
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip() or value.startswith(".") or value.endswith("."):
                raise ConfigError(
                    f"columns.{f.name}={value!r} is not a column name",
                    "give a column name such as 'answer', a nested field such as 'reward_model.ground_truth', "
                    "or leave it unset",
                )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ColumnMap:
        """Build from a mapping (YAML, CLI); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown column map key(s) {unknown}", f"use only: {', '.join(sorted(known))}")
        return cls(**values)


COLUMN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ColumnMap))


@dataclass(frozen=True)
class Format:
    """A prompt format: how to recognise it and where its fields live (candidate columns, first present wins)."""

    name: str
    identified_by: tuple[str, ...]
    defaults: dict[str, tuple[str, ...]]
    teacher_default: str
    multi_teacher_default: str = ""  # for a message whose content lists several teachers' traces
    drop: tuple[str, ...] = ()  # columns left out of metadata: they only repeat what the tables hold


_COMMON = {
    "source": ("data_source",),
    "id": ("id", "unique_id", "uuid"),
    "teacher": ("teacher", "teacher_model"),
}

# Detection tries formats in this order: the more specific first.
FORMATS: dict[str, Format] = {
    "openr1": Format(
        name="openr1",
        identified_by=("problem", "generations"),
        defaults={**_COMMON, "problem": ("problem",), "answer": ("answer",), "traces": ("generations",),
                  "correct": ("correctness_math_verify",), "finish_reason": ("finish_reasons",)},
        teacher_default="openr1",
        drop=("messages",),  # the problem and one generation again, as an SFT conversation
    ),
    "verl": Format(
        name="verl",
        identified_by=("prompt", "reward_model"),
        defaults={**_COMMON, "messages": ("prompt",), "answer": ("reward_model.ground_truth",), "traces": ("target",)},
        teacher_default="luffy-target",
        multi_teacher_default="dypo-target",
    ),
    "problem_answer": Format(
        name="problem_answer",
        identified_by=("problem", "answer"),
        defaults={**_COMMON, "problem": ("problem",), "answer": ("answer",), "messages": ("messages",),
                  "solution": ("solution",)},
        teacher_default="import",
    ),
    "question_answer": Format(
        name="question_answer",
        identified_by=("question", "answer"),
        defaults={**_COMMON, "problem": ("question",), "answer": ("answer",), "messages": ("messages",),
                  "solution": ("solution",)},
        teacher_default="import",
    ),
}
FORMAT_NAMES: tuple[str, ...] = ("auto", *FORMATS)


def detect_format(columns: list[str], file: str, given: ColumnMap) -> Format:
    """The first format whose identifying columns are all present; with none, a full mapping means problem_answer."""
    for fmt in FORMATS.values():
        if all(c in columns for c in fmt.identified_by):
            return fmt
    if given.answer is not None and (given.problem is not None or given.messages is not None):
        return FORMATS["problem_answer"]
    known = "; ".join(f"{f.name}: {', '.join(f.identified_by)}" for f in FORMATS.values())
    raise InputError(
        f"cannot tell the format of {file} from its columns [{', '.join(columns)}] (known formats: {known})",
        "pass format=problem_answer (or another) and map the columns, e.g. columns.problem=text columns.answer=label",
    )


def resolve_columns(fmt: Format, given: ColumnMap, paths: list[str], file: str) -> dict[str, str | None]:
    """Field -> input path. A given path must exist; defaults are taken when present."""
    out: dict[str, str | None] = {}
    for name in COLUMN_FIELDS:
        path = getattr(given, name)
        if path is not None:
            if not has_path(paths, path):
                shown = ", ".join(paths[:60]) + (", ..." if len(paths) > 60 else "")
                raise ConfigError(
                    f"column {path!r} (columns.{name}) is not in {file}; available: {shown}",
                    f"set columns.{name} to one of the available columns (nested fields as parent.child)",
                )
            out[name] = path
        else:
            out[name] = next((c for c in fmt.defaults.get(name, ()) if has_path(paths, c)), None)
    if out["answer"] is None:
        raise ConfigError(
            f"{file} has no gold answer column for format {fmt.name} (looked for: "
            f"{', '.join(fmt.defaults.get('answer', ())) or 'none'}; columns: {', '.join(paths[:60])})",
            "map it with columns.answer=<column>",
        )
    if out["problem"] is None and out["messages"] is None:
        raise ConfigError(
            f"{file} has no problem column and no chat messages for format {fmt.name} "
            f"(columns: {', '.join(paths[:60])})",
            "map one with columns.problem=<column> or columns.messages=<column>",
        )
    return out


# --- nested paths ----------------------------------------------------------------------------------


def has_path(paths: list[str], path: str) -> bool:
    """Whether `path` names a known column or nested field; a numeric part indexes into a list."""
    if path in paths:
        return True
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i]) in paths
    return False


def get_path(row: dict[str, Any], path: str) -> Any:
    """The value at `path` (None when any step is missing); a column whose name has dots wins."""
    if path in row:
        return row[path]
    value: Any = row
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def pop_path(row: dict[str, Any], path: str) -> None:
    """Remove `path` from `row` in place (copying the structs it walks), dropping structs it empties."""
    if path in row:
        del row[path]
        return
    head, _, rest = path.partition(".")
    child = row.get(head)
    if not rest or not isinstance(child, dict):
        return
    child = dict(child)
    pop_path(child, rest)
    if child:
        row[head] = child
    else:
        del row[head]


# --- values ----------------------------------------------------------------------------------------

_GSM8K = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def gold_answer(value: Any, where: str) -> tuple[str | None, dict[str, Any]]:
    """The gold answer as text, and what to add to the metadata. None when the row has no answer."""
    if value is None:
        return None, {}
    if isinstance(value, int):  # bool included: "True"
        return str(value), {}
    if isinstance(value, float):
        return (str(int(value)) if value.is_integer() else repr(value)), {}
    if isinstance(value, (list, tuple)):
        if not value:
            return None, {}
        text, extra = gold_answer(value[0], where)
        return text, ({**extra, "answer_alternatives": list(value)} if len(value) > 1 else extra)
    if not isinstance(value, str):
        raise InputError(
            f"the answer at {where} is a {type(value).__name__}, not text",
            "map columns.answer to the field that holds the answer text, e.g. answer.value",
        )
    text = value.strip()
    if not text:
        return None, {}
    m = _GSM8K.search(text)
    if m is None:
        return text, {}
    gold = m.group(1).strip()
    if _THOUSANDS.match(gold):
        gold = gold.replace(",", "")
    return gold, {"answer_raw": value}


def prompt_messages(value: Any, where: str) -> list[dict[str, str]]:
    """Chat messages up to the last user turn, as {role, content} (assistant replies after it dropped)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise InputError(
            f"the chat messages at {where} are not a list of {{role, content}} objects",
            "map columns.messages to a list of messages, or unset it to build the prompt from the problem",
        )
    messages = []
    for m in value:
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise InputError(
                f"a chat message at {where} has role {role!r} and content of type {type(content).__name__}; "
                "both must be text",
                "fix the messages or unset columns.messages to build the prompt from the problem",
            )
        messages.append({"role": role, "content": content})
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise InputError(f"the chat messages at {where} have no user message", "give every prompt a user turn")
    return messages[: last_user + 1]


def build_messages(problem: str, *, system_prompt: str | None, instruction: str) -> list[dict[str, str]]:
    """[system], user: problem + instruction (not repeated when the problem already carries it)."""
    text = problem.strip()
    if instruction and instruction.strip() not in text:
        text = f"{text}\n{instruction.strip()}"
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*head, {"role": "user", "content": text}]


@dataclass(frozen=True)
class RawTrace:
    """One teacher solution found in a row, before it gets its ids."""

    completion: str
    teacher: str | None  # named by the data, if it names one
    multi: bool  # one of several traces listed in one message's content (DYPO's teachers)
    correct: bool | None
    finish_reason: str | None


def _per_trace(value: Any, i: int) -> Any:
    """The i-th entry of a per-trace list, or a scalar that holds for every trace."""
    if isinstance(value, (list, tuple)):
        return value[i] if i < len(value) else None
    return value


def _texts(value: Any, where: str) -> list[tuple[Any, Any, bool]]:
    """(text, teacher name from the message, listed in one message) for each trace in a target/generations value."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(value, None, False)]
    if isinstance(value, dict):
        if value.get("role") not in (None, "assistant"):
            return []
        name = value.get("model") or value.get("name") or value.get("teacher")
        content = value.get("content")
        if isinstance(content, (list, tuple)):  # several teachers' traces in one message (DYPO)
            return [(c, _per_trace(name, i), True) for i, c in enumerate(content)]
        return [(content, name, False)] if content is not None else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _texts(v, where)]
    raise InputError(
        f"the teacher solutions at {where} are a {type(value).__name__}, not text or messages",
        "map columns.traces to a text column, or set import_traces=False",
    )


def split_traces(
    value: Any, where: str, *, correct: Any = None, finish_reason: Any = None, teacher: Any = None
) -> list[RawTrace]:
    """Every trace in `value`, each with its flag, finish reason and teacher (per-trace lists are aligned)."""
    out = []
    for i, (text, name, multi) in enumerate(_texts(value, where)):
        if text is not None and not isinstance(text, str):
            raise InputError(
                f"teacher solution {i} at {where} is a {type(text).__name__}, not text",
                "map columns.traces to a text column, or set import_traces=False",
            )
        flag = _per_trace(correct, i)
        reason = _per_trace(finish_reason, i)
        named = name if isinstance(name, str) and name else _per_trace(teacher, i)
        out.append(RawTrace(
            completion=text or "",
            teacher=named if isinstance(named, str) and named else None,
            multi=multi,
            correct=flag if isinstance(flag, bool) else None,
            finish_reason=str(reason) if reason is not None else None,
        ))
    return out
