"""
Per-task reads for the tracer
-----------------------------
Small, cheap reads ``coredoctor trace`` makes while it follows processes: one task's
credentials (``/proc/PID/task/TID/status``), its dumpability by the one chain of
:mod:`.dumpability` (``PIDFD_INFO_COREDUMP``, else the ownership of ``/proc/PID/status``, else
the ptrace probe), ``fs.suid_dumpable``, and after an exit, whether a core was written
(``PIDFD_INFO_EXIT``'s wait status, or ``exit_code`` / ``PF_DUMPCORE`` in ``/proc/PID/stat``
while the task is a zombie).

Like the rest of the reader these raise the error model (NoSuchProcess when the task is gone);
the tracer, which expects tasks to exit at any moment, catches them in one place.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Dict, Optional

from coredoctor.errors import NoSuchProcess
from coredoctor.snapshot.proc import base, dumpability
from coredoctor.snapshot.proc.base import PF_DUMPCORE
from coredoctor.snapshot.proc.pidfd import exit_status, open_pidfd as _open

__all__ = ["read_creds", "read_dumpable", "suid_dumpable", "open_pidfd", "exit_status",
           "zombie_dumpcore", "zombie_status", "self_dumpable", "exe_facts", "PF_DUMPCORE", "read_unit"]


def read_creds(pid: int, tid: Optional[int] = None) -> Dict[str, Any]:
    """{"uid": [r,e,s,fs], "gid": [...], "cap_prm": int, "cap_eff": int, "cap_bnd": int, "tgid": int,
    "ppid": int, "comm": str, "owner": [uid, gid] of the status file}; NoSuchProcess when the
    task is gone."""
    text, owner = base.read_owned(pid, "status", tid=tid)
    s = base.parse_status(text)
    try:
        out: Dict[str, Any] = {"owner": list(owner), "uid": [int(x) for x in s["Uid"].split()],
                               "gid": [int(x) for x in s["Gid"].split()]}
    except (KeyError, ValueError):
        raise NoSuchProcess(pid, f"pid {pid}: its status shows no credentials (exiting)", name=s.get("Name"))
    for key, name in (("CapPrm", "cap_prm"), ("CapEff", "cap_eff"), ("CapBnd", "cap_bnd")):
        if key in s:
            out[name] = int(s[key], 16)
    for key, name in (("Tgid", "tgid"), ("PPid", "ppid")):
        if key in s:
            out[name] = int(s[key])
    if "Name" in s:
        out["comm"] = s["Name"]
    out.setdefault("cap_prm", 0)
    out.setdefault("cap_eff", 0)
    return out


def read_dumpable(pid: int, creds: Optional[Dict[str, Any]] = None, use_pidfd: bool = True,
                  pfd: Optional[int] = None) -> Dict[str, Any]:
    """The kernel's dumpability of *pid* (:mod:`.dumpability`'s answer dict); NoSuchProcess when
    the process is gone."""
    c = creds
    if use_pidfd:
        ans = dumpability.from_pidfd(pid, pfd, (c or {}).get("comm"))
        if ans is not None:
            return ans
    if c is None:
        c = read_creds(pid)
    ans = dumpability.from_owner(c["owner"], c["uid"][1], c["gid"][1])
    if ans["candidates"] == [0, 1, 2]:
        got = dumpability.by_ptrace([(pid, c["uid"], c["gid"], c.get("cap_prm", 0), None)])
        if pid in got:
            return got[pid]
    return ans


def exe_facts(path: str, root_pid: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """Set-id bits, owner and file capabilities of an executable (as exec will see it, through
    the process's root when *root_pid* is given), or None when it cannot be read."""
    import stat as st_mod
    p = f"{base.root()}/{root_pid}/root{path}" if root_pid and path.startswith("/") else path
    try:
        st = os.stat(p)
    except OSError:
        return None
    try:
        fcaps = bool(os.getxattr(p, "security.capability"))
    except OSError:
        fcaps = False
    return {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
            "setuid": bool(st.st_mode & st_mod.S_ISUID),
            "setgid": bool(st.st_mode & st_mod.S_ISGID and st.st_mode & st_mod.S_IXGRP), "fcaps": fcaps}


def self_dumpable() -> Optional[int]:
    """prctl(PR_GET_DUMPABLE) of the calling process: exact on every kernel (what fork copies)."""
    import ctypes
    try:
        v = ctypes.CDLL(None, use_errno=True).prctl(3, 0, 0, 0, 0)
    except (OSError, AttributeError):
        return None
    return v if v in (0, 1, 2) else None


def suid_dumpable() -> Optional[int]:
    """fs.suid_dumpable now (None when it cannot be read)."""
    try:
        with open(f"{base.root()}/sys/fs/suid_dumpable") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def open_pidfd(pid: int) -> Optional[int]:
    """A pidfd for *pid*, or None (no pidfd_open, a thread that is not a group leader, or a
    fake procfs root); NoSuchProcess when there is no such process."""
    if not base.root() == "/proc":
        return None
    try:
        return _open(pid)
    except ProcessLookupError as e:
        raise NoSuchProcess(pid) from e


def zombie_status(pid: int) -> Optional[int]:
    """The wait status of *pid* while it is a zombie (``exit_code``, field 52 of /proc/PID/stat,
    3.5+: includes 0x80 when a core was written), or None when it is not a zombie (yet).
    NoSuchProcess when it was already reaped."""
    st = base.stat(pid)
    if st["state"] not in ("Z", "X"):
        return None
    return st["exit_code"]


def zombie_dumpcore(pid: int) -> Optional[bool]:
    """PF_DUMPCORE of *pid* read while it is a zombie: True/False, or None when it is not a
    zombie yet. NoSuchProcess when it was already reaped."""
    st = base.stat(pid)
    if st["state"] not in ("Z", "X"):
        return None
    return bool(st["flags"] & PF_DUMPCORE)



def read_unit(pid: int) -> "Dict[str, Optional[str]]":
    """``{"unit": NAME or None, "cgroup": PATH or None}`` of a process, from its
    /proc/PID/cgroup by the one unit rule (:func:`coredoctor.snapshot.proc.unit_from_cgroup`);
    NoSuchProcess when it is gone (``coredoctor watch`` names the service of each event)."""
    from coredoctor.snapshot.proc import _unit_of
    try:
        fd = os.open(f"/proc/{pid}/cgroup", os.O_RDONLY)
    except FileNotFoundError as e:
        raise NoSuchProcess(pid) from e
    except OSError as e:
        raise NoSuchProcess(pid, f"pid {pid}: its cgroup cannot be read ({e.strerror})") from e
    try:
        text = os.read(fd, 65536).decode("utf-8", "replace")
    except OSError as e:
        raise NoSuchProcess(pid, f"pid {pid}: its cgroup cannot be read ({e.strerror})") from e
    finally:
        os.close(fd)
    if not text:
        raise NoSuchProcess(pid, f"pid {pid}: its cgroup file is empty (exiting)")
    unit, cg = _unit_of(text)
    return {"unit": unit, "cgroup": cg}
