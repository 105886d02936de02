"""One warm worker pool shared by the grading tests (starting one costs about a second)."""

from __future__ import annotations

import pytest

from dypo_data.grading import VerifierConfig, VerifierPool


@pytest.fixture(scope="session")
def pool():
    # a generous timeout: these tests are about verdicts, and the machine may be shared
    with VerifierPool(VerifierConfig(workers=2, timeout_s=20.0)) as shared_pool:
        yield shared_pool
