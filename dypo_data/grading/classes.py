"""Answer classes for majority voting: which extracted answers the verifier calls equal.

maj@k counts answers that are the same maths as one vote ("1/2", "0.5" and "\\frac12" together), so
it needs the verifier's equality, not string equality. `answer_classes` labels the answers of each
problem with `VerifierPool` doing the comparisons, so each comparison has the pool's per-item
timeout and crash recovery:

    with VerifierPool(VerifierConfig(workers=2)) as pool:
        labels = answer_classes([["1/2", "0.5", "3", None]], pool)   # [[0, 0, 1, None]]

The classes are the ones `dypo_data.evaluation.majority_vote(..., same=...)` forms: each answer joins
the first earlier class whose representative (the class's first answer) it equals, compared gold
first, `verify(representative, answer)`; otherwise it founds a new class. Identical strings are one
class without a comparison. The work runs in rounds: round r compares every answer still without a
class against the r-th representative of its problem, for all problems at once, so the pool stays
busy and a problem whose answers agree costs one comparison per distinct string.

A comparison that cannot be decided (status timeout, error or parse_error, so `correct` is None)
counts as "not equal": the answer may found a class of its own, it is never merged on a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dypo_data.grading.pool import VerifierPool
from dypo_data.grading.verdict import GradeItem

_SEP = "\x1f"  # joins problem and answer indices into a grade key


@dataclass
class _Problem:
    """One problem's distinct answers and their classes while the rounds run."""

    distinct: list[str]  # distinct answer strings, in order of first appearance
    label: list[int | None] = field(default_factory=list)  # class of each distinct string (None: not yet)
    reps: int = 0  # classes founded so far

    def __post_init__(self) -> None:
        self.label = [None] * len(self.distinct)

    def next_rep(self) -> int | None:
        """Found a class with the first unlabelled string as its representative; its index, or None."""
        for i, lab in enumerate(self.label):
            if lab is None:
                self.label[i] = self.reps
                self.reps += 1
                return i
        return None


def _as_completion(answer: str) -> str:
    """An extracted answer as a completion the grader reads back as exactly that answer."""
    return f"\\boxed{{{answer}}}"


def answer_classes(answers: Sequence[Sequence[str | None]], pool: VerifierPool,
                   on_compared: Callable[[int], None] | None = None) -> list[list[int | None]]:
    """Class labels of each problem's answers (None for a missing answer). Shapes: P lists of k_p -> same.

    Labels are small integers, 0 for the first class of a problem, in order of first appearance.
    `on_compared(n)` is called after each comparison with the number done so far (progress bars).
    """
    done = 0
    problems = [_Problem(list(dict.fromkeys(a for a in per if a is not None))) for per in answers]
    while True:
        items = _round_items(problems)
        if not items:
            break
        equal = {}
        for grade in pool.grade(items):
            equal[grade.key] = grade.correct is True
            done += 1
            if on_compared is not None:
                on_compared(done)
        for key, same in equal.items():
            p, rep, i = (int(x) for x in key.split(_SEP))
            if same and problems[p].label[i] is None:
                problems[p].label[i] = problems[p].label[rep]
    out = []
    for per, problem in zip(answers, problems):
        of = dict(zip(problem.distinct, problem.label))
        out.append([None if a is None else of[a] for a in per])
    return out


def _round_items(problems: list[_Problem]) -> list[GradeItem]:
    """Found the next class of every problem that has unlabelled answers; compare the rest against it."""
    items = []
    for p, problem in enumerate(problems):
        rep = problem.next_rep()
        if rep is None:
            continue
        gold = problem.distinct[rep]
        for i in range(rep + 1, len(problem.distinct)):
            if problem.label[i] is None:
                items.append(GradeItem(f"{p}{_SEP}{rep}{_SEP}{i}", gold, _as_completion(problem.distinct[i])))
    return items


def comparisons_needed(answers: Sequence[Sequence[str | None]]) -> bool:
    """Whether any problem has two distinct answers (else labels need no verifier at all)."""
    return any(len({a for a in per if a is not None}) > 1 for per in answers)


def string_classes(answers: Sequence[Sequence[str | None]]) -> list[list[int | None]]:
    """Labels by string equality alone: what `answer_classes` returns when `comparisons_needed` is False."""
    out = []
    for per in answers:
        of = {a: i for i, a in enumerate(dict.fromkeys(a for a in per if a is not None))}
        out.append([None if a is None else of[a] for a in per])
    return out
