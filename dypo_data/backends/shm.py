"""Shared-memory segments a killed engine leaves in /dev/shm, and their removal at the next start.

vLLM's engine processes exchange data through POSIX shared memory (`/dev/shm/psm_*`, Python's
`multiprocessing.shared_memory`), 160-250 MB of RAM each. A clean shutdown unlinks them; a job
killed with SIGKILL (or OOM-killed) cannot, and they stay until the machine reboots. As nothing runs
after a SIGKILL, a job cleans up after killed ones when it starts an engine:

- while an engine starts, the segments that appear are recorded in `/dev/shm/dypo-engines/<pid>.json`;
- before an engine starts, each record whose process has ended is read, and every segment it lists
  that no running process maps or holds open is removed, then the record;
- a clean close drops the segments that are gone from the record, and the record once it is empty.

Only segments recorded by a dypo job that is gone, owned by this user and unused, are removed: the
segments of running engines and of other programs are never touched. Segments created after an
engine's start, or left by a killed job while no other dypo job ever starts an engine again, remain:
remove them by hand when no vLLM process runs (`fuser /dev/shm/psm_*` lists the users of each).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
RECORDS = SHM_DIR / "dypo-engines"
PREFIX = "psm_"


def _segments() -> set[str]:
    try:
        return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(PREFIX)}
    except OSError:
        return set()


def _record(pid: int) -> Path:
    return RECORDS / f"{pid}.json"


def _read_record(path: Path) -> set[str]:
    try:
        return set(json.loads(path.read_text()))
    except (OSError, ValueError):
        return set()


def _write_record(pid: int, names: set[str]) -> None:
    try:
        RECORDS.mkdir(exist_ok=True)
        tmp = RECORDS / f".{pid}.json.tmp"
        tmp.write_text(json.dumps(sorted(names)))
        os.replace(tmp, _record(pid))
    except OSError as exc:  # no /dev/shm (macOS) or not writable: nothing to record, nothing to clean
        log.debug("cannot record shared-memory segments: %s", exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def segments_in_use() -> set[str]:
    """psm_* segments some readable process maps or holds open (other users' processes cannot open ours)."""
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for line in (proc / "maps").read_text().splitlines():
                if "/dev/shm/" + PREFIX in line:
                    used.add(line.rsplit("/", 1)[-1].split()[0])
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("/dev/shm/" + PREFIX):
                        used.add(target.rsplit("/", 1)[-1])
    return used


def remove_orphans() -> list[str]:
    """Remove the recorded segments of dypo jobs that have ended, where unused; returns their names."""
    if not RECORDS.is_dir():
        return []
    stale = [p for p in RECORDS.glob("*.json") if p.stem.isdigit() and not _alive(int(p.stem))]
    if not stale:
        return []
    in_use, removed = segments_in_use(), []
    for record in stale:
        for name in sorted(_read_record(record) - in_use):
            path = SHM_DIR / name
            with contextlib.suppress(OSError):
                if path.stat().st_uid == os.getuid():
                    path.unlink()
                    removed.append(name)
        with contextlib.suppress(OSError):
            record.unlink()
    if removed:
        log.warning("removed %d shared-memory segment(s) left in %s by killed engines", len(removed), SHM_DIR)
    return removed


@contextlib.contextmanager
def recording_new_segments() -> Iterator[None]:
    """Record (under this process's id) the segments that appear while the body starts an engine."""
    before = _segments()
    try:
        yield
    finally:
        new = _segments() - before
        if new:
            _write_record(os.getpid(), _read_record(_record(os.getpid())) | new)


def forget_released() -> None:
    """After a clean close: keep in this process's record only the segments that still exist."""
    record = _record(os.getpid())
    if not record.exists():
        return
    left = _read_record(record) & _segments()
    if left:
        _write_record(os.getpid(), left)
    else:
        with contextlib.suppress(OSError):
            record.unlink()
