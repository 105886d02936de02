"""Request parameters, checked before any query sees them.

Every page declares the query-string parameters it takes. A parameter that is not declared, a
value outside its choices, a page number past the end, an id that is not an id: each is a
`PageError` with a 4xx status and a one-line message naming the parameter and what to send
instead. Values that pass are only ever bound to `?` placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PAGE_SIZE = 50
MIN_PER_PAGE, MAX_PER_PAGE = 5, 500
MAX_PAGE = 1_000_000  # far beyond any store; a larger number is a malformed request, not a page
MAX_TEXT = 200
_ID = re.compile(r"^[0-9a-f]{16}$")  # stable ids: 16 hex digits (contracts.ids.stable_hash)
_NAME = re.compile(r"^[\w.@:+/-]{1,200}$")  # run ids as the trainer and eval name them


class PageError(Exception):
    """A request the viewer refuses: `status` is the HTTP status of the page that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Query:
    """The query string of one request: repeated keys kept, unknown keys refused."""

    items: Sequence[tuple[str, str]]

    def check_known(self, allowed: set[str]) -> None:
        unknown = sorted({k for k, _ in self.items} - allowed)
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            raise PageError(400, f"unknown parameter {unknown[0]!r}; this page takes: {known}")

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.items if k == key]

    def one(self, key: str) -> str | None:
        values = [v for v in self.all(key) if v != ""]
        if len(values) > 1:
            raise PageError(400, f"parameter {key!r} is given {len(values)} times; give it once")
        return values[0] if values else None


def choice(query: Query, key: str, choices: Sequence[str]) -> str | None:
    """An optional value that must be one of `choices`."""
    value = query.one(key)
    if value is not None and value not in choices:
        shown = ", ".join(repr(c) for c in list(choices)[:12]) or "none in this store"
        raise PageError(400, f"{key}={_short(value)} is not in this store; choose one of {shown}")
    return value


def choices(query: Query, key: str, allowed: Sequence[str]) -> list[str]:
    """A repeated parameter whose every value must be one of `allowed`."""
    values = query.all(key)
    for value in values:
        if value not in allowed:
            raise PageError(400, f"{key}={_short(value)} is not in this store; choose among {', '.join(allowed[:12])}")
    return list(dict.fromkeys(values))


def flag(query: Query, key: str) -> bool:
    value = query.one(key)
    if value in (None, "0", "false"):
        return False
    if value in ("1", "true", "on"):
        return True
    raise PageError(400, f"{key}={_short(value)} is not a flag; send {key}=1 or leave it out")


def integer(query: Query, key: str, *, low: int, high: int) -> int | None:
    value = query.one(key)
    if value is None:
        return None
    if not re.fullmatch(r"\d{1,9}", value):
        raise PageError(400, f"{key}={_short(value)} is not a whole number from {low} to {high}")
    number = int(value)
    if not low <= number <= high:
        raise PageError(400, f"{key}={number} is out of range; send a number from {low} to {high}")
    return number


@dataclass(frozen=True)
class Paging:
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


def paging(query: Query) -> Paging:
    """`page` (from 1) and `per_page` (rows per page, PAGE_SIZE unless given)."""
    page = integer(query, "page", low=1, high=MAX_PAGE) or 1
    return Paging(page, integer(query, "per_page", low=MIN_PER_PAGE, high=MAX_PER_PAGE) or PAGE_SIZE)


def check_page_exists(at: Paging, matching: int) -> None:
    """Page 1 always exists (it may say "no rows"); a later page must have rows."""
    page = at.page
    last = max(1, -(-matching // at.per_page))
    if page > last:
        raise PageError(404, f"page={page} is past the last page ({last}) of {matching} rows; go back to page {last}")


def text(query: Query, key: str) -> str | None:
    """Free text (searched as a literal substring, never as a pattern)."""
    value = query.one(key)
    if value is None:
        return None
    if len(value) > MAX_TEXT:
        raise PageError(400, f"{key} is {len(value)} characters long; search for at most {MAX_TEXT}")
    if any(ord(c) < 32 for c in value):
        raise PageError(400, f"{key} contains control characters; search for plain text")
    return value


def stable_id(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise PageError(404, f"{what} {_short(value)} is not an id of this store (ids are 16 hex digits)")
    return value


def run_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise PageError(404, f"run {_short(value)} is not a run id of this store")
    return value


def _short(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def page_links(query: Mapping[str, object], at: Paging, matching: int) -> dict[str, object]:
    """Paging state for a template: first row shown, last row, and the neighbours' page numbers."""
    page, size = at.page, at.per_page
    last = max(1, -(-matching // size))
    if size != PAGE_SIZE:
        query = {**query, "per_page": size}
    return {
        "page": page, "last_page": last, "matching": matching,
        "first_row": 0 if matching == 0 else at.offset + 1,
        "last_row": min(page * size, matching),
        "prev": page - 1 if page > 1 else None, "next": page + 1 if page < last else None,
        "query": {k: "1" if v is True else v for k, v in query.items() if k != "page" and v not in (None, "", False)},
    }
