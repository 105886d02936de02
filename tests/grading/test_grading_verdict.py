"""grade_one on hand-made cases, with the real math-verify: statuses, rewards, last-answer grading."""

from __future__ import annotations

import threading

import math_verify
import pytest
from grading_cases import POWER_TOWER

from dypo_data.contracts import VerdictStatus
from dypo_data.grading import VerifierConfig, grade_one

CFG = VerifierConfig()
OK, NO_ANSWER, PARSE_ERROR = VerdictStatus.OK, VerdictStatus.NO_ANSWER, VerdictStatus.PARSE_ERROR


@pytest.mark.parametrize("gold,completion,correct,extracted", [
    ("5", r"Adding them up gives \boxed{5}.", True, "5"),
    ("5", r"Adding them up gives \boxed{6}.", False, "6"),
    (r"\frac{1}{2}", r"The probability is $\boxed{0.5}$.", True, "0.5"),
    (r"\frac{1}{2}", "The answer is 1/2.", True, "1/2."),  # unboxed: math-verify's own match
    ("x^2+1", r"\boxed{1 + x^2}", True, "1 + x^2"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{\left(3, \frac{\pi}{2}\right)}", True,
     r"\left(3, \frac{\pi}{2}\right)"),
    (r"\text{Evelyn}", r"So it is \boxed{\text{Evelyn}}", True, r"\text{Evelyn}"),
    (r"\$18.90", r"She pays \boxed{\$18.90}.", True, r"\$18.90"),
    ("2, 3", r"The roots are \boxed{2} and \boxed{3}.", True, "2, 3"),
    ("6", r"The roots are \boxed{2} and \boxed{3}.", False, "2, 3"),
])
def test_correct_and_incorrect(gold, completion, correct, extracted):
    grade = grade_one(gold, completion, CFG)
    assert (grade.status, grade.correct, grade.reward) == (OK, correct, float(correct))
    assert grade.extracted_answer == extracted
    assert grade.key == ""


@pytest.mark.parametrize("completion,extracted", [
    # a box that is later replaced by another box
    (r"So $\boxed{12}$. Wait, I double counted the corner; subtracting it gives $\boxed{11}$.", "11"),
    # no box: math-verify alone would take "Answer: 12" (an "Answer:" outranks "the answer is")
    ("Answer: 12. Hmm, I double counted the corner, so the answer is 11.", "11"),
    ("The final answer is 12. Let me re-check... no: the answer is actually 11.", "11"),
])
def test_a_completion_that_changes_its_mind_is_graded_on_its_last_answer(completion, extracted):
    grade = grade_one("11", completion, CFG)
    assert (grade.status, grade.correct, grade.extracted_answer) == (OK, True, extracted)
    first = grade_one("11", completion, VerifierConfig(answer_position="first"))
    assert first.correct is False and first.extracted_answer == "12"


def test_the_answer_after_thinking_is_graded():
    completion = r"<think>It could be \boxed{12}. No, the corner counts once.</think> The answer is 11."
    for position in ("last", "first"):
        grade = grade_one("11", completion, VerifierConfig(answer_position=position))
        assert (grade.status, grade.correct, grade.extracted_answer) == (OK, True, "11")


def test_a_box_outranks_a_later_unboxed_answer():
    # as the established graders do: the last box is the stated answer
    grade = grade_one("5", r"\boxed{3}. Wait, no, the answer is 5.", CFG)
    assert (grade.correct, grade.extracted_answer) == (False, "3")


@pytest.mark.parametrize("completion", [
    "I am not sure how to approach this problem.",
    "",
    r"Put the final answer in \boxed{}.",
    r"The answer is \boxed{4",  # cut off inside the box
    r"<think>So it is \boxed{4}</think> I could not decide.",
])
def test_no_answer_is_wrong_not_ungradable(completion):
    grade = grade_one("4", completion, CFG)
    assert (grade.status, grade.correct, grade.reward, grade.extracted_answer) == (NO_ANSWER, False, 0.0, None)


@pytest.mark.parametrize("gold,completion,extracted", [
    ("5", r"\boxed{\frac{}{}}", r"\frac{}{}"),  # an answer, but malformed LaTeX
    ("5", r"\boxed{x^}", "x^"),
    ("np.arcsin(10/13)", r"\boxed{\arcsin(10/13)}", r"\arcsin(10/13)"),  # the gold is code, not maths
])
def test_unparseable_answer_or_gold_cannot_be_graded(gold, completion, extracted):
    grade = grade_one(gold, completion, CFG)
    assert (grade.status, grade.correct, grade.reward, grade.extracted_answer) == (PARSE_ERROR, None, None, extracted)


def test_unparseable_gold_still_matches_the_identical_string():
    grade = grade_one("np.arcsin(10/13)", r"\boxed{np.arcsin(10/13)}", CFG)
    assert (grade.status, grade.correct) == (OK, True)


def test_known_false_positive_of_math_verify_is_fixed():
    # math-verify issue #14: its numeric check chops 1/2004! - 1/2006! to 0 and calls them equal.
    # Both sides are exact, so `exact.py` decides instead (more cases in test_grading_exact.py).
    grade = grade_one(r"\frac{1}{2004!}", r"\boxed{\frac{1}{2006!}}", CFG)
    assert (grade.status, grade.correct) == (OK, False)
    assert grade_one(r"\frac{1}{2004!}", r"\boxed{\frac{1}{2004!}}", CFG).correct is True
    assert grade_one(r"\frac{1}{2004!}", r"\boxed{2004!}", CFG).correct is False


def test_float_rounding_decides_close_decimals():
    assert grade_one(r"\frac{1}{3}", "The answer is 0.3333333.", CFG).correct is True
    assert grade_one(r"\frac{1}{3}", "The answer is 0.3333333.", VerifierConfig(float_rounding=9)).correct is False


def test_a_comparison_that_raises_is_an_error_not_a_wrong_answer(monkeypatch):
    # math-verify returns False on internal errors unless asked to raise; we ask, and record it
    def broken_verify(*args, **kwargs):
        assert kwargs["raise_on_error"] is True
        raise TypeError("internal error")

    monkeypatch.setattr(math_verify, "verify", broken_verify)
    # a pair no other test grades in this process (comparisons are cached per process), and not
    # two exact numbers (those are compared exactly, without math-verify: see exact.py)
    grade = grade_one("517 + y", r"\boxed{y + 517}", CFG)
    assert (grade.status, grade.correct, grade.reward) == (VerdictStatus.ERROR, None, None)
    assert grade.extracted_answer == "y + 517"


def test_a_real_hang_times_out_in_process():
    grade = grade_one("3", POWER_TOWER, VerifierConfig(timeout_s=0.5))
    assert (grade.status, grade.correct, grade.reward) == (VerdictStatus.TIMEOUT, None, None)
    assert grade.extracted_answer == "9^{9^{9^{9}}}"
    assert 0.45 <= grade.seconds < 2.0
    # the timer is disarmed and the next item is graded normally
    assert grade_one("3", r"\boxed{3}", CFG).correct is True


def test_grade_one_refuses_other_threads():
    errors = []

    def run():
        try:
            grade_one("1", r"\boxed{1}", CFG)
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors and "main thread" in errors[0]
