"""
Reading many processes
----------------------
``check --all`` reads every process; where another CPU is idle (the CPUs it may use, less the
tasks runnable at that moment) the reads are split between this process and one forked reader
(each opens its own pidfds, so identity checks are unchanged), whose results come back over a
pipe as :mod:`marshal` data (the snapshot is plain data). Anything wrong with the forked reader
-- it dies, is killed, or answers garbage -- and its share is read again here, so the result
never depends on it. ``COREDOCTOR_DISABLE=parallel`` reads everything in this process.

Only the reader's own errors are decided here, the way ``snapshot.take`` decides them for a
whole-host read: each process is kept, or skipped and counted (gone, no_mm, denied).
"""

from __future__ import annotations

import marshal
import os

from coredoctor.errors import AccessDenied, KernelThread, NoSuchProcess, ZombieProcess
from coredoctor.snapshot.proc import dumpability

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["read_many", "PARALLEL_MIN"]

#: below this many processes one reader is faster than forking a second
PARALLEL_MIN = 400


def _read_share(pids: Sequence[int], read: Callable[[int], Dict[str, Any]]) -> Tuple[Dict[int, Any], Dict[str, int]]:
    procs: Dict[int, Any] = {}
    skipped = {"gone": 0, "no_mm": 0, "denied": 0}
    for pid in pids:
        try:
            procs[pid] = read(pid)
        except (ZombieProcess, KernelThread):
            skipped["no_mm"] += 1
        except NoSuchProcess:  # includes ProcessGone
            skipped["gone"] += 1
        except AccessDenied:
            skipped["denied"] += 1
    return procs, skipped


def _runnable(text: str) -> Optional[int]:
    """The number of runnable tasks now, from /proc/loadavg's fourth field ``RUNNING/TOTAL``
    (fs/proc/loadavg.c: nr_running(), the reader of the file included), or None."""
    fields = text.split()
    if len(fields) < 4:
        return None
    running, _, total = fields[3].partition("/")
    if not (running.isdigit() and total.isdigit()):
        return None
    return int(running)


def _idle_cpus() -> float:
    """How many of the CPUs this process may run on are idle now, besides the one it runs on:
    those it may use less the tasks runnable at this moment (this one included). The 1-minute
    load average, used where /proc/loadavg cannot be read, also counts the last minute's runs
    of check itself: under a benchmark or a watch service's rounds it stays near 1 on an idle
    machine, and the second reader was forked or not from one round to the next."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        with open("/proc/loadavg", "rb") as f:
            running = _runnable(f.read(256).decode("ascii", "replace"))
    except OSError:
        running = None
    if running is not None:
        return float(n - max(running, 1))
    try:
        return n - 1 - os.getloadavg()[0]
    except OSError:
        return 0.0


def read_many(pids: Sequence[int], read: Callable[[int], Dict[str, Any]]) -> Tuple[Dict[int, Any], Dict[str, int]]:
    """``({pid: process}, skipped counts)`` for *pids*, read with *read* (which raises the
    reader's errors), in two processes where that is faster."""
    pids = list(pids)
    if len(pids) < PARALLEL_MIN or _idle_cpus() < 1 or "parallel" in dumpability.disabled_features():
        return _read_share(pids, read)
    theirs, mine = pids[: len(pids) // 2], pids[len(pids) // 2:]
    r, w = os.pipe()
    try:
        child = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return _read_share(pids, read)
    if child == 0:  # the forked reader: read, answer, exit without running any cleanup
        code = 1
        try:
            os.close(r)
            data = marshal.dumps(_read_share(theirs, read))
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
            code = 0
        except BaseException:
            pass
        finally:
            os._exit(code)
    os.close(w)
    procs: Dict[int, Any] = {}
    skipped: Dict[str, int] = {}
    try:
        procs, skipped = _read_share(mine, read)
        chunks: List[bytes] = []
        while True:
            b = os.read(r, 1 << 20)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
        _, status = os.waitpid(child, 0)
    got = None
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        try:
            got = marshal.loads(b"".join(chunks))
        except (ValueError, EOFError, TypeError):
            got = None
    if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], dict) and isinstance(got[1], dict)):
        got = _read_share(theirs, read)  # the forked reader failed: read its share here
    procs.update(got[0])
    for k, v in got[1].items():
        skipped[k] = skipped.get(k, 0) + v
    return dict(sorted(procs.items())), skipped
