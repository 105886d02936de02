"""BackendSlot: one open backend, reused by the next job that asks for the same model and settings.

A command that samples several roles from one model (teacher traces and policy groups of the same
checkpoint, an eval before and after) would otherwise start the same engine once per role; on a
small CPU that is most of a minute each time. The slot holds at most one backend: asking for a
different model closes the open one first, so two engines never share the machine.

    with BackendSlot() as slot:
        for role_model in models:
            backend = slot.get("vllm", role_model)   # started once per distinct (kind, spec, options)
            ...

For in-process engines the model's name is not part of the key: it only labels the traces a job
writes. A server backend resolves the served model by name, so there the name counts.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from dypo_data.backends.base import Backend, ModelSpec
from dypo_data.backends.registry import make_backend

NAME_FREE_KINDS = ("vllm", "transformers")  # backends that load the weights themselves


class BackendSlot:
    """Holds the last backend made; see the module docstring."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._backend: Backend | None = None
        self.start_seconds = 0.0  # time the last `get` spent starting a backend (0 when reused)

    def get(self, kind: str, model: ModelSpec, options: dict[str, Any] | None = None) -> Backend:
        """The open backend if it was made for the same kind, model settings and options; else a new one."""
        options = dict(options or {})
        spec = tuple((f.name, getattr(model, f.name)) for f in dataclasses.fields(model)
                     if f.name != "name" or kind not in NAME_FREE_KINDS)
        key = (kind, spec, repr(sorted(options.items())))
        if self._backend is not None and key == self._key:
            self.start_seconds = 0.0
            return self._backend
        self.close()
        started = time.monotonic()
        self._backend = make_backend(kind, model, **options)
        self._key = key
        self.start_seconds = time.monotonic() - started
        return self._backend

    def close(self) -> None:
        backend, self._backend, self._key = self._backend, None, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> BackendSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
