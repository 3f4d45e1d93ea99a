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


def _restart_rank(pid: int, restarted: bool, crashed: Any) -> Tuple[int, int]:
    """The order running instances are tried in: a restart with a pid after the crashed one
    first, the lowest such pid (the first process of that name made after it: pids are handed
    out in order); then a restart with a lower pid (the pids wrapped), then one that only shares
    the executable. A process of the same name made *before* the crashed one -- another
    container's copy of the program, restarted a second earlier -- is not taken while the
    crashed program's own restart is there."""
    after = isinstance(crashed, int) and pid > crashed
    return (0 if restarted and after else 1 if restarted else 2, pid if after else -pid)


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
            # made before the crashed process (a lower pid; pids are handed out in order unless
            # they wrap): a restart only if it started after the crash, without the clock slack
            # -- else it is another copy of the program (another container's, restarted a
            # moment before this crash)
            before = isinstance(crash.get("pid"), int) and pid < crash["pid"]
            restarted = crash.get("time") is not None and started is not None and (
                started >= crash["time"] - (0.0 if before else 1.0)
                # a later pid (pids are handed out in order) started just "before" the crash: the
                # kernel log's clock (printk's local_clock()) may run ahead of CLOCK_MONOTONIC, by
                # seconds in an emulated arm64 guest; a restart is after the crash in pid order
                or (crash.get("pid") is not None and pid > crash["pid"]
                    and started >= crash["time"] - KMSG_CLOCK_SLACK))
            if restarted or crash.get("exe"):
                cands.append((pid, restarted))
        cands.sort(key=lambda c: _restart_rank(c[0], c[1], crash.get("pid")))
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

    def container_member(self, crash: Mapping[str, Any],
                         container: Mapping[str, Any]) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
        """``(snap, proc)`` of a process of *container* now: the crashed pid while it is still
        there, else the running instance when it is in that same container; None when none is."""
        from coredoctor import snapshot
        cands: List[int] = []
        pid = crash.get("pid")
        if isinstance(pid, int) and self.live_container(crash) is not None:
            cands.append(pid)
        inst = self.instance(crash)
        if inst and isinstance(inst.get("container"), dict) and inst["container"].get("id") == container.get("id"):
            cands.append(inst["pid"])
        for c in cands:
            try:
                snap = snapshot.take([c])
            except Error:
                continue
            p = next((q for q in snap["processes"] if q["pid"] == c), None)
            if p is not None and isinstance(p.get("container"), dict) and p["container"].get("id") == container.get("id"):
                return snap, p
        return None

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




# -- a container's core, at the host path of that time ----------------------------------------

#: podman's own record of its containers' lives (libpod/events/logfile.go: the "file" events
#: backend, JSON lines; root's events.log under the engine's TmpDir /run/libpod,
#: containers.conf(5) events_logfile_path). A "died" event carries ContainerExitCode: 128+N for
#: a main process killed by signal N (conmon's exit status, libpod/oci_conmon_exec_linux.go).
PODMAN_EVENTS = "/run/libpod/events/events.log"
EVENTS_TAIL = 4 << 20


def _open_dir_nofollow(path: str) -> Tuple[Optional[int], Optional[str]]:
    """``(dirfd, None)`` for directory *path* opened component by component from ``/``, never
    through a symlink (a container's root owns the directories under its upper layer or rootfs:
    a /tmp replaced by a link to /etc must not lead us into the host's /etc), or
    ``(None, why)``."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    done = ""
    try:
        for comp in [c for c in path.split("/") if c not in ("", ".")]:
            if comp == "..":
                return None, f"'..' in {path}"
            try:
                nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                done += "/" + comp
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(comp, fd):
                    return None, f"{done} is a symlink: not followed"
                return None, f"{done}: {e.strerror}"
            os.close(fd)
            fd = nfd
            done += "/" + comp
        out, fd = fd, -1
        return out, None
    finally:
        if fd >= 0:
            os.close(fd)


def _is_link(name: str, dirfd: int) -> bool:
    """Is *name* in *dirfd* a symlink (False when it went away meanwhile)?"""
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dirfd).st_mode)
    except OSError:
        return False


def find_in_container(host_glob: str, crash: Mapping[str, Any], own_pid_ns: bool,
                      owners: Tuple[int, ...] = ()) -> Dict[str, Any]:
    """The core of *crash* at *host_glob* (a host path whose last component may hold ``*``):
    ``{"found", "path", "size", "status", "why"}``. Inside a container with its own pid namespace
    the core's NT_PRSTATUS pid is the pid there (fs/binfmt_elf.c fill_prstatus():
    task_pid_vnr()), which the kernel log's host pid does not give: a core is then taken by its
    program name (NT_PRPSINFO pr_fname) and time (written after the crash). Nothing is deleted,
    no symlink is followed."""
    import fnmatch
    d, pat = os.path.split(host_glob)
    out: Dict[str, Any] = {"found": False, "path": None, "size": None, "status": "missing", "why": None}
    if "*" in d:
        out["why"] = f"the directory {d} is not known (an unknown value in it)"
        return out
    dirfd, why = _open_dir_nofollow(d)
    if dirfd is None:
        out["why"] = why
        return out
    try:
        dst = os.fstat(dirfd)
        names = sorted(n for n in os.listdir(dirfd) if fnmatch.fnmatchcase(n, pat))[:256]
        best: Optional[Tuple[float, Dict[str, Any]]] = None
        when = crash.get("time")
        comm = (crash.get("comm") or "")[:15]
        for n in names:
            try:
                fd, st = open_in_dir(dirfd, n)
            except (OSError, BadRecord):
                continue
            try:
                if when is not None and st.st_mtime < when - 2 * corr.WINDOW:
                    continue
                if dst.st_mode & stat.S_IWOTH and st.st_uid not in (0, crash.get("uid"), *owners):
                    continue  # a world-writable directory: another user's file proves nothing
                try:
                    info = elfcore.inspect(os.path.join(d, n), fd=fd)
                except (ValueError, OverflowError, struct.error, MemoryError, IndexError):
                    continue
            finally:
                os.close(fd)
            if info["status"] not in ("present", "truncated", "empty"):
                continue
            if info["pid"] is not None and info["pid"] != crash.get("pid"):
                if not own_pid_ns or (comm and info.get("fname") not in (None, comm)):
                    continue
            elif info["pid"] is None and info["status"] != "empty":
                continue
            dt = abs(st.st_mtime - when) if when is not None else 0.0
            got = {"found": True, "path": os.path.join(d, n), "size": info["size"], "status": info["status"],
                   "why": None}
            if info["status"] == "truncated":
                got["why"] = info.get("why")
                got["expected_size"] = info.get("expected_size")
            if best is None or dt < best[0]:
                best = (dt, got)
        if best is not None:
            return best[1]
        out["why"] = f"no ELF core of this crash in {d}"
        return out
    except OSError as e:
        out["why"] = f"{d}: {e.strerror}"
        return out
    finally:
        os.close(dirfd)


#: the parsed events log, by the file's identity (device, inode, size, mtime): ``crashes`` asks
#: once per crash record, and the watch service's metrics writer every interval
_EVENTS_PARSED: Dict[str, Tuple[Tuple[int, int, int, int], Tuple[List[Dict[str, Any]], Dict[str, float]]]] = {}


def _events_time(s: Any) -> Optional[float]:
    """An events log ``Time`` (RFC 3339 with nanoseconds) as a POSIX time, or None."""
    import datetime
    import re
    if not isinstance(s, str):
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        return None
    try:
        t = datetime.datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    except ValueError:
        return None
    return t.timestamp() + float("0." + (m.group(2) or "0"))


def _parse_events(data: bytes, partial_first: bool) -> Tuple[List[Dict[str, Any]], Dict[str, float]]:
    """``(died events in order, {id: time of its last remove event})`` of container events;
    a line that is not one (garbage, another type, an id that is not 64 hex digits, no
    time) is skipped."""
    import json
    import re
    died: List[Dict[str, Any]] = []
    removed: Dict[str, float] = {}
    for line in data.split(b"\n")[1 if partial_first else 0:]:
        try:
            e = json.loads(line)
        except (ValueError, RecursionError, UnicodeDecodeError):
            continue
        if not isinstance(e, dict) or e.get("Type") != "container" or not isinstance(e.get("ID"), str):
            continue
        if e.get("Status") not in ("died", "remove") or not re.fullmatch(r"[0-9a-f]{64}", e["ID"]):
            continue
        t = _events_time(e.get("Time"))
        if t is None:
            continue
        if e["Status"] == "died":
            died.append(dict(e, _t=t))
        else:
            removed[e["ID"]] = t
    return died, removed


def podman_died(crash: Mapping[str, Any], path: str = PODMAN_EVENTS) -> Optional[Dict[str, Any]]:
    """A podman container whose main process died of this crash's signal at its time, from the
    events log (a container removed since, by --rm, leaves nothing else): the one "died" event
    with ContainerExitCode 128+signo within :data:`~coredoctor.history.crashes.LATE_WINDOW` after
    the crash (the core is written before the exit), and its "remove" event if any. None when
    there is none, or more than one. The log's last :data:`EVENTS_TAIL` bytes are parsed once
    while the file stays the same."""
    when, signo = crash.get("time"), crash.get("signo")
    if when is None or not isinstance(signo, int):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        hit = _EVENTS_PARSED.get(path)
        if hit is not None and hit[0] == key:
            died_all, removed = hit[1]
        else:
            start = max(0, st.st_size - EVENTS_TAIL)
            died_all, removed = _parse_events(os.pread(fd, EVENTS_TAIL, start), bool(start))
            _EVENTS_PARSED.clear()  # one log at a time
            _EVENTS_PARSED[path] = (key, (died_all, removed))
    except OSError:
        return None
    finally:
        os.close(fd)
    died = [e for e in died_all if e.get("ContainerExitCode") == 128 + signo
            and -1.0 <= e["_t"] - when <= corr.LATE_WINDOW]
    ids = {e["ID"] for e in died}
    if len(ids) != 1:
        return None
    e = died[0]

    def s(v: Any) -> Optional[str]:
        return v[:256] if isinstance(v, str) and v else None

    return {"runtime": "podman", "id": e["ID"], "name": s(e.get("Name")), "image": s(e.get("Image")),
            "pod": None, "namespace": None, "pod_uid": None, "qos": None, "driver": None, "cgroup": None,
            "bundle": None, "state": [path], "format": "podman-events",
            "died": e["_t"], "removed": removed.get(e["ID"]) if removed.get(e["ID"], 0) >= e["_t"] else None}


def container_core(crash: Mapping[str, Any], container: Mapping[str, Any], parsed: Mapping[str, Any],
                   member: Optional[Tuple[Dict[str, Any], Dict[str, Any]]],
                   gone: Optional[str] = None) -> Dict[str, Any]:
    """Where the core of a crash in *container* went on the host, for a file pattern *parsed*
    (the one in force then): ``{"container_path", "host_path", "found", "size", "landing",
    "landing_evidence", "why"}``. *member*: ``(snap, proc)`` of a process of that container
    now (its mount table maps the path, kernel/landing.py), or None when none runs (*gone*: what
    is known of its end)."""
    from coredoctor.kernel import core_pattern, landing
    ctx = {"pid": crash.get("pid"), "pid_ns": None, "tid": None, "tid_ns": None, "comm": crash.get("comm"),
           "exe": crash.get("exe"), "signo": crash.get("signo"), "uid": crash.get("uid"), "hostname": None}
    exp = core_pattern.expand(parsed, ctx)
    path = core_pattern.render(exp["parts"])
    out: Dict[str, Any] = {"container_path": path, "host_path": None, "found": False, "size": None,
                           "landing": "unknown", "landing_evidence": None, "why": None}
    if member is None:
        out["why"] = (gone or "no process of the container runs now") + \
            ": its mounts cannot be read, so the host path of its core is not known"
        return out
    snap, p = member
    if not exp["absolute"]:
        cwd = p.get("cwd")
        if not (isinstance(cwd, str) and cwd.startswith("/")):
            out["why"] = "the pattern is relative and the container's process cwd is not known"
            return out
        path = cwd.rstrip("/") + "/" + path
        out["container_path"] = path
    cs = p.get("container_spec")
    spec = cs if isinstance(cs, dict) else {}
    land = landing.landing(path, p, snap.get("mounts"), spec.get("autoremove"))
    out.update(container_path=land["container_path"], host_path=land["host_path"], landing=land["landing"],
               landing_evidence=land["landing_evidence"], survives=land["survives"])
    if not land["host_path"]:
        out["why"] = f"the host path is not known: {land['landing_evidence']}"
        return out
    own_ns = len(p.get("nspid") or []) > 1  # NSpid: one pid per namespace level (proc(5))
    owners = tuple(u for u in [((p.get("creds") or {}).get("uid") or [None] * 4)[3]] if isinstance(u, int))
    got = find_in_container(land["host_path"], crash, bool(own_ns), owners)
    out.update(found=got["found"], size=got["size"], status=got["status"])
    if got["found"]:
        out["host_path"] = got["path"]
        if got.get("expected_size"):
            out["expected_size"] = got["expected_size"]
        out["why"] = got["why"]
    else:
        out["why"] = got["why"]
    return out
