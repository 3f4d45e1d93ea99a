"""
Filesystem facts for the core's destination
-------------------------------------------
Walk a directory path the way path lookup would from a given root (the crashing process's
root or cwd through ``/proc/PID/root`` / ``/proc/PID/cwd``, or the host root for
dumpable=2), recording every directory traversed (mode, owner) so that the model can apply
the dumping task's credentials. Symlinks in the directory part are followed (only the last
component is opened with O_NOFOLLOW).
"""

import errno
import os
import stat

from typing import Any, Dict, List, Optional

__all__ = ["walk_dir", "file_facts"]

_MAXLINKS = 40


def _inode(st: os.stat_result) -> Dict[str, int]:
    return {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}


def _errname(e: OSError) -> str:
    """``ENOENT`` for an OSError (its number as text when errno has no name for it)."""
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno is not None else "None"


def walk_dir(base: str, dirpath: str, root: Optional[str] = None, cwd_path: Optional[str] = None) -> Dict[str, Any]:
    """Walk *dirpath* starting at host path *base*.

    *dirpath* absolute: resolved from *base* as the root; relative: from *base* as the cwd,
    with *root* (the task's root, for absolute symlinks) and *cwd_path* (for a '..' that climbs
    above the cwd). Returns ``{"dir": display path, "walk": [inode...], "exists": bool,
    "error": errno name or None, "fs": {...}}``.
    """
    absolute = dirpath.startswith("/")
    root = base if absolute or root is None else root
    cur_host = base
    walk: List[Dict[str, Any]] = []
    res: Dict[str, Any] = {"dir": dirpath, "walk": walk, "exists": False, "error": None, "fs": None}
    try:
        st = os.stat(cur_host)
    except OSError as e:
        res["error"] = _errname(e)
        return res
    walk.append(dict(_inode(st), path="/" if absolute else "."))
    links = 0
    stack = [c for c in dirpath.split("/") if c and c != "."]
    parts: List[str] = []  # display components below the start
    at_root = absolute
    while stack:
        c = stack.pop(0)
        if c == "..":
            if parts:
                parts.pop()
                cur_host = os.path.dirname(cur_host.rstrip("/"))
            elif not at_root and cwd_path and cwd_path.startswith("/"):
                # above the cwd: continue from the task's root along the cwd's own path
                stack = [x for x in cwd_path.split("/") if x] + [".."] + stack
                cur_host, parts, at_root = root, [], True
            # '..' at the root stays at the root
            continue
        nxt = cur_host.rstrip("/") + "/" + c
        try:
            lst = os.lstat(nxt)
        except OSError as e:
            res["error"] = _errname(e)
            res["missing"] = "/".join(parts + [c])
            return res
        if stat.S_ISLNK(lst.st_mode):
            links += 1
            try:
                target = os.readlink(nxt)
            except OSError as e:
                res["error"] = _errname(e)
                return res
            if links > _MAXLINKS:
                res["error"] = "ELOOP"
                return res
            if target.startswith("/"):
                cur_host, parts, at_root = root, [], True
            stack = [x for x in target.split("/") if x and x != "."] + stack
            continue
        if not stat.S_ISDIR(lst.st_mode):
            res["error"] = "ENOTDIR"
            return res
        parts.append(c)
        cur_host = nxt
        walk.append(dict(_inode(lst), path=("/" if at_root else "./") + "/".join(parts)))
    res["exists"] = True
    res["host_path"] = cur_host
    try:
        sv = os.statvfs(cur_host)
        res["fs"] = {"readonly": bool(sv.f_flag & os.ST_RDONLY), "frsize": sv.f_frsize,
                     "bavail": sv.f_bavail * sv.f_frsize, "bfree": sv.f_bfree * sv.f_frsize,
                     "favail": sv.f_favail}
        res["fs"].update(_mount_of(os.stat(cur_host).st_dev))
    except OSError:
        res["fs"] = None
    return res


_mounts: Optional[Dict[str, Dict[str, str]]] = None


def _mount_of(dev: int) -> Dict[str, str]:
    """fstype and super-block options (ext4 resuid=/resgid=) of the mount holding device *dev*,
    from /proc/self/mountinfo (proc(5): field 3 is major:minor, then after ' - ' fstype, source,
    super options)."""
    global _mounts
    if _mounts is None:
        _mounts = {}
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    left, _, right = line.partition(" - ")
                    fields, rf = left.split(), right.split()
                    if len(fields) >= 3 and len(rf) >= 3:
                        _mounts.setdefault(fields[2], {"fstype": rf[0], "super_options": rf[2]})
        except OSError:
            pass
    return _mounts.get(f"{os.major(dev)}:{os.minor(dev)}", {})


def file_facts(host_dir: str, name: str) -> Dict[str, Any]:
    """``lstat`` of an existing file the dump would have to replace, or ``{"exists": False}``."""
    try:
        st = os.lstat(host_dir.rstrip("/") + "/" + name)
    except FileNotFoundError:
        return {"exists": False}
    except OSError as e:
        return {"exists": None, "error": _errname(e)}
    return {"exists": True, "mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
            "nlink": st.st_nlink, "size": st.st_size}
