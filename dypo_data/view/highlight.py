"""Where a verdict's extracted answer sits in its completion, for highlighting.

The template escapes every segment; only the `<mark>` around the answer is markup of ours.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    text: str
    is_answer: bool = False


def answer_segments(completion: str, extracted: str | None) -> list[Segment]:
    """`completion` cut around the last place the extracted answer appears (a final answer comes last).

    Prefers an occurrence inside `\\boxed{...}`; with no answer, or one the text does not contain
    verbatim (the verifier may have normalised it), the completion is one plain segment.
    """
    if not extracted or not completion:
        return [Segment(completion or "")]
    start = completion.rfind("\\boxed{" + extracted)
    start = start + len("\\boxed{") if start >= 0 else completion.rfind(extracted)
    if start < 0:
        return [Segment(completion)]
    end = start + len(extracted)
    return [s for s in (Segment(completion[:start]), Segment(completion[start:end], True), Segment(completion[end:])) if s.text]
