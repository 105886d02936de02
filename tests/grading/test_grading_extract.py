"""Which text is graded: pure extraction rules, no math-verify involved."""

from __future__ import annotations

import pytest

from dypo_data.grading.extract import (
    anchored_segments,
    answer_candidates,
    answer_region,
    boxed_answer,
    find_boxes,
    gold_latex,
    snippet,
)


def test_boxes_balance_nested_braces():
    boxes = find_boxes(r"so \boxed{\frac{1}{2}} and \fbox{3}")
    assert [b.content for b in boxes] == [r"\frac{1}{2}", "3"]


def test_escaped_braces_do_not_count():
    boxes = find_boxes(r"\boxed{\{1, 2\}} and \boxed{\left\{ x \mid x > 0 \right.}")
    assert [b.content for b in boxes] == [r"\{1, 2\}", r"\left\{ x \mid x > 0 \right."]


def test_nested_boxes_count_once_as_the_outer_box():
    assert [b.content for b in find_boxes(r"\boxed{\boxed{4}}")] == [r"\boxed{4}"]


def test_unclosed_and_empty_boxes_are_not_answers():
    assert find_boxes(r"put it in \boxed{} like \boxed{ } then \boxed{7") == []
    assert boxed_answer(r"\boxed{4}. Hmm, actually \boxed{5") == (r"\boxed{4}", "4")


def test_box_without_braces():
    assert [b.content for b in find_boxes(r"$\boxed 12$")] == ["12"]


def test_last_box_wins_over_earlier_boxes():
    assert boxed_answer(r"First \boxed{3}. Wait, that is wrong; the result is \boxed{5}.") == (r"\boxed{5}", "5")
    assert boxed_answer(r"First \boxed{3}. Wait; \boxed{5}.", "first") == (r"\boxed{3}", "3")


@pytest.mark.parametrize("text", [
    r"\boxed{2} and \boxed{3}",
    r"$\boxed{2}$, $\boxed{3}$",
    r"\(\boxed{2}\) or \(\boxed{3}\)",
    r"\boxed{2},\quad \boxed{3}",
])
def test_a_run_of_boxes_is_one_answer(text):
    run = boxed_answer(f"Earlier \\boxed{{9}} was wrong. The roots are {text}.")
    assert run == (r"\boxed{2}, \boxed{3}", "2, 3")


def test_boxes_apart_are_separate_answers():
    assert boxed_answer(r"\boxed{2} is one root; we then check the other case and find \boxed{3}").shown == "3"


def test_answer_region_is_after_thinking():
    assert answer_region("<think>maybe \\boxed{1}</think> so \\boxed{2}") == " so \\boxed{2}"
    assert answer_region("<think>cut off while thinking \\boxed{1}") == "<think>cut off while thinking \\boxed{1}"
    assert boxed_answer("<think>\\boxed{1}</think> The answer is 2.") is None


def test_without_box_the_tail_from_the_last_anchor_comes_first():
    text = "Answer: 3. Wait, I made a mistake. So the final answer is 5. Done."
    assert anchored_segments(text) == ["final answer is 5. Done.", text]
    assert anchored_segments(text, "first") == ["Answer: 3. Wait, I made a mistake. So the ",
                                                "final answer is 5. Done."]
    assert answer_candidates(text)[-1] == (text, None)  # the whole region is the last resort


def test_a_box_is_the_only_candidate():
    assert answer_candidates(r"the answer is 4, so \boxed{5}") == [(r"\boxed{5}", "5")]


@pytest.mark.parametrize("gold,latex", [
    ("42", "$42$"),
    (r"\frac{1}{2}", r"$\frac{1}{2}$"),
    (r"\$18.90", r"$\$18.90$"),  # an escaped dollar is a currency sign, not a delimiter
    ("$x$", "$x$"),
    (r"\boxed{3}", r"\boxed{3}"),
    ("a\nb", "$$a\nb$$"),
    ("  7 ", "$7$"),
])
def test_gold_is_wrapped_unless_delimited(gold, latex):
    assert gold_latex(gold) == latex


def test_snippet_is_bounded():
    assert snippet("x" * 1000, limit=10) == "xxxxxxx..."
    assert snippet("short") == "short"
