"""`dypo-data compact ARGS...` that SIGKILLs itself at a chosen point, so a test can kill it exactly there.

DYPO_TEST_KILL_AT=<point>:<n>, the n-th (1-based) occurrence of:
  part     a merged part about to be written (the merge is under way, earlier parts are temporary files)
  replace  a rename into the store (1: the compaction record; 2, 3, ...: the parts, one by one)
  unlink   the removal of a shard the merged parts replaced
The kill lands before the occurrence takes effect.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys

from dypo_data.store import compaction

POINT, N = os.environ["DYPO_TEST_KILL_AT"].split(":")
seen = {"part": 0, "replace": 0, "unlink": 0}


def count(point: str) -> None:
    seen[point] += 1
    if point == POINT and seen[point] == int(N):
        os.kill(os.getpid(), signal.SIGKILL)


_write, _replace, _unlink = compaction._PartWriter.write, os.replace, pathlib.Path.unlink


def write(self, data):
    count("part")
    return _write(self, data)


def replace(src, dst, *args, **kwargs):
    dst = pathlib.Path(dst)
    if dst.parent.name == compaction.compactions_dir(pathlib.Path("/")).name or dst.name.startswith(compaction.COMPACT_PREFIX):
        count("replace")
    return _replace(src, dst, *args, **kwargs)


def unlink(self, *args, **kwargs):
    if self.suffix == ".parquet" and not self.name.startswith((".tmp-", compaction.COMPACT_PREFIX)):
        count("unlink")
    return _unlink(self, *args, **kwargs)


compaction._PartWriter.write, os.replace, pathlib.Path.unlink = write, replace, unlink

if __name__ == "__main__":
    from dypo_data.cli.main import main

    sys.argv = ["dypo-data", "compact", *sys.argv[1:]]
    main()
