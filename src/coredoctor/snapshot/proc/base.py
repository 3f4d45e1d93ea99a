"""
The way into /proc
------------------
One root for every read (``COREDOCTOR_PROCFS``, default ``/proc``; a test points it at a fake
tree), the reads that turn an OS error into the error model (:func:`coredoctor.errors.proc_error`),
and the one parser of each file: ``status`` (proc_pid_status(5)) and ``stat``
(proc_pid_stat(5): fields after the *last* ``)``, since the comm inside the parentheses is the
process's own choice and may hold spaces and parentheses).
"""

from __future__ import annotations

import os
from itertools import repeat

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Dict, List, Optional, Tuple

from coredoctor.errors import proc_error

__all__ = ["root", "read", "read_owned", "parse_status", "parse_stat", "status", "stat", "list_pids",
           "tids", "task_dir", "STATUS_KEYS", "PF_DUMPCORE", "PF_KTHREAD"]

#: include/linux/sched.h: "dumped core" (set by coredump_wait() once the dump starts)
PF_DUMPCORE = 0x00000200
#: include/linux/sched.h: "I am a kernel thread"
PF_KTHREAD = 0x00200000

#: the /proc/PID/status keys coredoctor reads (fs/proc/array.c, proc_pid_status())
STATUS_KEYS = frozenset({
    "Name", "Umask", "State", "Tgid", "PPid", "TracerPid", "Uid", "Gid", "Groups", "NSpid", "Kthread",
    "SigBlk", "SigIgn", "SigCgt", "CapPrm", "CapEff", "CapBnd", "VmSize", "VmRSS", "RssAnon", "RssFile",
    "RssShmem", "CoreDumping", "Threads"})


def root() -> str:
    """The procfs every read goes through (``COREDOCTOR_PROCFS``, default ``/proc``)."""
    return os.environ.get("COREDOCTOR_PROCFS", "/proc")


def task_dir(pid: int, tid: Optional[int] = None, base: Optional[str] = None) -> str:
    """``ROOT/PID``, or ``ROOT/PID/task/TID`` for another thread of the group."""
    r = base or root()
    return f"{r}/{pid}/task/{tid}" if tid and tid != pid else f"{r}/{pid}"


def read(pid: int, name: str, comm: Optional[str] = None, tid: Optional[int] = None,
         base: Optional[str] = None, first: bool = False, size: int = 65536) -> str:
    """The text of ``ROOT/PID/NAME`` (one read: /proc files are generated whole). Raises
    NoSuchProcess (*first* read) / ProcessGone / AccessDenied."""
    r = base or root()
    path = f"{task_dir(pid, tid, r)}/{name}"
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.read(fd, size).decode("utf-8", "replace")
        finally:
            os.close(fd)
    except OSError as e:
        raise proc_error(e, pid, name, comm, r, first) from e


def read_owned(pid: int, name: str, tid: Optional[int] = None, base: Optional[str] = None,
               first: bool = True) -> Tuple[str, Tuple[int, int]]:
    """``(text, (uid, gid))`` of ``ROOT/PID/NAME``: its content and the owner of that same open
    file (task_dump_owner(): the ownership tells about dumpability)."""
    r = base or root()
    path = f"{task_dir(pid, tid, r)}/{name}"
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            return os.read(fd, 16384).decode("utf-8", "replace"), (st.st_uid, st.st_gid)
        finally:
            os.close(fd)
    except OSError as e:
        raise proc_error(e, pid, name, None, r, first) from e


def parse_status(text: str) -> Dict[str, str]:
    """/proc/PID/status -> {key: value} for :data:`STATUS_KEYS` (values stripped; of a key
    printed twice, the last)."""
    keys = STATUS_KEYS
    # every key read is printed before CapAmb (proc_pid_status(): task_sig() and task_cap()
    # come after the memory lines, then seccomp, cpus and context switches, which are not read)
    end = text.find("\nCapAmb:")
    if end >= 0:
        text = text[:end]
    # one split and one partition per line, in C (check --all parses 2,000 of these: this is
    # ~40% faster than a loop of the same steps)
    lines = text.split("\n")
    return {k: v.strip() for k, _, v in map(str.partition, lines, repeat(":", len(lines))) if k in keys}


def parse_stat(text: str) -> Optional[Dict[str, Any]]:
    """/proc/PID/stat -> {"state", "ppid", "flags", "starttime", "exit_code"} (exit_code, field
    52, 3.5+, only while the task is a zombie: its wait status, 0x80 if a core was written), or
    None when the text is not a stat line."""
    i = text.rfind(")")
    if i < 0:
        return None
    rest = text[i + 2:].split()
    if len(rest) < 20:
        return None
    try:
        out: Dict[str, Any] = {"state": rest[0], "ppid": int(rest[1]), "flags": int(rest[6]), "starttime": int(rest[19])}
        out["exit_code"] = int(rest[49]) if len(rest) >= 50 else None
    except ValueError:
        return None
    return out


def status(pid: int, tid: Optional[int] = None, base: Optional[str] = None, first: bool = True) -> Dict[str, str]:
    """The parsed status of *pid* (or its thread *tid*)."""
    return parse_status(read(pid, "status", tid=tid, base=base, first=first))


def stat(pid: int, tid: Optional[int] = None, base: Optional[str] = None, first: bool = True) -> Dict[str, Any]:
    """The parsed stat of *pid*; NoSuchProcess when it is gone (or the line cannot be parsed)."""
    from coredoctor.errors import NoSuchProcess
    p = parse_stat(read(pid, "stat", tid=tid, base=base, first=first))
    if p is None:
        raise NoSuchProcess(pid, f"pid {pid}: /proc/PID/stat cannot be parsed")
    return p


def list_pids(base: Optional[str] = None) -> List[int]:
    """Every pid (thread-group leader) under the root, sorted."""
    return sorted(int(d) for d in os.listdir(base or root()) if d.isdigit())


def tids(pid: int, base: Optional[str] = None) -> List[int]:
    """The thread ids of *pid*; NoSuchProcess when it is gone."""
    r = base or root()
    try:
        return sorted(int(t) for t in os.listdir(f"{r}/{pid}/task") if t.isdigit())
    except OSError as e:
        raise proc_error(e, pid, "task", None, r, True) from e
