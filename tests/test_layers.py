"""Imports only go downwards (STYLE.md); importing the package stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# layer -> project modules it must not import
FORBIDDEN = {
    "dypo_data.errors": ("dypo_data.",),
    "dypo_data.contracts": ("dypo_data.view", "dypo_data.store", "dypo_data.backends", "dypo_data.grading", "dypo_data.prompts",
                            "dypo_data.jobs", "dypo_data.cli", "dypo_data.models"),
    "dypo_data.store": ("dypo_data.view", "dypo_data.backends", "dypo_data.grading", "dypo_data.prompts", "dypo_data.jobs",
                        "dypo_data.cli", "dypo_data.models"),
    "dypo_data.prompts": ("dypo_data.view", "dypo_data.store", "dypo_data.backends", "dypo_data.jobs", "dypo_data.cli"),
    "dypo_data.grading": ("dypo_data.view", "dypo_data.store", "dypo_data.backends", "dypo_data.jobs", "dypo_data.cli"),
    "dypo_data.backends": ("dypo_data.view", "dypo_data.store", "dypo_data.jobs", "dypo_data.cli", "dypo_data.grading"),
    "dypo_data.models": ("dypo_data.view", "dypo_data.store", "dypo_data.jobs", "dypo_data.cli", "dypo_data.grading"),
    "dypo_data.evaluation": ("dypo_data.view", "dypo_data.store", "dypo_data.backends", "dypo_data.grading", "dypo_data.prompts",
                             "dypo_data.jobs", "dypo_data.cli", "dypo_data.models"),
    "dypo_data.jobs": ("dypo_data.cli", "dypo_data.view"),
    # the web viewer reads the store (contracts, store, errors); only the cli starts it
    "dypo_data.view": ("dypo_data.backends", "dypo_data.grading", "dypo_data.prompts", "dypo_data.jobs",
                       "dypo_data.cli", "dypo_data.models", "dypo_data.evaluation"),
    "dypo_train": ("dypo_data.cli", "dypo_data.jobs", "dypo_data.view"),
}
# third-party packages a layer must not import (even lazily)
FORBIDDEN_THIRD_PARTY = {
    "dypo_data.contracts": ("torch", "duckdb", "vllm", "math_verify"),
    "dypo_data.store": ("torch", "vllm", "math_verify"),
    "dypo_data.evaluation": ("torch", "duckdb", "vllm", "math_verify"),
    "dypo_data.view": ("torch", "vllm", "math_verify", "transformers"),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


SOURCES = sorted(p for pkg in ("dypo_data", "dypo_train") for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_downwards(path):
    mod = module_name(path)
    imported = imports_of(path)
    for layer, banned in FORBIDDEN.items():
        if mod == layer or mod.startswith(layer + "."):
            bad = sorted(i for i in imported if any(i.startswith(b) for b in banned) and not i.startswith(layer))
            assert not bad, f"{mod} (layer {layer}) imports {bad}"
    for layer, banned in FORBIDDEN_THIRD_PARTY.items():
        if mod.startswith(layer):
            bad = sorted(i for i in imported if i.split(".")[0] in banned)
            assert not bad, f"{mod} imports {bad}"


def test_nothing_imports_the_cli():
    for path in SOURCES:
        mod = module_name(path)
        if mod.startswith("dypo_data.cli"):
            continue
        assert not any(i.startswith("dypo_data.cli") for i in imports_of(path)), mod


def test_importing_the_cli_does_not_load_heavy_packages():
    code = (
        "import sys, dypo_data, dypo_data.cli.main\n"
        "heavy = [m for m in ('vllm', 'math_verify', 'torch', 'transformers', 'starlette', 'uvicorn') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""
