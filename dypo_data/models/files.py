"""Atomic model directories: build in a temporary directory next to the target, then rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def make_tmp_dir(out: Path) -> Path:
    """A fresh hidden directory next to `out`, with the usual permissions (mkdtemp gives 0700)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def move_into_place(tmp: Path, out: Path, *, keep_existing: bool) -> None:
    """Rename the finished `tmp` to `out`.

    keep_existing: a complete `out` (another process finished first) is kept and `tmp` discarded;
    otherwise an existing `out` is replaced.
    """
    if out.exists():
        if keep_existing:
            return
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.rename(out, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, out)
    except OSError:
        if not out.exists():  # lost a race against another builder: its copy is as good as ours
            raise
