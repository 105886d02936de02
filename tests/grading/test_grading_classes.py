"""Answer classes for maj@k: verifier-equal answers share a class, the classes are the ones
`majority_vote(same=...)` forms, and undecidable comparisons never merge answers."""

from __future__ import annotations

import random

import pytest

from dypo_data.contracts import VerdictStatus
from dypo_data.evaluation import majority_vote
from dypo_data.grading.classes import answer_classes, comparisons_needed, string_classes
from dypo_data.grading.verdict import make_grade


class FakePool:
    """Grades with a given relation `same(gold, answer)`; counts comparisons and rounds."""

    def __init__(self, same, undecided=frozenset()):
        self.same, self.undecided = same, undecided
        self.compared: list[tuple[str, str]] = []
        self.rounds = 0

    def grade(self, items):
        self.rounds += 1
        for item in items:
            answer = item.completion[len("\\boxed{"):-1]
            self.compared.append((item.gold, answer))
            if (item.gold, answer) in self.undecided:
                yield make_grade(item.key, VerdictStatus.TIMEOUT, None, None, 0.0)
            else:
                yield make_grade(item.key, VerdictStatus.OK, bool(self.same(item.gold, answer)), answer, 0.0)


def test_verifier_equal_answers_share_a_class(pool):
    labels = answer_classes([["1/2", "0.5", "\\frac{1}{2}", "3", None, "3.0"], ["x", "y"], [None, None], []], pool)
    assert labels == [[0, 0, 0, 1, None, 1], [0, 1], [None, None], []]


def test_classes_match_majority_vote_with_the_same_relation():
    """Random non-transitive relations: the labels give majority_vote(labels=...) the result of majority_vote(same=...)."""
    rng = random.Random(0)
    for trial in range(200):
        alphabet = [f"a{i}" for i in range(rng.randint(1, 6))]
        pairs = {(a, b) for a in alphabet for b in alphabet if a != b and rng.random() < 0.3}
        same = lambda g, a, pairs=pairs: (g, a) in pairs  # noqa: E731 - asymmetric on purpose
        answers = [[rng.choice(alphabet + [None]) for _ in range(rng.randint(0, 8))] for _ in range(3)]
        fake = FakePool(same)
        labels = answer_classes(answers, fake)
        for per, lab in zip(answers, labels):
            correct = [rng.random() < 0.5 if a is not None else False for a in per]
            by_same = majority_vote(per, correct, same=lambda g, a: g == a or same(g, a))
            by_label = majority_vote(per, correct, labels=lab)
            assert by_same == by_label, (trial, per, lab)


def test_agreeing_answers_cost_one_comparison_per_distinct_string():
    fake = FakePool(lambda g, a: True)
    labels = answer_classes([["2", "2", "2.0", "4/2", "2"]], fake)
    assert labels == [[0, 0, 0, 0, 0]]
    assert fake.compared == [("2", "2.0"), ("2", "4/2")] and fake.rounds == 1


def test_an_undecidable_comparison_does_not_merge():
    fake = FakePool(lambda g, a: True, undecided={("1", "1.0")})
    assert answer_classes([["1", "1.0", "one"]], fake) == [[0, 1, 0]]


def test_string_classes_need_no_verifier():
    answers = [["3", "3", None], ["x"]]
    assert not comparisons_needed(answers)
    assert string_classes(answers) == [[0, 0, None], [0]]
    assert comparisons_needed([["3", "4"]])


@pytest.mark.parametrize("answers", [[["$5$", "5"]], [["\\text{(A)}", "A"]]])
def test_labels_have_one_entry_per_sample(pool, answers):
    labels = answer_classes(answers, pool)
    assert [len(x) for x in labels] == [len(x) for x in answers]
