"""
Cores on the live host
----------------------
What the host shows about a past crash now: files where its core may be (checked to be an ELF
core of that pid, written after the crash), sizes of stored cores, and a running instance of the
same program (check's verdict on it, its cwd, limits and unit; the unit's WorkingDirectory= when
systemd runs). The I/O half of :mod:`.report`.
"""

import errno
import glob
import os
import shutil
import stat
import struct
import subprocess
import time

from typing import Any, Dict, List, Mapping, Optional, Tuple

from coredoctor import elfcore
from coredoctor.errors import Error
from coredoctor.history import BadRecord, open_in_dir
from coredoctor.history import crashes as corr

__all__ = ["find", "size", "Host"]


def find(path_glob: str, crash: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The first file matching *path_glob* that is this crash's core (see :func:`_match_file`)."""
    for p in sorted(glob.glob(path_glob)):
        got = _match_file(p, crash)
        if got:
            return got
    return None


def _match_file(path: str, crash: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The core at *path*, if it belongs to *crash* (its pid in the ELF notes; written after
    the crash, so an older core of a reused pid does not count). The file is opened with openat
    O_NOFOLLOW from its directory (core directories are often world-writable: a symlink named like
    the core is not followed, nothing is ever deleted), and in a world-writable directory a file
    owned by neither root nor the crashed process's uid is not taken as its core."""
    d, name = os.path.split(path)
    try:
        dirfd = os.open(d or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            dst = os.fstat(dirfd)
            fd, st = open_in_dir(dirfd, name)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return {"status": "missing", "path": path, "size": None,
                        "why": f"{path} is a symlink, not a core: not followed (the kernel writes no "
                               "core through a symlink in a world-writable directory; planted?)"}
            return None
        except BadRecord:
            return None
    finally:
        os.close(dirfd)
    try:
        return _match_open(path, fd, st, dst, crash)
    finally:
        os.close(fd)


def _match_open(path: str, fd: int, st: os.stat_result, dst: os.stat_result,
                crash: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    if crash["time"] is not None and st.st_mtime < crash["time"] - 2 * corr.WINDOW:
        return None
    shared = bool(dst.st_mode & stat.S_IWOTH)  # world-writable: anyone may have put it there
    uid = crash.get("uid")
    if shared and st.st_uid != 0 and st.st_uid != uid:
        # fs/coredump.c: the kernel creates the core as the dumping task's fsuid, or root under
        # fs.suid_dumpable=2; in a world-writable directory a file of another user is no proof
        who = f"the crashed process's uid {uid}" if uid is not None else "a crashed uid (not known)"
        if uid is not None:
            return {"status": "missing", "path": path, "size": None,
                    "why": f"{path} is owned by uid {st.st_uid}, neither root nor {who}: not taken as its core"}
        if str(crash["pid"]) not in name_of(path):
            return None
        return {"status": "unknown", "path": path, "size": st.st_size,
                "why": f"{path} is owned by uid {st.st_uid} in a world-writable directory, and the crashed "
                       "process's uid is not known: it cannot be told from a planted file"}
    try:
        info = elfcore.inspect(path, fd=fd)  # this very inode, whatever the name is now
    except (ValueError, OverflowError, struct.error, MemoryError, IndexError):
        info = {"status": "not-core", "size": st.st_size, "pid": None, "why": "not a readable ELF core"}
    if info.get("why"):
        info["why"] = info["why"].replace(f"/proc/self/fd/{fd}", path)
    if info["pid"] is not None and info["pid"] != crash["pid"]:
        return None
    if info["status"] == "not-core" or info["status"] == "unreadable":
        return {"status": "unknown", "path": path, "size": info["size"], "why": info["why"]}
    if info["pid"] is None and info["status"] != "empty" and str(crash["pid"]) not in name_of(path):
        return None  # cut before its notes, and nothing ties it to this pid
    out = {"status": info["status"], "path": path, "size": info["size"]}
    if info["status"] == "truncated":
        out["expected_size"] = info["expected_size"]
        out["why"] = info["why"]
    return out


def name_of(path: str) -> str:
    return os.path.basename(path)


def size(path: str) -> Optional[int]:
    """The size of the regular file *path* itself: None for a symlink (never followed: cores lie
    in directories others may write), a FIFO, a device or nothing."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


_BOOT = None


#: seconds the kernel log's times may be ahead of the processes' start times (see Host.instance)
KMSG_CLOCK_SLACK = 5.0


def _start_time(pid: int) -> Optional[float]:
    """When *pid* started, in seconds since the epoch (``starttime`` of /proc/PID/stat, clock
    ticks since boot), or None when it is gone."""
    global _BOOT
    from coredoctor.errors import Error
    from coredoctor.snapshot import proc
    try:
        start = proc.stat(pid)["starttime"]
    except Error:
        return None
    if _BOOT is None:
        _BOOT = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return _BOOT + start / os.sysconf("SC_CLK_TCK")


def _container_since(p: Mapping[str, Any], procs: Mapping[int, Any]) -> Optional[float]:
    """When the container of *p* was there at the latest: the start of the oldest of *p* and
    its ancestors (the snapshot's parent chain) in that same container; None on the host."""
    c = p.get("container")
    if not isinstance(c, dict):
        return None
    times = [_start_time(q["pid"]) for q in procs.values()
             if isinstance(q.get("container"), dict) and q["container"].get("id") == c.get("id")]
    known = [t for t in times if t is not None]
    return min(known) if known else None


class Host:
    """What the live host tells about a crashed program today (read once, cached)."""

    def __init__(self, parsed: Dict[str, Any]) -> None:
        from coredoctor.snapshot import proc as procmod
        self.parsed = parsed
        self.comms: Dict[str, List[int]] = {}
        for pid, comm in procmod.comms().items():
            if pid != os.getpid():
                self.comms.setdefault(comm, []).append(pid)
        self._inst: Dict[Tuple[Any, ...], Optional[Dict[str, Any]]] = {}
        self._units: Dict[str, Optional[str]] = {}
        self._ccache: Dict[str, Any] = {}

    def instance(self, crash: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """A running instance of the crashed program, with check's verdict for the crash's signal:
        a restarted daemon has the same ids, limits and cwd. It must be the same program: the same
        executable when a source named it, or else the same comm *and* started after the crash (a
        restart) -- an older process that merely shares a name such as ``python`` says nothing."""
        from coredoctor import snapshot
        from coredoctor.kernel import gates
        cands = []
        for pid in self.comms.get(crash.get("comm") or "", []):
            if pid == crash["pid"]:
                continue
            started = _start_time(pid)
            restarted = crash.get("time") is not None and started is not None and (
                started >= crash["time"] - 1.0
                # a later pid (pids are handed out in order) started just "before" the crash: the
                # kernel log's clock (printk's local_clock()) may run ahead of CLOCK_MONOTONIC, by
                # seconds in an emulated arm64 guest; a restart is after the crash in pid order
                or (crash.get("pid") is not None and pid > crash["pid"]
                    and started >= crash["time"] - KMSG_CLOCK_SLACK))
            if restarted or crash.get("exe"):
                cands.append((pid, restarted))
        key = (tuple(cands[:5]), crash.get("exe"), crash.get("signal"))
        if key in self._inst:
            return self._inst[key]
        found = None
        for pid, restarted in cands[:5]:
            try:
                snap = snapshot.take([pid])
            except Error:
                continue
            procs = {p["pid"]: p for p in snap["processes"]}
            p = procs.get(pid)
            if p is None:
                continue
            if crash.get("exe") and crash["exe"] != p.get("exe") and not restarted:
                continue
            t = gates.evaluate(snap, p, procs.get(p["ppid"]), crash.get("signal") or "SIGSEGV", None, procs)
            found = {"pid": pid, "cwd": p.get("cwd"), "unit": p.get("unit"), "limits": p.get("limits"),
                     "container": p.get("container"), "container_since": _container_since(p, procs),
                     "verdict": t, "restarted": restarted}
            break
        self._inst[key] = found
        return found

    def complete_container(self, c: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        """A container from a recorded cgroup path with its name and image from the runtime's
        state (snapshot/containers.py; read once per container)."""
        from coredoctor.snapshot import containers
        return containers.complete(c, cache=self._ccache)

    def live_container(self, crash: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """The container of the crashed pid itself while it is still there (dumping, or a zombie
        not yet reaped) and started before the crash: its /proc/PID/cgroup."""
        from coredoctor.errors import Error
        from coredoctor.snapshot import containers, proc
        pid = crash.get("pid")
        if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
            return None
        started = _start_time(pid)
        if started is None or (crash.get("time") is not None and started > crash["time"] + 1.0):
            return None  # gone, or a new process that reuses the pid
        try:
            text = proc.base.read(pid, "cgroup")
        except Error:
            return None
        return self.complete_container(containers.from_cgroup(text))

    def unit_dir(self, unit: Optional[str]) -> Optional[str]:
        """A unit's WorkingDirectory= from systemd, when systemd runs (else None)."""
        if not unit or not os.path.isdir("/run/systemd/system") or shutil.which("systemctl") is None:
            return None
        if unit not in self._units:
            try:
                r = subprocess.run(["systemctl", "show", "-p", "WorkingDirectory", "--value", unit],
                                   capture_output=True, text=True, timeout=10)
                v = r.stdout.strip()
                self._units[unit] = v if r.returncode == 0 and v.startswith("/") else ("/" if r.returncode == 0 else None)
            except (OSError, subprocess.TimeoutExpired):
                self._units[unit] = None
        return self._units[unit]

    def base_dirs(self, crash: Mapping[str, Any]) -> Tuple[List[str], List[str]]:
        """Where a relative core name resolves, as far as it is knowable today."""
        dirs: List[str] = []
        where: List[str] = []
        inst = self.instance(crash)
        if inst and inst.get("cwd"):
            dirs.append(inst["cwd"])
            where.append(f"{inst['cwd']} (cwd of the running instance pid {inst['pid']})")
        d = self.unit_dir(crash.get("unit") or (inst or {}).get("unit"))
        if d and d not in dirs:
            dirs.append(d)
            where.append(f"{d} (WorkingDirectory of {crash.get('unit') or (inst or {}).get('unit')})")
        return dirs, where


