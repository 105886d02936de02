"""Rows of a prompt file as Python dicts, streamed: JSONL, JSON, Parquet, or a saved Hugging Face dataset.

Each reader names where a row came from (`line 7`, `row 7`, both counted from 1) so errors can point at
it, and lists the input's columns and nested struct fields (as `parent.child`) before the first row is
used, so a column mapping can be checked up front.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dypo_data.errors import ConfigError, InputError

BATCH_ROWS = 1024
PEEK_ROWS = 64  # JSON rows whose keys make up the column list
SUPPORTED = ".jsonl, .json, .parquet, or a directory written by datasets' save_to_disk"
_HF_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")


@dataclass
class Rows:
    """A streamed input: its top-level columns, every nested path, and the rows with their locations."""

    file: str  # the path as the user gave it, for messages
    name: str  # file or directory name, for the trace source tag
    stem: str  # default prompt source
    columns: list[str]
    paths: list[str]  # columns plus nested struct fields, e.g. reward_model.ground_truth
    rows: Iterator[tuple[str, dict[str, Any]]]


def is_saved_dataset(path: str | Path) -> bool:
    """Whether `path` is a directory written by datasets' `save_to_disk` (one prompt set, not a folder of files)."""
    p = Path(path)
    return p.is_dir() and any((p / m).exists() for m in _HF_MARKERS)


READABLE_SUFFIXES = (".jsonl", ".json", ".parquet")


def open_rows(path: str, split: str) -> Rows:
    """Open `path` by its extension (or as a saved dataset directory)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"prompt file {path} does not exist",
                         "check the path; prompts come as JSONL, Parquet or a saved HF dataset directory")
    if p.is_dir():
        return _open_hf(p, path, split)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return _open_parquet(p, path)
    if suffix in (".jsonl", ".json"):
        return _open_json(p, path)
    raise InputError(f"cannot read {path}: unsupported file type {suffix or '(none)'!r}", f"convert it to {SUPPORTED}")


# --- JSON ------------------------------------------------------------------------------------------


def _json_paths(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    columns: dict[str, None] = {}
    paths: dict[str, None] = {}

    def walk(prefix: str, value: dict[str, Any]) -> None:
        for key, sub in value.items():
            paths[prefix + key] = None
            if isinstance(sub, dict):
                walk(f"{prefix}{key}.", sub)

    for row in rows:
        columns.update(dict.fromkeys(row))
        walk("", row)
    return list(columns), list(paths)


def _json_lines(p: Path, file: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        with p.open(encoding="utf-8-sig") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{file} line {number} is not valid JSON: {exc.msg} (column {exc.colno})",
                        "fix or remove that line; each line must be one JSON object",
                    ) from None
                if not isinstance(row, dict):
                    raise InputError(f"{file} line {number} is a JSON {type(row).__name__}, not an object",
                                     "write one JSON object per line, e.g. {\"problem\": ..., \"answer\": ...}")
                yield f"line {number}", row
    except UnicodeDecodeError as exc:
        raise InputError(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                         "re-encode it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror or exc}", "check the file's permissions") from None


def _json_array(p: Path, file: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{file} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                         "fix the file, or write it as JSONL (one object per line)") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"cannot read {file}: {exc}", "check the file and re-encode it as UTF-8") from None
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise InputError(f"{file} item {number} is a JSON {type(row).__name__}, not an object",
                             "make the file a list of objects with problem and answer fields")
        yield f"item {number}", row


def _starts_with_bracket(p: Path) -> bool:
    try:
        with p.open("rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}", "check the file's permissions") from None
    return head.startswith(b"[")


def _open_json(p: Path, file: str) -> Rows:
    """JSON Lines, or (for .json) a JSON array of objects."""
    it = _json_array(p, file) if p.suffix.lower() == ".json" and _starts_with_bracket(p) else _json_lines(p, file)
    peeked = list(itertools.islice(it, PEEK_ROWS))
    if not peeked:
        raise InputError(f"{file} has no rows", "give a file with one JSON object per prompt")
    columns, paths = _json_paths([row for _, row in peeked])
    return Rows(file, p.name, p.stem, columns, paths, itertools.chain(peeked, it))


# --- Arrow: Parquet and saved datasets ---------------------------------------------------------------


def _arrow_paths(schema: pa.Schema) -> list[str]:
    out: list[str] = []

    def walk(prefix: str, fields: list[pa.Field]) -> None:
        for f in fields:
            out.append(prefix + f.name)
            if pa.types.is_struct(f.type):
                walk(f"{prefix}{f.name}.", list(f.type))

    walk("", list(schema))
    return out


def _arrow_rows(batches: Iterator[Any], file: str) -> Iterator[tuple[str, dict[str, Any]]]:
    number = 0
    try:
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield f"row {number}", row
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read {file} after row {number}: {exc}",
                         "the file may be truncated; re-export it") from None


def _open_parquet(p: Path, file: str) -> Rows:
    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read Parquet file {file}: {exc}",
                         "check that it is a complete Parquet file; re-export it") from None
    if pf.metadata.num_rows == 0:
        raise InputError(f"{file} has no rows", "give a Parquet file with one row per prompt")
    schema = pf.schema_arrow
    return Rows(file, p.name, p.stem, schema.names, _arrow_paths(schema),
                _arrow_rows(pf.iter_batches(batch_size=BATCH_ROWS), file))


def _open_hf(p: Path, file: str, split: str) -> Rows:
    """A directory written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (then `split` picks one)."""
    if not any((p / m).exists() for m in _HF_MARKERS):
        raise InputError(f"{file} is a directory but not a saved Hugging Face dataset (no {' or '.join(_HF_MARKERS)})",
                         f"pass a file ({SUPPORTED})")
    import datasets  # heavy: only for saved datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as exc:  # datasets raises many kinds here (FileNotFoundError, ArrowInvalid, JSON errors)
        raise InputError(f"cannot load the saved dataset {file}: {exc}", "re-save it with save_to_disk") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ConfigError(f"split {split!r} is not in the saved dataset {file}; it has: {', '.join(ds)}",
                              f"set split to one of: {', '.join(ds)}")
        ds = ds[split]
    if len(ds) == 0:
        raise InputError(f"{file} has no rows", "give a dataset with one row per prompt")
    schema = ds.features.arrow_schema
    return Rows(file, p.name, p.name, schema.names, _arrow_paths(schema),
                _arrow_rows(ds.with_format("arrow").iter(batch_size=BATCH_ROWS), file))
