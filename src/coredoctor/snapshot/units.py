"""
systemd units, environment files, system.conf and limits.conf of the targets
-----------------------------------------------------------------------------
For each target's unit (``proc["unit"]``, from its cgroup), once per unit and manager: the unit
file and its drop-ins in systemd's search order, the ``EnvironmentFile=`` files they name,
``system.conf`` and ``system.conf.d``; read under the root of the systemd that runs the unit
(the host's ``/``, or ``/proc/PID/root`` of an nspawn machine's own systemd, found as the init of
the process's pid namespace). And the host's ``/etc/security/limits.conf`` and ``limits.d``.
The texts go into the snapshot (``units``, ``limits_conf`` of coredoctor.snapshot/1); the
parsing is pure (:mod:`coredoctor.origin.unitfile`).

Safety: every file is opened with ``O_NOFOLLOW`` and must be a regular file of at most
:data:`MAX_FILE` bytes; a symlink on the way (systemd's own aliases and masks in
``/etc/systemd/system``) is followed only when it sits in a directory owned by root and not
writable by group or others, at most :data:`MAX_HOPS` times, and never leaves the root.
"""

import os
import stat
from typing import Any, Dict, Iterable, List, Optional, Tuple

from coredoctor.origin import unitfile as U

__all__ = ["read", "read_limits", "SEARCH_PATH", "MAX_FILE"]

#: systemd.unit(5) "Unit File Load Path" (system manager), highest priority first; /lib for
#: systems without merged /usr
SEARCH_PATH = ("/etc/systemd/system.control", "/run/systemd/system.control", "/run/systemd/transient",
               "/run/systemd/generator.early", "/etc/systemd/system", "/etc/systemd/system.attached",
               "/run/systemd/system", "/run/systemd/system.attached", "/run/systemd/generator",
               "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system",
               "/run/systemd/generator.late")
#: systemd-system.conf(5): the file, then drop-ins, highest priority directory first
SYSTEM_CONF = "/etc/systemd/system.conf"
SYSTEM_CONF_D = ("/etc/systemd/system.conf.d", "/run/systemd/system.conf.d",
                 "/usr/local/lib/systemd/system.conf.d", "/usr/lib/systemd/system.conf.d",
                 "/lib/systemd/system.conf.d")
#: limits.conf(5), pam_limits(8)
LIMITS_CONF = "/etc/security/limits.conf"
LIMITS_D = "/etc/security/limits.d"
MAX_FILE = (1 << 16) - 1  # validate.MAX_STR: a snapshot string stays below it
MAX_HOPS = 16
MAX_DROPINS = 256
MAX_ENV_FILES = 32


def _trusted_dir(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022


def _resolve(root: str, path: str) -> Tuple[Optional[str], List[str], Optional[str]]:
    """*path* (absolute, inside *root*) resolved component by component: ``(host path or None,
    the symlink targets followed, error)``. The target ``/dev/null`` (a masked unit) gives
    ``(None, [..., "/dev/null"], "masked")``."""
    links: List[str] = []
    todo = [c for c in U.norm(path).split("/") if c]
    done: List[str] = []
    hops = 0
    while todo:
        c = todo.pop(0)
        if c == "..":
            if done:
                done.pop()
            continue
        if c == ".":
            continue
        inside = "/" + "/".join(done + [c])
        host = root.rstrip("/") + inside
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            return None, links, "missing"
        except OSError as e:
            return None, links, e.strerror or "unreadable"
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            parent = root.rstrip("/") + "/" + "/".join(done)
            if hops > MAX_HOPS or not _trusted_dir(parent or "/"):
                return None, links, "symlink not followed (not in a root-owned directory)"
            try:
                target = os.readlink(host)
            except OSError:
                return None, links, "unreadable link"
            links.append(target)
            if U.norm(target) == "/dev/null" and target.startswith("/"):
                return None, links, "masked"
            todo = [x for x in target.split("/") if x] + todo
            if target.startswith("/"):
                done = []
            continue
        done.append(c)
    return root.rstrip("/") + "/" + "/".join(done), links, None


def _read(root: str, path: str) -> Dict[str, Any]:
    """``{"path", "text", "links", "error"}`` of one file under *root* (text None on error)."""
    host, links, err = _resolve(root, path)
    rec: Dict[str, Any] = {"path": path, "text": None, "links": links, "error": err}
    if host is None:
        return rec
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        rec["error"] = "missing" if isinstance(e, FileNotFoundError) else (e.strerror or "unreadable")
        return rec
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            rec["error"] = "not a regular file"
            return rec
        if st.st_size > MAX_FILE:
            rec["error"] = f"larger than {MAX_FILE} bytes"
            return rec
        data = os.read(fd, MAX_FILE + 1)[:MAX_FILE]
    except OSError as e:
        rec["error"] = e.strerror or "unreadable"
        return rec
    finally:
        os.close(fd)
    rec["text"] = data.decode("utf-8", "replace")
    return rec


def _listdir(root: str, d: str) -> List[str]:
    host = root.rstrip("/") + d
    if not _trusted_dir(host):
        return []
    try:
        return sorted(n for n in os.listdir(host) if n.endswith(".conf") and "/" not in n)[:MAX_DROPINS]
    except OSError:
        return []


def _conf_dirs(root: str, dirs: Iterable[str]) -> List[Dict[str, Any]]:
    """``*.conf`` of *dirs* (highest priority first): a name in a higher one masks it in lower
    ones; the result in lexical order of the names (systemd's ``conf_files_list()``)."""
    chosen: Dict[str, str] = {}
    for d in dirs:
        for n in _listdir(root, d):
            chosen.setdefault(n, f"{d}/{n}")
    return [_read(root, chosen[n]) for n in sorted(chosen)][:MAX_DROPINS]


def _unit(root: str, unit: str) -> Dict[str, Any]:
    names = U.unit_paths(unit)
    files: List[Dict[str, Any]] = []
    masked = False
    main = None
    for name in names["names"]:
        for d in SEARCH_PATH:
            r = _read(root, f"{d}/{name}")
            if r["error"] == "masked":
                masked, main = True, r
                break
            if r["text"] is not None:
                main = r
                break
        if main is not None:
            break
    if main is not None:
        files.append(dict(main, kind="unit"))
    chosen: Dict[str, str] = {}
    for dd in names["dropdirs"]:
        for d in SEARCH_PATH:
            for n in _listdir(root, f"{d}/{dd}"):
                chosen.setdefault(n, f"{d}/{dd}/{n}")
    for n in sorted(chosen)[:MAX_DROPINS]:
        files.append(dict(_read(root, chosen[n]), kind="dropin"))
    eff = U.merge([(f["path"], f["text"]) for f in files if f["text"] is not None])
    env: Dict[str, Optional[str]] = {}
    env_errors: Dict[str, str] = {}
    for st in eff.get("EnvironmentFile", []):
        for w in U.split_words(U.specifiers(st.value, unit)):
            p = w[1:] if w.startswith("-") else w
            if not p.startswith("/") or p in env or len(env) >= MAX_ENV_FILES:
                continue
            r = _read(root, p)
            env[p] = r["text"]
            if r["error"]:
                env_errors[p] = r["error"]
    return {"unit": unit, "root": root, "masked": masked, "files": files, "env": env,
            "env_errors": env_errors,
            "system": [_read(root, SYSTEM_CONF)] + _conf_dirs(root, SYSTEM_CONF_D)}


def read(procs: Dict[int, Dict[str, Any]], targets: Iterable[int]) -> Dict[str, Dict[str, Any]]:
    """The ``units`` section: ``MANAGERPID:UNIT`` -> the unit's files, for each target's unit."""
    out: Dict[str, Dict[str, Any]] = {}
    for pid in targets:
        p = procs.get(pid)
        if not p or not p.get("unit"):
            continue
        unit = p["unit"]
        if "/" in unit or unit.startswith(".") or "\n" in unit or len(unit) > 256:
            continue
        key = U.unit_key(procs, p)
        if key is None or key in out:
            continue
        m = U.manager_of(procs, p)
        root = f"/proc/{m['pid']}/root" if m else "/"
        try:
            rec = _unit(root, unit)
        except OSError as e:  # the machine went away while it was read
            rec = {"unit": unit, "root": root, "masked": False, "files": [], "env": {}, "env_errors": {},
                   "system": [], "error": e.strerror or "unreadable"}
        rec["manager_pid"] = m["pid"] if m else None
        rec["manager_comm"] = m.get("comm") if m else None
        out[key] = rec
    for pid in targets:  # a machine's user and group names are in its own /etc/passwd and /etc/group
        p = procs.get(pid)
        key = U.unit_key(procs, p) if p else None
        mrec = out.get(key) if key else None
        if mrec is None or not mrec.get("manager_pid") or not p:
            continue
        c = p.get("creds") or {}
        _names(mrec, "users", "/etc/passwd", c.get("uid") or [])
        _names(mrec, "groups", "/etc/group", list(c.get("gid") or []) + list(c.get("groups") or []))
    return out


def _names(rec: Dict[str, Any], field: str, path: str, ids: List[int]) -> None:
    """``rec[field]``: id (as text) -> name, for *ids*, from *path* under the unit's root."""
    names = rec.setdefault(field, {})
    want = {str(i) for i in ids} - set(names)
    if not want:
        return
    text = _read(rec["root"], path)["text"] or ""
    for line in text.split("\n"):
        f = line.split(":")
        if len(f) >= 3 and f[2] in want and f[0] and len(names) < 256:
            names[f[2]] = f[0][:64]


def read_limits(root: str = "/") -> List[Dict[str, Any]]:
    """``limits_conf``: limits.conf, then limits.d/*.conf in lexical order."""
    return [_read(root, LIMITS_CONF)] + [_read(root, f"{LIMITS_D}/{n}") for n in _listdir(root, LIMITS_D)]
