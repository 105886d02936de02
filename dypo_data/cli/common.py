"""Shared CLI pieces: option help taken from config dataclasses, error reporting, output modes."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from dypo_data.errors import DypoError, Terminated, sigterm_as_interrupt

err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out_console = Console(width=None if sys.stdout.isatty() else 160)  # tables stay readable in logs and pipes


def field_help(cls: type, name: str) -> str:
    """The `help` metadata of a config field: the one place an option is documented."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def setup_logging(verbose: bool) -> None:
    """Our loggers at INFO with --verbose; vLLM logs only errors unless asked for more."""
    if not verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("dypo_data.backends.cpu").setLevel(logging.INFO)  # the settings chosen for this CPU


def show_progress(quiet: bool, as_json: bool) -> bool:
    """Progress bars only for a person at a terminal."""
    return not quiet and not as_json and sys.stderr.isatty()


@contextlib.contextmanager
def reporting() -> Iterator[None]:
    """Turn known errors into one line on stderr and a non-zero exit; unknown ones keep their traceback.

    Ctrl-C and SIGTERM stop a job the same way: what was done is written, then exit 130 or 143.
    """
    try:
        with sigterm_as_interrupt():
            yield
    except DypoError as exc:
        hint = f" (fix: {exc.hint})" if exc.hint else ""
        err_console.print(f"[bold red]error:[/] {exc.message}{hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        err_console.print(f"[bold red]{what}:[/] finished shards are kept; rerun the same command to resume")
        raise typer.Exit(Terminated.exit_code if isinstance(exc, Terminated) else 130) from None


def arrow_to_rich(table: pa.Table, title: str | None = None, max_rows: int = 50, max_width: int = 60) -> Table:
    """A rich table of the first `max_rows` rows, long cells cut to `max_width` characters."""
    out = Table(title=title, show_lines=False, title_justify="left")
    for name in table.column_names:
        out.add_column(name, overflow="fold")
    for row in table.slice(0, max_rows).to_pylist():
        out.add_row(*(_cell(row[c], max_width) for c in table.column_names))
    if table.num_rows > max_rows:
        out.caption = f"{max_rows} of {table.num_rows} rows shown"
    return out


def _cell(value: Any, max_width: int) -> str:
    if value is None:
        return "NULL"
    text = str(value).replace("\n", "⏎")
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def parse_pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """`["a=b", "c=d.e"]` -> {"a": "b", "c": "d.e"}; a value without `=` is a ConfigError naming the flag."""
    from dypo_data.errors import ConfigError

    pairs = {}
    for value in values or ():
        key, sep, val = value.partition("=")
        if not sep or not key or not val:
            raise ConfigError(f"{flag} {value!r} is not FIELD=COLUMN", f"write e.g. {flag} problem=question")
        pairs[key] = val
    return pairs


def build_prompt_source(path: Any, *, fmt: str, columns: list[str] | None, instruction: str | None, **fields: Any):
    """A PromptSource from CLI flags; `--column FIELD=COLUMN` pairs become its ColumnMap."""
    from dypo_data.prompts import PromptSource

    extra = {"instruction": instruction} if instruction is not None else {}
    return PromptSource(path=str(path), format=fmt, columns=parse_pairs(columns, "--column"), **extra, **fields)
