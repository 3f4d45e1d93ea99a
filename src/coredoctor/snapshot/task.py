"""
Per-task facts for the tracer
-----------------------------
Small, cheap reads ``coredoctor trace`` makes while it follows processes: one task's
credentials (``/proc/PID/task/TID/status``), its dumpability straight from the kernel
(``PIDFD_INFO_COREDUMP``, else the ownership of ``/proc/PID/status``), ``fs.suid_dumpable``,
and after an exit, whether a core was written (``PIDFD_INFO_EXIT``'s wait status, or
``PF_DUMPCORE`` in ``/proc/PID/stat`` while the task is a zombie).

Every read that finds the task gone returns None: a process may exit at any moment.
"""

import fcntl
import os
import struct

from coredoctor.kernel import dumpable as dmod
from coredoctor.snapshot import pidfd as pidfdmod
from coredoctor.snapshot.proc import _read  # one small-file reader for /proc

__all__ = ["read_creds", "read_dumpable", "suid_dumpable", "open_pidfd", "exit_status",
           "zombie_dumpcore", "zombie_status", "self_dumpable", "exe_facts", "PF_DUMPCORE"]

PROC = os.environ.get("COREDOCTOR_PROCFS", "/proc")
#: include/linux/sched.h: "dumped core" (set by coredump_wait() once the dump starts)
PF_DUMPCORE = 0x00000200


def read_creds(pid, tid=None):
    """{"uid": [r,e,s,fs], "gid": [...], "cap_prm": int, "cap_eff": int, "tgid": int, "comm": str,
    "owner": [uid, gid] of the status file} or None when the task is gone."""
    path = f"{PROC}/{pid}/task/{tid}/status" if tid and tid != pid else f"{PROC}/{pid}/status"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        text = os.read(fd, 8192).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    out = {"owner": [st.st_uid, st.st_gid]}
    for line in text.split("\n"):
        k, _, v = line.partition(":")
        if k == "Uid":
            out["uid"] = [int(x) for x in v.split()]
        elif k == "Gid":
            out["gid"] = [int(x) for x in v.split()]
        elif k == "CapPrm":
            out["cap_prm"] = int(v.strip(), 16)
        elif k == "CapEff":
            out["cap_eff"] = int(v.strip(), 16)
        elif k == "Tgid":
            out["tgid"] = int(v)
        elif k == "Name":
            out["comm"] = v.strip()
        elif k == "PPid":
            out["ppid"] = int(v)
        elif k == "CapBnd":
            out["cap_bnd"] = int(v.strip(), 16)
    if "uid" not in out or "gid" not in out:
        return None
    out.setdefault("cap_prm", 0)
    out.setdefault("cap_eff", 0)
    return out


def read_dumpable(pid, creds=None, use_pidfd=True, pfd=None):
    """The kernel's dumpability of *pid*: {"value": 0|1|2|None, "candidates": [...], "source":
    "pidfd"|"proc-owner"|"unknown", "evidence": str}, or None when the process is gone."""
    if use_pidfd:
        r = None
        # a pidfd held since before an exec was seen to answer coredump_mask=0 on 6.18 while a
        # fresh one answers: ask a fresh one too
        for fd in ((pfd, None) if pfd is not None else (None,)):
            try:
                r = pidfdmod.coredump_info(pid, fd)
            except (ProcessLookupError, OSError):
                r = None
            if r:
                break
        if r:
            v = dmod.from_pidfd_coredump_mask(r[0])
            if v is not None:
                return {"value": v, "candidates": [v], "source": "pidfd",
                        "evidence": f"pidfd PIDFD_INFO_COREDUMP coredump_mask={r[0]:#x}"}
    c = creds if creds is not None else read_creds(pid)
    if c is None:
        return None
    cands, ev = dmod.from_proc_owner(c["owner"][0], c["owner"][1], c["uid"][1], c["gid"][1])
    cands = sorted(cands)
    if cands == [0, 1, 2]:
        r = _ptrace_probe(pid, c)
        if r is not None:
            return r
        return {"value": None, "candidates": cands, "source": "unknown", "evidence": ev}
    return {"value": cands[0] if len(cands) == 1 else None, "candidates": cands, "source": "proc-owner",
            "evidence": ev}


def _ptrace_probe(pid, c):
    """root:root processes on kernels without the pidfd query: a forked root probe without
    CAP_SYS_PTRACE asks kcmp() (snapshot/ptrace.py); only where a refusal can mean nothing but
    dumpable != 1 (same ids, permitted capabilities within ours, same user namespace)."""
    from coredoctor.snapshot import ptrace
    if "ptrace" in {x.strip() for x in os.environ.get("COREDOCTOR_DISABLE", "").split(",")}:
        return None
    if set(c["uid"][:3]) != {0} or set(c["gid"][:3]) != {0}:
        return None
    mine = read_creds(os.getpid())
    if mine is None or c.get("cap_prm", 0) & ~mine.get("cap_prm", 0):
        return None
    try:
        if os.readlink(f"{PROC}/{pid}/ns/user") != os.readlink("/proc/self/ns/user"):
            return None
    except OSError:
        return None
    r = ptrace.probe_root_dumpable([pid]).get(pid)
    if r is True:
        return {"value": 1, "candidates": [1], "source": "ptrace-access",
                "evidence": "a root probe without CAP_SYS_PTRACE may access it (__ptrace_may_access(): dumpable == 1)"}
    if r is False:
        return {"value": None, "candidates": [0, 2], "source": "ptrace-access",
                "evidence": "a root probe without CAP_SYS_PTRACE is refused (__ptrace_may_access(): "
                            "dumpable != 1); 0 and 2 look alike"}
    return None


def exe_facts(path, root_pid=None):
    """Set-id bits, owner and file capabilities of an executable (as exec will see it, through
    the process's root when *root_pid* is given), or None when it cannot be read."""
    import stat as st_mod
    p = f"{PROC}/{root_pid}/root{path}" if root_pid and path.startswith("/") else path
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


def self_dumpable():
    """prctl(PR_GET_DUMPABLE) of the calling process: exact on every kernel (what fork copies)."""
    import ctypes
    try:
        v = ctypes.CDLL(None, use_errno=True).prctl(3, 0, 0, 0, 0)
    except (OSError, AttributeError):
        return None
    return v if v in (0, 1, 2) else None


def suid_dumpable():
    try:
        return int(_read("/proc/sys/fs/suid_dumpable").strip())
    except (OSError, ValueError):
        return None


def open_pidfd(pid):
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None  # gone, or a thread that is not a group leader


_FMT = "=QQ11IiII"
_SIZE = struct.calcsize(_FMT)


def exit_status(pfd):
    """PIDFD_INFO_EXIT (6.15+): the wait status of an exited process, or None (still running,
    or the kernel has no PIDFD_INFO_EXIT)."""
    if pfd is None:
        return None
    buf = bytearray(_SIZE)
    struct.pack_into("=Q", buf, 0, pidfdmod.PIDFD_INFO_EXIT)
    try:
        fcntl.ioctl(pfd, pidfdmod.PIDFD_GET_INFO, buf, True)
    except OSError:
        return None
    f = struct.unpack_from(_FMT, buf)
    if not f[0] & pidfdmod.PIDFD_INFO_EXIT:
        return None
    return f[13]


def zombie_status(pid):
    """The wait status of *pid* while it is a zombie (``exit_code``, field 52 of /proc/PID/stat,
    3.5+: includes 0x80 when a core was written), or None when it is not a zombie (or already
    reaped)."""
    try:
        text = _read(f"{PROC}/{pid}/stat")
    except OSError:
        return None
    rest = text[text.rfind(")") + 2:].split()
    if not rest or rest[0] not in ("Z", "X") or len(rest) < 50:
        return None
    return int(rest[49])


def zombie_dumpcore(pid):
    """PF_DUMPCORE of *pid* read while it is a zombie: True/False, or None when it was already
    reaped (or is not a zombie yet)."""
    try:
        text = _read(f"{PROC}/{pid}/stat")
    except OSError:
        return None
    rest = text[text.rfind(")") + 2:].split()
    if not rest or rest[0] not in ("Z", "X"):
        return None
    return bool(int(rest[6]) & PF_DUMPCORE)
