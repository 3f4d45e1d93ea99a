"""
/proc/PID
---------
Read one process into plain data: credentials, signal masks, limits, umask, cwd/root,
namespaces, executable, unit, the ownership of ``/proc/PID/status`` and the pidfd answer.
Every read goes through :func:`coredoctor.errors.proc_errors`.
"""

import grp
import os
import pwd
import resource
import signal
import stat

from coredoctor.errors import NoSuchProcess, ProcessGone, proc_errors
from coredoctor.kernel import dumpable as d
from coredoctor.snapshot import pidfd

__all__ = ["read_process", "list_pids", "comms", "Wants", "PROC"]

PROC = os.environ.get("COREDOCTOR_PROCFS", "/proc")

_STATUS_KEYS = {"Name", "Umask", "State", "Tgid", "PPid", "TracerPid", "Uid", "Gid", "Groups", "NSpid",
                "SigBlk", "SigIgn", "SigCgt", "CapPrm", "CapEff", "VmSize", "VmRSS", "RssAnon",
                "RssFile", "RssShmem", "CoreDumping", "Threads"}

_user_cache = {}
_group_cache = {}


def _user(uid):
    if uid not in _user_cache:
        try:
            _user_cache[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _user_cache[uid] = None
    return _user_cache[uid]


def _group(gid):
    if gid not in _group_cache:
        try:
            _group_cache[gid] = grp.getgrgid(gid).gr_name
        except KeyError:
            _group_cache[gid] = None
    return _group_cache[gid]


def list_pids():
    return sorted(int(d) for d in os.listdir(PROC) if d.isdigit())


def comms():
    """{pid: comm} of every process (a cheap scan: one small read each)."""
    out = {}
    for pid in list_pids():
        try:
            out[pid] = _read(f"{PROC}/{pid}/comm").rstrip("\n")
        except OSError:
            continue
    return out


def _parse_status(text):
    """/proc/PID/status -> {key: value} for the keys coredoctor uses (values stripped)."""
    out = {}
    for line in text.split("\n"):
        k, _, v = line.partition(":")
        if k in _STATUS_KEYS:
            out[k] = v.strip()
    return out


def _kb(v):
    return int(v.split()[0]) * 1024 if v else None


_LIMIT_ROWS = {"Max core file size": "core", "Max file size": "fsize"}


def _parse_limits(text):
    """/proc/PID/limits -> {"core": [soft, hard], "fsize": [...]}, None meaning unlimited.
    (Read from /proc rather than prlimit(2): that needs CAP_SYS_RESOURCE for other users.)"""
    out = {}
    for row, key in _LIMIT_ROWS.items():
        i = text.find(row)
        if i >= 0:
            vals = text[i + len(row):text.find("\n", i)].split()
            out[key] = [None if v == "unlimited" else int(v) for v in vals[:2]]
    return out


def _limits(pid, base):
    """prlimit(2) where it is allowed (same ids, or CAP_SYS_RESOURCE), else /proc/PID/limits."""
    try:
        out = {}
        for key, res in (("core", resource.RLIMIT_CORE), ("fsize", resource.RLIMIT_FSIZE)):
            soft, hard = resource.prlimit(pid, res)
            out[key] = [None if soft == resource.RLIM_INFINITY else soft,
                        None if hard == resource.RLIM_INFINITY else hard]
        return out
    except PermissionError:
        return _parse_limits(_read(f"{base}/limits"))


def _unit_from_cgroup(text):
    """The systemd unit a process belongs to, from its cgroup path: the last .service/.scope
    component of the unified (``0::``) hierarchy, else of the v1 ``name=systemd`` one."""
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
                if comp.endswith((".service", ".scope", ".socket", ".mount")):
                    return comp, path
    return None, paths.get("unified") or paths.get("systemd")


def _exe_stat(pid, exe):
    try:
        st = os.stat(f"{PROC}/{pid}/exe")
    except OSError:
        return None
    fcaps = False
    try:
        fcaps = bool(os.getxattr(f"{PROC}/{pid}/exe", "security.capability"))
    except OSError:
        pass
    return {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
            "setuid": bool(st.st_mode & stat.S_ISUID),
            "setgid": bool(st.st_mode & stat.S_ISGID and st.st_mode & stat.S_IXGRP),
            "fcaps": fcaps}


def _read(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode("utf-8", "replace")
    finally:
        os.close(fd)


class Wants:
    """Which optional facts the model will need for this core_pattern, and the host's own
    namespace/root identities to compare with. Built once per snapshot."""

    def __init__(self, parsed=None):
        pat = (parsed or {}).get("pattern", "")
        kind = (parsed or {}).get("kind", "file")
        self.uts = "%h" in pat
        self.thread_comm = "%e" in pat
        self.root_is_host = "%E" in pat or "%f" in pat
        self.dirs = () if kind != "file" else ("root",) if (parsed or {}).get("absolute") else ("cwd",)
        self.userns = kind == "file"
        self.self_ns = {}
        for ns in ("uts", "user"):
            try:
                self.self_ns[ns] = os.readlink(f"/proc/self/ns/{ns}")
            except OSError:
                self.self_ns[ns] = None
        try:
            st = os.stat("/")
            self.self_root = f"{st.st_dev}:{st.st_ino}"
        except OSError:
            self.self_root = None


def read_process(pid, use_pidfd=True, wants=None):
    """Read *pid*; returns None for tasks without an mm (kernel threads, zombies).

    Identity: a pidfd is opened first and checked last (``pidfd_send_signal(fd, 0)``), so a
    process that exits mid-read -- or whose pid is reused -- raises ProcessGone instead of
    mixing two processes' facts. *wants* (:class:`Wants`) skips reads the model will not use.
    """
    base = f"{PROC}/{pid}"
    pfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pfd = os.pidfd_open(pid)
        except ProcessLookupError as e:
            raise NoSuchProcess(pid) from e
        except OSError:
            pfd = None
    try:
        return _read_process(pid, base, pfd, use_pidfd, wants or Wants())
    finally:
        if pfd is not None:
            os.close(pfd)


def _ns_is_host(base, ns, wants):
    try:
        mine = wants.self_ns.get(ns)
        return (os.readlink(f"{base}/ns/{ns}") == mine) if mine else None
    except OSError:
        return None


def _read_process(pid, base, pfd, use_pidfd, wants):
    try:
        fd = os.open(f"{base}/status", os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError) as e:
        raise NoSuchProcess(pid) from e
    with proc_errors(pid, "status"):
        try:
            st = os.fstat(fd)
            text = os.read(fd, 8192).decode("utf-8", "replace")
        finally:
            os.close(fd)
    s = _parse_status(text)
    comm = s.get("Name")
    if "VmSize" not in s:
        return None  # no mm: kernel thread or zombie
    uids = [int(x) for x in s["Uid"].split()]
    gids = [int(x) for x in s["Gid"].split()]
    p = {
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
        "proc_owner": [st.st_uid, st.st_gid],
    }
    with proc_errors(pid, "limits", comm):
        p["limits"] = _limits(pid, base)
    with proc_errors(pid, "coredump_filter", comm):
        try:
            p["coredump_filter"] = _read(f"{base}/coredump_filter").strip()
        except FileNotFoundError:
            p["coredump_filter"] = None
    for link in ("exe", "cwd"):
        try:
            p[link] = os.readlink(f"{base}/{link}")
        except OSError:
            p[link] = None
    p["root_id"] = p["cwd_id"] = None
    dirs = set(wants.dirs) | ({"root"} if wants.root_is_host else set())
    for which in sorted(dirs):
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
        p["unit"], p["cgroup"] = _unit_from_cgroup(_read(f"{base}/cgroup"))
    except OSError:
        p["unit"] = p["cgroup"] = None
    p["uts_is_host"] = _ns_is_host(base, "uts", wants) if wants.uts else None
    if wants.thread_comm and p["threads"] > 1:
        p["thread_comms_same"] = _thread_comms_same(pid)
    if p["threads"] > 1 and p["sig"]["blocked"] and int(p["sig"]["blocked"], 16):
        p["thread_blocked"] = _thread_masks(pid)
    # dumpability: the exact kernel answer where there is one
    p["dumpable"] = _dumpable(pid, p, use_pidfd, pfd)
    # where non-dumpability came from: the executable's set-id bits and file capabilities
    p["exe_stat"] = _exe_stat(pid, p["exe"]) if p["exe"] and p["dumpable"]["value"] != 1 else None
    # the process we opened must still be alive: otherwise these facts may mix two processes
    # (a PIDFD_GET_INFO answer above, made after every read, already proved it)
    if pfd is not None and p["dumpable"]["source"] != "pidfd":
        try:
            signal.pidfd_send_signal(pfd, 0)
        except ProcessLookupError:
            raise ProcessGone(pid, comm)
        except PermissionError:
            pass
    elif not os.path.exists(base):
        raise ProcessGone(pid, comm)
    return p


def _thread_comms_same(pid):
    names = set()
    try:
        for tid in os.listdir(f"{PROC}/{pid}/task"):
            try:
                names.add(_read(f"{PROC}/{pid}/task/{tid}/comm").rstrip("\n"))
            except OSError:
                continue
    except OSError:
        return None
    return len(names) == 1


def _thread_masks(pid):
    out = []
    try:
        for tid in os.listdir(f"{PROC}/{pid}/task"):
            try:
                with open(f"{PROC}/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("SigBlk:"):
                            out.append(line.split()[1])
            except OSError:
                continue
    except OSError:
        return None
    return out


def _dumpable(pid, p, use_pidfd, pfd=None):
    if use_pidfd:
        try:
            info = pidfd.coredump_info(pid, pfd)
        except ProcessLookupError:
            raise ProcessGone(pid, p["comm"])
        except OSError:
            info = None
        if info is not None:
            v = d.from_pidfd_coredump_mask(info[0])
            if v is not None:
                return {"value": v, "candidates": [v], "source": "pidfd",
                        "evidence": f"pidfd PIDFD_INFO_COREDUMP coredump_mask={info[0]:#x} ({d.describe_value(v)})"}
    c = p["creds"]
    cands, ev = d.from_proc_owner(p["proc_owner"][0], p["proc_owner"][1], c["uid"][1], c["gid"][1])
    cands = sorted(cands)
    if len(cands) == 1:
        return {"value": cands[0], "candidates": cands, "source": "proc-owner", "evidence": ev}
    if len(cands) == 2:
        return {"value": None, "candidates": cands, "source": "proc-owner", "evidence": ev}
    return {"value": None, "candidates": cands, "source": "unknown", "evidence": ev}


#: the /proc readers, for the other snapshot modules
parse_status = _parse_status
read_text = _read
