"""Leases: one writer at a time for each piece of work in a store.

Two runs of the same work (`generate` of one model, role, sampling settings and policy version;
`verify` under one verifier setting) would each do all of it and write every row twice: the views
hide the doubles, but the raw Parquet files count them and the compute is spent twice. Before such
a job plans its work it takes the lease of that work; a second writer of the same work then fails
at once with one line naming the holder (pid, host, since when, its command), or, asked to
(`--wait`), waits for it and then does only what the first left undone. Different work (another
model, other settings, generate beside verify) takes other leases and runs at the same time.

A lease is an exclusive POSIX record lock (`fcntl.lockf`) on `STORE/.leases/<work>.lock`. The
operating system drops it when the holding process ends in any way (exit, exception, kill -9,
crash), so a lease is never stale: there is no pid to check and nothing to break by hand. A record
lock belongs to the process, not to the file descriptor, so the engine and grading processes a job
forks do not inherit it and cannot keep it alive after the job is gone (an `flock` would pass to
them). The lock file also records the holder, for the message of the writer that finds it busy;
the next holder overwrites it. Files stay (a file deleted while another process waits on it would
split the lock in two); each is a few hundred bytes.

Record locks coordinate the processes of one machine and the clients of an NFS share (NFSv4, or
v3 with lockd). On a file system without working locks, run one writer per piece of work.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from dypo_data.errors import StoreBusyError
from dypo_data.store.shards import store_write_error

log = logging.getLogger(__name__)

LEASE_DIR = ".leases"


def lease_path(root: Path, work: str) -> Path:
    """The lock file of `work`: a readable slug of it plus a hash, so distinct work never shares a file."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", work).strip("_")[:80]
    digest = hashlib.sha256(work.encode()).hexdigest()[:12]
    return root / LEASE_DIR / f"{slug}-{digest}.lock"


def _holder_record(work: str) -> bytes:
    return json.dumps({
        "work": work, "pid": os.getpid(), "host": socket.gethostname(),
        "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
    }).encode()


def describe_holder(fd: int) -> str:
    """`pid 123 on host h since 2026-...Z (dypo-data generate ...)`, from the lock file the holder wrote."""
    try:
        holder = json.loads(os.pread(fd, 65536, 0) or b"{}")
    except (OSError, ValueError):
        holder = {}
    if "pid" not in holder:
        return "a process that is starting (no holder recorded yet)"
    command = holder.get("command", "")
    return (f"pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}"
            + (f" ({command[:160]})" if command else ""))


def _acquire(fd: int, root: Path, work: str, what: str, wait: bool, place: str, fix: str | None) -> None:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise store_write_error(lease_path(root, work), exc) from exc
    holder = describe_holder(fd)
    if not wait:
        raise StoreBusyError(
            f"{what} is already running in {place} {root}: held by {holder}",
            fix or "let it finish (a rerun afterwards does only what is left), stop that process, "
            "or pass --wait to start when it ends",
        )
    log.warning("waiting: %s in %s %s is held by %s", what, place, root, holder)
    fcntl.lockf(fd, fcntl.LOCK_EX)  # blocks; Ctrl-C or SIGTERM interrupt it


@contextlib.contextmanager
def hold_lease(root: Path, work: str, what: str, *, wait: bool = False, place: str = "store",
               fix: str | None = None) -> Iterator[None]:
    """Hold the lease of `work` (a stable key) in store `root` for the body; `what` names it for people, `place`
    says what `root` is in the error (a store, or e.g. a training run's directory), `fix` replaces the error's
    default fix (which names `--wait`, an option of the store's jobs).

    Raises StoreBusyError when another process holds it, unless `wait`, which blocks until it is free.
    """
    path = lease_path(root, work)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise store_write_error(path, exc) from exc
    try:
        _acquire(fd, root, work, what, wait, place, fix)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_record(work), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # still held: no one reads a record of a holder that has gone
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def hold_leases(root: Path, works: dict[str, str], *, wait: bool = False) -> Iterator[None]:
    """Hold several leases ({work: what}), taken in sorted order so two waiting writers never deadlock."""
    with contextlib.ExitStack() as stack:
        for work in sorted(works):
            stack.enter_context(hold_lease(root, work, works[work], wait=wait))
        yield
