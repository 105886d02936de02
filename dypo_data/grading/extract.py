"""Which part of a completion is its answer: pure string functions, no math-verify.

math-verify's `parse` ranks candidate answers by anchor before position: a `\\boxed{}` or "final
answer is" beats "Answer:", which beats "the answer is", which beats bare maths, and only within
one rank does the rightmost candidate win. A completion that writes "Answer: 3", then corrects
itself with "so the answer is 5", is therefore read as 3. To grade the answer a completion ends
with, we cut the text down to its final stated answer first and let math-verify parse only that:

1. Answer region: the text after the last `</think>` when there is one (reasoning models state
   their answer after thinking); otherwise the whole completion.
2. Boxes: the last closed, non-empty `\\boxed{...}` (or `\\fbox{...}`), with braces balanced. A run
   of boxes separated only by commas, "and", "or" or math delimiters ("\\boxed{2} and \\boxed{3}")
   is one answer, as math-verify itself reads it. An unclosed box (a completion cut off mid-answer)
   is not an answer. A box wins over any later unboxed "the answer is", as established graders do.
3. No box: the tail of the region from the last answer anchor ("answer", "final answer"), which
   math-verify parses with its own rules; if that tail holds no maths, the tail from the anchor
   before it, and so on, and finally the whole region (where math-verify takes the rightmost
   expression).

With `position="first"` the first box run and the first anchored segment are used instead.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

Position = Literal["last", "first"]

THINK_END = "</think>"
# math-verify's own anchor is the bare word "answer" (any case); "final answer" is kept whole so
# that its "final answer is" pattern still applies to the tail.
_ANCHOR = re.compile(r"(?i)final\s+answer|answer")
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_UNBRACED_BOX_ARG = re.compile(r"\s+([^\s${}]+)")
# What may stand between two boxes of one answer: "$\boxed{2}$, $\boxed{3}$", "\boxed{2} or \boxed{3}".
_BOX_SEPARATOR = re.compile(
    r"(?:\s|\$|,|;|\\[,;:!]|\\q?quad|\band\b|\bor\b|\\text\{\s*(?:and|or)?\s*\}|\\\)|\\\(|\\\]|\\\[)*"
)
_MATH_DELIMITER = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")
SNIPPET_CHARS = 200


class Candidate(NamedTuple):
    text: str  # what math-verify parses
    shown: str | None  # the answer as the completion wrote it, when known (box contents)

    @property
    def label(self) -> str:
        return self.shown if self.shown is not None else self.text


class Box(NamedTuple):
    start: int  # index of the backslash of \boxed
    end: int  # index just past the closing brace
    content: str


def answer_region(completion: str) -> str:
    """The part of a completion that states its final answer: after the last `</think>`, if any."""
    cut = completion.rfind(THINK_END)
    return completion if cut < 0 else completion[cut + len(THINK_END):]


def _closing_brace(text: str, open_at: int) -> int:
    """Index of the brace closing the one at `open_at`, or -1 when it is never closed.

    Escaped braces (`\\{`, `\\}`, as in `\\left\\{ ... \\right.`) are literal and not counted.
    """
    depth = 0
    i = open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def find_boxes(text: str) -> list[Box]:
    """Every closed, non-empty `\\boxed{...}` / `\\fbox{...}` (also `\\boxed 5`), left to right.

    Nested boxes count once, as their outermost box.
    """
    boxes: list[Box] = []
    pos = 0
    while True:
        m = _BOX_COMMAND.search(text, pos)
        if m is None:
            return boxes
        after = m.end()
        brace = after
        while brace < len(text) and text[brace].isspace():
            brace += 1
        if brace < len(text) and text[brace] == "{":
            close = _closing_brace(text, brace)
            if close < 0:  # unclosed: the completion was cut off inside it
                return boxes
            content, end = text[brace + 1:close].strip(), close + 1
        else:
            arg = _UNBRACED_BOX_ARG.match(text, after)
            content, end = (arg.group(1), arg.end()) if arg else ("", after)
        if content:
            boxes.append(Box(m.start(), end, content))
        pos = end


def _box_run(text: str, boxes: list[Box], position: Position) -> list[Box]:
    """The last (or first) box together with its neighbours joined only by separators."""
    if position == "last":
        run = [boxes[-1]]
        for prev in reversed(boxes[:-1]):
            if not _BOX_SEPARATOR.fullmatch(text, prev.end, run[0].start):
                break
            run.insert(0, prev)
    else:
        run = [boxes[0]]
        for nxt in boxes[1:]:
            if not _BOX_SEPARATOR.fullmatch(text, run[-1].end, nxt.start):
                break
            run.append(nxt)
    return run


def boxed_answer(completion: str, position: Position = "last") -> Candidate | None:
    """The stated box run as clean LaTeX for math-verify ("\\boxed{2}, \\boxed{3}"), or None."""
    region = answer_region(completion)
    boxes = find_boxes(region)
    if not boxes:
        return None
    run = _box_run(region, boxes, position)
    return Candidate(", ".join("\\boxed{" + box.content + "}" for box in run), ", ".join(b.content for b in run))


def anchored_segments(text: str, position: Position = "last") -> list[str]:
    """Texts that start at an answer anchor, in the order they should be tried.

    "last": the tail from the last anchor, then from the one before, ... "first": the segment from
    the first anchor to the second, then from the second to the third, ...
    """
    starts = [m.start() for m in _ANCHOR.finditer(text)]
    if position == "last":
        return [text[s:] for s in reversed(starts)]
    ends = starts[1:] + [len(text)]
    return [text[s:e] for s, e in zip(starts, ends)]


def answer_candidates(completion: str, position: Position = "last") -> list[Candidate]:
    """The texts to hand to math-verify's `parse`, in order; the first that yields anything wins.

    A box run, when present, is the only candidate: if it does not parse, the completion's stated
    answer is unparseable, and an earlier answer is not graded in its place.
    """
    boxed = boxed_answer(completion, position)
    if boxed is not None:
        return [boxed]
    region = answer_region(completion)
    return [Candidate(text, None) for text in anchored_segments(region, position) + [region]]


def gold_latex(gold: str) -> str:
    """A gold answer as math-verify should parse it: wrapped in `$...$` unless already delimited.

    An escaped `\\$` is a dollar sign ("\\$18.90"), not a delimiter.

    Display delimiters are used for a gold that spans lines, since math-verify's inline `$...$`
    does not cross a newline.
    """
    gold = gold.strip()
    if _MATH_DELIMITER.search(gold):
        return gold
    return f"$${gold}$$" if "\n" in gold else f"${gold}$"


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """A bounded copy of an answer for the verdicts table."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
