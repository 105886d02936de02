"""Grading: answer extraction and math-verify in a process pool, with a verdict status per item.

    from dypo_data.grading import GradeItem, VerifierConfig, VerifierPool
    with VerifierPool(VerifierConfig(workers=2)) as pool:
        for grade in pool.grade(GradeItem(key, gold, completion) for ...):
            ...

Importing this package does not import math-verify; the worker processes do.
"""

from dypo_data.grading.config import GRADING_RULES, VerifierConfig, verifier_version
from dypo_data.grading.pool import VerifierError, VerifierPool
from dypo_data.grading.verdict import Grade, GradeItem, grade_one

__all__ = [
    "GRADING_RULES",
    "Grade",
    "GradeItem",
    "VerifierConfig",
    "VerifierError",
    "VerifierPool",
    "grade_one",
    "verifier_version",
]
