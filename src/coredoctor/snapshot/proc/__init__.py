"""
/proc/PID
---------
The only reader of ``/proc`` (and of the pidfd and ptrace answers about a process). Every read
goes under one root (``COREDOCTOR_PROCFS``, default ``/proc``: :mod:`.base`) and raises the one
error model of :mod:`coredoctor.errors` -- :class:`NoSuchProcess` (never there, or gone before
the first read), :class:`ProcessGone` (a ``NoSuchProcess``: vanished mid-read),
:class:`ZombieProcess` (a ``NoSuchProcess``: exited, not yet reaped), :class:`KernelThread`
and :class:`AccessDenied`, each with the pid and, once read, the name. The caller that decides
catches them once (``snapshot.take`` skips and counts, the tracer treats a vanished task as no
answer).

- :func:`read_process`: one process into plain data for the snapshot: credentials, signal
  masks, limits, umask, cwd/root, namespaces, executable, unit, the ownership of
  ``/proc/PID/status`` and the dumpability chain (:mod:`.dumpability`).
- :mod:`.task`: the small per-task reads of ``coredoctor trace``.
- :func:`unit_from_cgroup`: the one rule that names a process's systemd unit.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import signal
import stat as _st

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Dict, List, Optional, Tuple

from coredoctor.errors import AccessDenied, KernelThread, NoSuchProcess, ProcessGone, ZombieProcess, proc_error
from coredoctor.snapshot import containers as _containers
from coredoctor.snapshot.proc import base as _base, dumpability, pidfd, runtime as _runtime
from coredoctor.snapshot.proc.base import list_pids, parse_stat, parse_status, root, stat as _stat, tids

__all__ = ["read_process", "stat", "list_pids", "comms", "tids", "Wants", "PROC", "root", "unit_from_cgroup",
           "parse_status", "parse_stat", "UNIT_SUFFIXES", "is_live_root"]

#: the root at import time (kept for older callers; every read asks :func:`root`)
PROC = root()

#: the systemd unit types a process's cgroup can be named after (systemd.unit(5))
UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount")

if TYPE_CHECKING:
    Proc = Dict[str, Any]

_user_cache: Dict[int, Optional[str]] = {}
_group_cache: Dict[int, Optional[str]] = {}


def _user(uid: int) -> Optional[str]:
    if uid not in _user_cache:
        try:
            _user_cache[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _user_cache[uid] = None
    return _user_cache[uid]


def _group(gid: int) -> Optional[str]:
    if gid not in _group_cache:
        try:
            _group_cache[gid] = grp.getgrgid(gid).gr_name
        except KeyError:
            _group_cache[gid] = None
    return _group_cache[gid]


def stat(pid: int) -> Dict[str, Any]:
    """/proc/PID/stat parsed (state, ppid, flags, starttime, exit_code); NoSuchProcess when gone."""
    return _stat(pid)


def is_live_root(r: Optional[str] = None) -> bool:
    """Is the root this kernel's own procfs (so that pidfds and prlimit() are about the same
    processes)? A fake tree (tests, a copied /proc) is read as files only."""
    return (r or root()) == "/proc"


def comms(base: Optional[str] = None) -> Dict[int, str]:
    """{pid: comm} of every process (a cheap scan: one small read each)."""
    r = base or root()
    out = {}
    for pid in list_pids(r):
        try:
            out[pid] = _base.read(pid, "comm", base=r).rstrip("\n")
        except (NoSuchProcess, AccessDenied, OSError):
            continue
    return out


def _kb(v: Optional[str]) -> Optional[int]:
    return int(v.split()[0]) * 1024 if v else None


_LIMIT_ROWS = {"Max core file size": "core", "Max file size": "fsize"}


def _parse_limits(text: str) -> Dict[str, List[Optional[int]]]:
    """/proc/PID/limits -> {"core": [soft, hard], "fsize": [...]}, None meaning unlimited.
    (Read from /proc rather than prlimit(2): that needs CAP_SYS_RESOURCE for other users.)"""
    out = {}
    for row, key in _LIMIT_ROWS.items():
        i = text.find(row)
        if i >= 0:
            vals = text[i + len(row):text.find("\n", i)].split()
            out[key] = [None if v == "unlimited" else int(v) for v in vals[:2]]
    return out


_RLIMITS = (("core", resource.RLIMIT_CORE), ("fsize", resource.RLIMIT_FSIZE))
_INF = resource.RLIM_INFINITY


def _limits(pid: int, base: str, comm: Optional[str] = None) -> Dict[str, List[Optional[int]]]:
    """prlimit(2) where it is allowed (same ids, or CAP_SYS_RESOURCE) on the live procfs, else
    /proc/PID/limits."""
    if base.startswith("/proc/"):
        try:
            out = {}
            for key, res in _RLIMITS:
                soft, hard = resource.prlimit(pid, res)
                out[key] = [None if soft == _INF else soft, None if hard == _INF else hard]
            return out
        except PermissionError:
            pass
        except ProcessLookupError as e:
            raise ProcessGone(pid, comm) from e
    return _parse_limits(_base.read(pid, "limits", comm, base=base.rsplit("/", 1)[0]))


def unit_from_cgroup(text: str) -> Tuple[Optional[str], Optional[str]]:
    """The systemd unit a process belongs to, from its /proc/PID/cgroup: the last
    .service/.scope/.socket/.mount component of the unified (``0::``) hierarchy's path, else of
    the v1 ``name=systemd`` one; and that path. The one unit rule: the snapshot's ``unit`` and
    every target named as a unit (:mod:`coredoctor.snapshot.targets`) use it."""
    paths = {}
    i = text.find("0::")
    if i == 0 or (i > 0 and text[i - 1] == "\n"):
        paths["unified"] = text[i + 3:text.find("\n", i) if text.find("\n", i) >= 0 else None]
    j = text.find(":name=systemd:")
    if j >= 0:
        start = j + len(":name=systemd:")
        end = text.find("\n", start)
        paths["systemd"] = text[start:end if end >= 0 else None]
    for key in ("unified", "systemd"):
        path = paths.get(key)
        if path and "." in path:
            for comp in reversed(path.split("/")):
                if comp.endswith(UNIT_SUFFIXES):
                    return comp, path
    return None, paths.get("unified") or paths.get("systemd")


#: the name older callers and tests use
_unit_from_cgroup = unit_from_cgroup

_UNITS: Dict[str, Tuple[Optional[str], Optional[str]]] = {}


def _unit_of(text: str) -> Tuple[Optional[str], Optional[str]]:
    """:func:`unit_from_cgroup`, parsed once per distinct cgroup file text (most processes of a
    host share a few cgroups; the file itself is still read for each process)."""
    r = _UNITS.get(text)
    if r is None:
        if len(_UNITS) > 4096:
            _UNITS.clear()
        r = _UNITS[text] = unit_from_cgroup(text)
    return r


_CONTAINERS: Dict[str, Optional[Dict[str, Any]]] = {}


def _container_of(text: str) -> Optional[Dict[str, Any]]:
    """:func:`coredoctor.snapshot.containers.from_cgroup` (identity from the cgroup path alone;
    ``snapshot.take`` fills names from the runtime's state), parsed once per cgroup text."""
    if text not in _CONTAINERS:
        if len(_CONTAINERS) > 4096:
            _CONTAINERS.clear()
        _CONTAINERS[text] = _containers.from_cgroup(text)
    c = _CONTAINERS[text]
    return dict(c, state=list(c["state"])) if c is not None else None


def _exe_stat(pid: int, exe: str, base: Optional[str] = None) -> Optional[Dict[str, Any]]:
    path = f"{base or root() + '/' + str(pid)}/exe"
    try:
        st = os.stat(path)
    except OSError:
        return None
    fcaps = False
    try:
        fcaps = bool(os.getxattr(path, "security.capability"))
    except OSError:
        pass
    return {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
            "setuid": bool(st.st_mode & _st.S_ISUID),
            "setgid": bool(st.st_mode & _st.S_ISGID and st.st_mode & _st.S_IXGRP),
            "fcaps": fcaps}


def _read(path: str) -> str:
    """The text of one small file (one read)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode("utf-8", "replace")
    finally:
        os.close(fd)


class Wants:
    """Which optional facts the model will need for this core_pattern, and the host's own
    namespace/root identities to compare with. Built once per snapshot."""

    def __init__(self, parsed: Optional[Dict[str, Any]] = None, base: Optional[str] = None) -> None:
        pat = (parsed or {}).get("pattern", "")
        kind = (parsed or {}).get("kind", "file")
        self.root = base or root()
        self.uts = "%h" in pat
        self.thread_comm = "%e" in pat
        self.root_is_host = "%E" in pat or "%f" in pat
        self.dirs: Tuple[str, ...] = () if kind != "file" else ("root",) if (parsed or {}).get("absolute") \
            else ("cwd",)
        self.userns = kind == "file"
        self.self_ns: Dict[str, Optional[str]] = {}
        for ns in ("uts", "user"):
            try:
                self.self_ns[ns] = os.readlink(f"{self.root}/self/ns/{ns}")
            except OSError:
                self.self_ns[ns] = None
        try:
            st = os.stat("/")
            self.self_root: Optional[str] = f"{st.st_dev}:{st.st_ino}"
        except OSError:
            self.self_root = None


def read_process(pid: int, use_pidfd: bool = True, wants: Optional[Wants] = None) -> Proc:
    """Read *pid* into plain data.

    Raises NoSuchProcess (no such pid), ZombieProcess (exited, not reaped), KernelThread (no user
    memory), ProcessGone (exited mid-read) or AccessDenied. Identity: a pidfd is opened first and
    checked last (``pidfd_send_signal(fd, 0)``), so a process that exits mid-read -- or whose pid
    is reused -- raises ProcessGone instead of mixing two processes' facts. *wants*
    (:class:`Wants`) skips reads the model will not use.
    """
    wants = wants or Wants()
    r = wants.root
    base = f"{r}/{pid}"
    pfd = None
    if is_live_root(r):
        try:
            pfd = pidfd.open_pidfd(pid)
        except ProcessLookupError as e:
            raise NoSuchProcess(pid) from e
    else:
        use_pidfd = False
    try:
        return _read_process(pid, base, pfd, use_pidfd, wants)
    finally:
        if pfd is not None:
            os.close(pfd)


def _ns_is_host(base: str, ns: str, wants: Wants) -> Optional[bool]:
    try:
        mine = wants.self_ns.get(ns)
        return (os.readlink(f"{base}/ns/{ns}") == mine) if mine else None
    except OSError:
        return None


def _no_mm(pid: int, s: Dict[str, str]) -> Exception:
    """Why a task has no ``VmSize``: a zombie, a kernel thread, or a process in the middle of
    exiting (its mm already released by exit_mm())."""
    comm = s.get("Name")
    state = s.get("State", "")[:1]
    if state in ("Z", "X"):
        return ZombieProcess(pid, comm)
    kt = s.get("Kthread")  # 6.1+ prints it; before, kthreadd's children are the kernel threads
    if kt == "1" or (kt is None and (pid == 2 or s.get("PPid") == "2")):
        return KernelThread(pid, comm)
    return ProcessGone(pid, comm)


def _optional(pid: int, name: str, comm: Optional[str], r: str, denied_ok: bool = False) -> Optional[str]:
    """A file some kernels do not have: None when it is missing while the process is still
    there (or, with *denied_ok*, refused); ProcessGone when the process went away."""
    try:
        return _base.read(pid, name, comm, base=r)
    except ProcessGone:
        if os.path.exists(f"{r}/{pid}"):
            return None
        raise
    except AccessDenied:
        if denied_ok:
            return None
        raise


def _read_process(pid: int, base: str, pfd: Optional[int], use_pidfd: bool, wants: Wants) -> Proc:
    r = wants.root
    text, owner = _base.read_owned(pid, "status", base=r, first=True)
    s = parse_status(text)
    comm = s.get("Name")
    if "VmSize" not in s:
        raise _no_mm(pid, s)
    uids = [int(x) for x in s["Uid"].split()]
    gids = [int(x) for x in s["Gid"].split()]
    p: Proc = {
        "pid": pid,
        "comm": comm,
        "ppid": int(s.get("PPid", 0)),
        "state": s.get("State", "")[:1],
        "tracer_pid": int(s.get("TracerPid", 0)),
        "nspid": [int(x) for x in s.get("NSpid", str(pid)).split()],
        "threads": int(s.get("Threads", 1)),
        "creds": {"uid": uids, "gid": gids,
                  "groups": [int(x) for x in s.get("Groups", "").split()],
                  "cap_prm": s.get("CapPrm", "0"), "cap_eff": s.get("CapEff", "0"),
                  "user": _user(uids[1]), "group": _group(gids[1])},
        "sig": {"blocked": s.get("SigBlk"), "ignored": s.get("SigIgn"), "caught": s.get("SigCgt")},
        "umask": int(s["Umask"], 8) if "Umask" in s else None,
        "core_dumping": s.get("CoreDumping") == "1",
        "mem": {"rss": _kb(s.get("VmRSS")), "anon": _kb(s.get("RssAnon")), "shmem": _kb(s.get("RssShmem"))},
        "proc_owner": list(owner),
    }
    p["limits"] = _limits(pid, base, comm)
    try:  # (the common case in one step; any error is classified by _optional's read)
        cf: Optional[str] = _read(f"{base}/coredump_filter")
    except OSError:
        cf = _optional(pid, "coredump_filter", comm, r)  # a kernel without ELF core dumps has none
    p["coredump_filter"] = cf.strip() if cf is not None else None
    for link in ("exe", "cwd"):
        try:
            p[link] = os.readlink(f"{base}/{link}")
        except OSError:
            p[link] = None
    p["root_id"] = p["cwd_id"] = None
    for which in sorted(set(wants.dirs) | ({"root"} if wants.root_is_host else set())):
        try:
            st = os.stat(f"{base}/{which}")
            p[f"{which}_id"] = f"{st.st_dev}:{st.st_ino}"
        except OSError:
            pass
    if wants.root_is_host and p["root_id"] and wants.self_root:
        p["root_is_host"] = p["root_id"] == wants.self_root
    if wants.userns:
        p["userns_is_host"] = _ns_is_host(base, "user", wants)
    try:
        cg: Optional[str] = _read(f"{base}/cgroup")
    except OSError:
        cg = _optional(pid, "cgroup", comm, r, denied_ok=True)
    p["unit"], p["cgroup"] = _unit_of(cg) if cg is not None else (None, None)
    p["container"] = _container_of(cg) if cg is not None else None
    p["uts_is_host"] = _ns_is_host(base, "uts", wants) if wants.uts else None
    if wants.thread_comm and p["threads"] > 1:
        p["thread_comms_same"] = _thread_comms_same(pid)
    if p["threads"] > 1 and p["sig"]["blocked"] and int(p["sig"]["blocked"], 16):
        p["thread_blocked"] = _thread_masks(pid)
    # dumpability: the exact kernel answer where there is one
    p["dumpable"] = _dumpable(pid, p, use_pidfd, pfd)
    # where non-dumpability came from: the executable's set-id bits and file capabilities
    p["exe_stat"] = _exe_stat(pid, p["exe"], base) if p["exe"] and p["dumpable"]["value"] != 1 else None
    # a runtime's handler for a fatal signal (Go, HotSpot, faulthandler, ...): coredoctor.runtimes
    if _runtime.catches_fatal(p["sig"]["caught"]):
        p["runtime"] = _runtime.read_runtime(pid, comm, r)
    # the process we opened must still be alive: otherwise these facts may mix two processes
    # (a PIDFD_GET_INFO answer above, made after every read, already proved it)
    if pfd is not None and p["dumpable"]["source"] != "pidfd":
        try:
            signal.pidfd_send_signal(pfd, 0)
        except ProcessLookupError:
            raise ProcessGone(pid, comm)
        except PermissionError:
            pass
    elif pfd is None and not os.path.exists(base):
        raise ProcessGone(pid, comm)
    return p


def _thread_comms_same(pid: int) -> Optional[bool]:
    names = set()
    try:
        ts = tids(pid)
    except NoSuchProcess:
        return None
    for tid in ts:
        try:
            names.add(_base.read(pid, "comm", tid=tid).rstrip("\n"))
        except (NoSuchProcess, OSError):
            continue
    return len(names) == 1


def _thread_masks(pid: int) -> Optional[List[str]]:
    out = []
    try:
        ts = tids(pid)
    except NoSuchProcess:
        return None
    for tid in ts:
        try:
            blk = parse_status(_base.read(pid, "status", tid=tid if tid != pid else None)).get("SigBlk")
        except (NoSuchProcess, OSError):
            continue
        if blk:
            out.append(blk)
    return out


def _dumpable(pid: int, p: Proc, use_pidfd: bool, pfd: Optional[int] = None) -> Dict[str, Any]:
    """The dumpability chain (:mod:`.dumpability`) without the ptrace probe, which
    ``snapshot.take`` runs once for every process that needs it."""
    if use_pidfd:
        ans = dumpability.from_pidfd(pid, pfd, p["comm"])
        if ans is not None:
            return ans
    c = p["creds"]
    return dumpability.from_owner(p["proc_owner"], c["uid"][1], c["gid"][1])


#: the /proc readers, for the other snapshot modules
read_text = _read
