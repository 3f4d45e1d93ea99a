"""
Mount tables and id maps: where a core really lands
---------------------------------------------------
The kernel opens a file core_pattern in the crashing task's own mount namespace (from its root
or cwd). To say where that file is on the host, the model (:mod:`coredoctor.kernel.landing`)
needs the task's mount table and the host's: this module reads them (``/proc/PID/mountinfo``,
proc(5)) for the targets whose mount namespace is not init's, one read per namespace, plus
``/proc/1/mountinfo``; and, for a target in another user namespace, its ``uid_map`` and
``gid_map`` (user_namespaces(7)), which say who its ids are on the host.

Everything read here comes from a namespace that the container's root may control (its mount
points and sources): it is kept as data, bounded, and only ever shown, never acted on.

Snapshot shape (coredoctor.snapshot/1, additive)::

    "mounts": {"host": [mount...], "mnt:[4026532345]": [mount...]}
    mount = {"id", "parent", "dev": "MAJ:MIN", "root", "mountpoint", "fstype", "source",
             "super_options"}
    processes[].mnt_ns: "mnt:[...]" (only when it is not init's), processes[].uid_map /
    gid_map: [[inside, outside, count], ...] (only in another user namespace)
"""

import os
from typing import Any, Dict, Iterable, List, Optional

__all__ = ["parse_mountinfo", "parse_id_map", "read", "MAX_MOUNTS", "MAX_MAP"]

MAX_MOUNTS = 4096      # entries kept per namespace (a busy Kubernetes node has a few hundred)
MAX_MAP = 340          # uid_map lines (the kernel's own limit since 4.15, UID_GID_MAP_MAX_EXTENTS)
_MAX_BYTES = 4 << 20


def _unescape(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``; seq_escape())."""
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        c = s[i]
        oct3 = s[i + 1:i + 4]
        if c == "\\" and len(oct3) == 3 and all(x in "01234567" for x in oct3):
            out.append(chr(int(oct3, 8)))
            i += 4
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_mountinfo(text: str, limit: int = MAX_MOUNTS) -> List[Dict[str, Any]]:
    """proc(5) ``/proc/PID/mountinfo``: ``ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] -
    FSTYPE SOURCE SUPER_OPTIONS``. Lines that do not have this shape are skipped."""
    out: List[Dict[str, Any]] = []
    for line in text.splitlines():
        if len(out) >= limit:
            break
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f, r = left.split(" "), right.split(" ")
        if len(f) < 6 or len(r) < 3 or not f[0].isdigit() or not f[1].isdigit():
            continue
        out.append({"id": int(f[0]), "parent": int(f[1]), "dev": f[2][:32], "root": _unescape(f[3]),
                    "mountpoint": _unescape(f[4]), "fstype": r[0][:256], "source": _unescape(r[1]),
                    "super_options": r[2]})
    return out


def parse_id_map(text: str) -> List[List[int]]:
    """``/proc/PID/uid_map``: lines ``INSIDE OUTSIDE COUNT`` (user_namespaces(7))."""
    out: List[List[int]] = []
    for line in text.splitlines()[:MAX_MAP]:
        w = line.split()
        if len(w) == 3 and all(x.isdigit() and len(x) <= 10 for x in w):
            a, b, c = (int(x) for x in w)
            if a < 1 << 32 and b < 1 << 32 and c <= 1 << 32:
                out.append([a, b, c])
    return out


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_BYTES).decode("utf-8", "surrogateescape").encode(
                "utf-8", "replace").decode("utf-8", "replace")
    except OSError:
        return None


def read(procs: Iterable[Dict[str, Any]], proc_root: str = "/proc") -> Dict[str, List[Dict[str, Any]]]:
    """The host's mount table and that of each of *procs* (snapshot process entries) whose mount
    namespace is not init's; sets ``mnt_ns`` and, in another user namespace, ``uid_map`` /
    ``gid_map`` on those entries. A table that cannot be read is left out (the model then says
    the host path is unknown)."""
    mounts: Dict[str, List[Dict[str, Any]]] = {}
    init_mnt = host = None
    # the host's view: init's; coredoctor's own where init's cannot be read (a sandbox's pid 1)
    for who in ("1", "self"):
        try:
            init_mnt = os.readlink(f"{proc_root}/{who}/ns/mnt")
        except OSError:
            continue
        host = _read(f"{proc_root}/{who}/mountinfo")
        break
    if host is not None:
        mounts["host"] = parse_mountinfo(host)
    for p in procs:
        base = f"{proc_root}/{p['pid']}"
        try:
            ns = os.readlink(f"{base}/ns/mnt")
        except OSError:
            ns = None
        if ns and init_mnt and ns != init_mnt:
            p["mnt_ns"] = ns[:64]
            if p["mnt_ns"] not in mounts:
                text = _read(f"{base}/mountinfo")
                if text is not None:
                    mounts[p["mnt_ns"]] = parse_mountinfo(text)
        if p.get("userns_is_host") is False:
            for which in ("uid_map", "gid_map"):
                text = _read(f"{base}/{which}")
                if text is not None:
                    p[which] = parse_id_map(text)
    return mounts
