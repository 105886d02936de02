"""Stable ids: short SHA-256 hashes of canonical JSON, identical across runs and machines.

A rerun computes the ids it would write and skips those already in the store, so ids must depend
only on what makes a row what it is, never on time, order or batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

_WS = re.compile(r"\s+")


def stable_hash(*parts: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of `parts`."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def normalise_problem(problem: str) -> str:
    """Collapse whitespace so that reformatted copies of a problem share an id."""
    return _WS.sub(" ", problem).strip()


def prompt_id(source: str, problem: str) -> str:
    return stable_hash("prompt", source, normalise_problem(problem))


def settings_hash(settings: dict[str, Any]) -> str:
    """Hash of generation or verifier settings (any JSON-able dict)."""
    return stable_hash("settings", settings)


def group_id(prompt_id: str, model: str, settings_hash: str, policy_version: str | None) -> str:
    """The k rollouts of one prompt by one policy version under one setting form a group."""
    return stable_hash("group", prompt_id, model, settings_hash, policy_version)


def trace_id(
    prompt_id: str, model: str, role: str, sample_idx: int, settings_hash: str, policy_version: str | None = None
) -> str:
    return stable_hash("trace", prompt_id, model, role, int(sample_idx), settings_hash, policy_version)


def verdict_id(trace_id: str, verifier_settings_hash: str) -> str:
    return stable_hash("verdict", trace_id, verifier_settings_hash)


def split_named_path(arg: str) -> tuple[str, str]:
    """`[NAME=]PATH` -> (NAME or "", PATH): the name a file or directory is stored under (a benchmark, a model,
    a run). An argument that exists as a path is a path even when it holds "=" (e.g. `runs/lr=1e-3`)."""
    name, sep, path = arg.partition("=")
    if not sep or os.path.exists(os.path.expanduser(arg)):
        return "", arg
    return name, path
