"""The exceptions the library raises for problems a user can fix.

The CLI turns every `DypoError` into one line (the message, then the hint) and a non-zero exit;
anything else is a bug and is shown with its traceback.
"""

from __future__ import annotations


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


class BackendError(DypoError):
    """A generation backend failed: model path, server unreachable, engine error."""

    exit_code = 3
