"""Fixtures: small prompt files in the published layouts, written to each test's tmp_path."""

from __future__ import annotations

from pathlib import Path

import prompt_files
import pytest


@pytest.fixture
def luffy_parquet(tmp_path) -> Path:
    return prompt_files.luffy_parquet(tmp_path)


@pytest.fixture
def dypo_parquet(tmp_path) -> Path:
    return prompt_files.dypo_parquet(tmp_path)


@pytest.fixture
def openr1_parquet(tmp_path) -> Path:
    return prompt_files.openr1_parquet(tmp_path)


@pytest.fixture
def hf_dataset_dir(tmp_path) -> Path:
    return prompt_files.hf_dataset_dir(tmp_path)


@pytest.fixture
def hf_dataset_dict_dir(tmp_path) -> Path:
    return prompt_files.hf_dataset_dict_dir(tmp_path)
