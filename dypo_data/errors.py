"""The exceptions the library raises for problems a user can fix.

The CLI turns every `DypoError` into one line (the message, then the hint) and a non-zero exit;
anything else is a bug and is shown with its traceback.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class DypoError(Exception):
    """Base of every user-facing error. `hint` says what to do next."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(DypoError):
    """A flag, config field or column mapping is wrong."""


class InputError(DypoError):
    """An input file or directory is missing, unreadable or malformed."""


class SchemaError(DypoError):
    """A Parquet file in the store is corrupt, foreign or of another schema version."""


class StoreError(DypoError):
    """The store directory cannot be written (read-only, disk full, ...)."""


class StoreBusyError(StoreError):
    """Another process is doing the same work in the store (it holds the lease, see store/lease.py)."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class BackendError(DypoError):
    """A generation backend failed: model path, server unreachable, engine error."""

    exit_code = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `kill`, Slurm and Kubernetes send), raised like Ctrl-C so the same clean-up runs:
    buffered rows are written, engines and workers are closed. The command then exits 143 (128 + 15)."""

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the body, SIGTERM raises `Terminated` in the main thread; later SIGTERMs are ignored while
    that clean-up runs (a scheduler's SIGKILL after its grace period still ends the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
