"""VerifierConfig: validation, help on every field, and the settings that key verdicts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dypo_data.errors import ConfigError
from dypo_data.grading import VerifierConfig, verifier_version


def test_every_field_has_help():
    for f in dataclasses.fields(VerifierConfig):
        assert f.metadata.get("help"), f.name


@pytest.mark.parametrize("kwargs,fragment", [
    ({"workers": 0}, "workers=0"),
    ({"workers": 1.5}, "workers=1.5"),
    ({"timeout_s": 0}, "timeout_s=0"),
    ({"timeout_s": float("inf")}, "timeout_s=inf"),
    ({"float_rounding": -1}, "float_rounding=-1"),
    ({"numeric_precision": 0}, "numeric_precision=0"),
    ({"answer_position": "middle"}, "answer_position='middle'"),
    ({"queue_depth": 0}, "queue_depth=0"),
    ({"worker_memory_mb": 100}, "worker_memory_mb=100"),
    ({"strict": "yes"}, "strict='yes'"),
])
def test_invalid_values_name_the_field(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("+", r"\+")):
        VerifierConfig(**kwargs)


def test_settings_hold_what_changes_a_verdict_and_not_resources():
    settings = VerifierConfig().settings()
    json.dumps(settings)  # JSON-able
    assert settings["versions"] == verifier_version()
    assert VerifierConfig(workers=1, queue_depth=5, worker_memory_mb=0).settings() == settings
    assert VerifierConfig(float_rounding=3).settings() != settings
    assert VerifierConfig(answer_position="first").settings() != settings
    assert VerifierConfig(strict=False).settings() != settings


def test_version_names_the_packages():
    version = verifier_version()
    assert version.startswith("math-verify==0.9.0;latex2sympy2_extended==")
    assert "sympy==" in version
