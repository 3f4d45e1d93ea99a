"""
Core handlers
-------------
Facts about whatever receives a core in pipe or socket mode: the helper binary (host path:
usermode helpers run as root in the initial namespaces), listening unix sockets in the
initial network namespace (``/proc/1/net/unix``), and the configuration of the handlers
coredoctor knows: systemd-coredump (``coredump.conf`` and drop-ins), apport
(``/etc/default/apport``).
"""

import glob
import os
import stat
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["read_handler", "listening_unix_sockets", "read_coredump_conf", "socket_facts", "walk_from_root",
           "listeners_all_netns"]

_ACCEPTCON = 0x10000  # __SO_ACCEPTCON in /proc/net/unix Flags


def listening_unix_sockets(path: str = "/proc/1/net/unix") -> Optional[Dict[str, str]]:
    """Paths of listening unix sockets, with their type (stream / seqpacket / dgram)."""
    out: Dict[str, str] = {}
    try:
        with open(path) as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) < 8:
                    continue
                flags = int(fields[3], 16)
                typ = {"0001": "stream", "0002": "dgram", "0005": "seqpacket"}.get(fields[4], fields[4])
                if flags & _ACCEPTCON:
                    out[fields[7]] = typ
    except OSError:
        return None
    return out


def _parse_ini(path: str, section: str, into: Dict[str, Any]) -> None:
    try:
        with open(path) as f:
            cur = None
            for line in f:
                line = line.strip()
                if not line or line[0] in "#;":
                    continue
                if line.startswith("["):
                    cur = line.strip("[]")
                    continue
                if cur == section and "=" in line:
                    k, _, v = line.partition("=")
                    into[k.strip()] = v.strip()
                    into.setdefault("_files", []).append(path) if path not in into.get("_files", []) else None
    except OSError:
        pass


def read_coredump_conf() -> Dict[str, Any]:
    """Merged [Coredump] settings of systemd-coredump (later files win, as systemd reads them)."""
    conf: Dict[str, Any] = {}
    files = ["/usr/lib/systemd/coredump.conf", "/lib/systemd/coredump.conf", "/etc/systemd/coredump.conf"]
    dropins: Dict[str, str] = {}
    for d in ("/usr/lib/systemd/coredump.conf.d", "/run/systemd/coredump.conf.d", "/etc/systemd/coredump.conf.d"):
        for p in glob.glob(d + "/*.conf"):
            dropins[os.path.basename(p)] = p
    for p in files + [dropins[k] for k in sorted(dropins)]:
        _parse_ini(p, "Coredump", conf)
    return conf


def _helper_facts(path: str) -> Dict[str, Any]:
    facts: Dict[str, Any] = {"path": path, "exists": False}
    try:
        st = os.stat(path)
    except OSError as e:
        facts["error"] = os.strerror(e.errno or 0)
        return facts
    facts.update(exists=True, regular=stat.S_ISREG(st.st_mode), mode=st.st_mode,
                 executable=bool(st.st_mode & 0o111) and stat.S_ISREG(st.st_mode))
    try:
        with open(path, "rb") as f:
            head = f.read(256)
        if head.startswith(b"#!"):
            interp = head[2:].split(b"\n", 1)[0].strip().split()
            if interp:
                ip = interp[0].decode("utf-8", "replace")
                facts["interpreter"] = ip
                facts["interpreter_exists"] = os.access(ip, os.X_OK)
        elif not head.startswith(b"\x7fELF"):
            facts["format"] = "unknown"
    except OSError:
        pass
    return facts


def read_handler(parsed: Dict[str, Any], abrt_root: str = "") -> Dict[str, Any]:
    """Facts for the handler named by a parsed core_pattern (see kernel.core_pattern.parse);
    ABRT's files are read under *abrt_root* (tests)."""
    kind = parsed["kind"]
    if kind == "pipe":
        facts: Dict[str, Any] = {"helper": _helper_facts(parsed["helper"]) if parsed["helper"] else None}
        name = os.path.basename(parsed["helper"])
        if "systemd-coredump" in name:
            socks = listening_unix_sockets()
            facts["systemd_coredump"] = {"conf": read_coredump_conf(), "socket_known": socks is not None,
                                         "socket": (socks or {}).get("/run/systemd/coredump")}
        elif name == "apport":
            enabled = None
            try:
                with open("/etc/default/apport") as f:
                    for line in f:
                        if line.strip().startswith("enabled="):
                            enabled = line.strip().split("=", 1)[1].strip() not in ("0", "false", "no")
            except OSError:
                pass
            facts["apport"] = {"enabled": enabled}
        elif name.startswith("abrt-hook"):
            from coredoctor.snapshot import abrt
            facts["abrt"] = abrt.read_abrt(abrt_root)
        return facts
    if kind == "socket":
        return socket_facts(parsed["path"])
    return {}


# --------------------------------------------------------------------------- socket mode (6.16+)
# The kernel side, which these facts are read for (see kernel/handlers.py SOCKET_RULES):
# coredump_sock_connect() (fs/coredump.c) creates a SOCK_STREAM socket in init_net and
# kernel_connect()s with SOCK_COREDUMP; unix_find_bsd() (net/unix/af_unix.c) then resolves the
# path from init_task's fs root with kernel credentials and LOOKUP_BENEATH | LOOKUP_NO_SYMLINKS |
# LOOKUP_NO_MAGICLINKS, and finds the listener by the inode -- in whichever network namespace it
# was bound. So: walk the path from PID 1's root (which shares init_task's fs_struct: kernel_init
# is started with CLONE_FS and switch_root's chroot changes that shared root), lstat only (never
# follow a link), and look for the listener in every network namespace, not only init_net.

_HOST_ROOT = "/proc/1/root"


def walk_from_root(path: str, root: str = _HOST_ROOT) -> Dict[str, Any]:
    """How the kernel's lookup of *path* from *root* ends: ``{"reached": bool, "error": errno
    name or None, "at": the component, "symlink": the first symlink met or None, "final":
    "socket"|"symlink"|"file"|"dir"|"other"|None, "ino", "dev", "uid", "mode"}``. Every component is
    lstat()ed below *root*; nothing is followed, nothing is opened."""
    out: Dict[str, Any] = {"reached": False, "error": None, "at": None, "symlink": None, "final": None}
    comps = [c for c in path.split("/") if c and c != "."]
    cur = ""
    for i, c in enumerate(comps):
        cur = f"{cur}/{c}"
        last = i == len(comps) - 1
        try:
            st = os.lstat(root + cur)
        except OSError as e:
            import errno as _errno
            out.update(error=_errno.errorcode.get(e.errno or 0, str(e.errno)), at=cur)
            return out
        if stat.S_ISLNK(st.st_mode):
            out["symlink"] = cur
            if not last:  # LOOKUP_NO_SYMLINKS: a symlink in the middle -> -ELOOP
                out.update(error="ELOOP", at=cur)
                out["resolved"] = _resolve(path, root)
                return out
            out.update(reached=True, final="symlink", at=cur)  # not followed: not a socket inode
            return out
        if not last and not stat.S_ISDIR(st.st_mode):
            out.update(error="ENOTDIR", at=cur)
            return out
        if last:
            kind = ("socket" if stat.S_ISSOCK(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
                    else "dir" if stat.S_ISDIR(st.st_mode) else "other")
            out.update(reached=True, final=kind, at=cur, ino=st.st_ino, dev=st.st_dev, uid=st.st_uid,
                       mode=st.st_mode)
    if not comps:
        out.update(reached=True, final="dir", at="/")
    return out


def _resolve(path: str, root: str, depth: int = 8) -> Optional[str]:
    """*path* with its symlinked components replaced by their targets, read with readlink() below
    *root* (never opened, never followed by the system), or None when that does not end in a path
    without symlinks within *depth* links."""
    for _ in range(depth):
        comps = [c for c in path.split("/") if c and c != "."]
        cur = ""
        for i, c in enumerate(comps):
            cur = f"{cur}/{c}"
            try:
                st = os.lstat(root + cur)
            except OSError:
                return path  # the rest does not exist: no further symlink in it
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(root + cur)
                except OSError:
                    return None
                base = target if target.startswith("/") else os.path.dirname(cur) + "/" + target
                path = os.path.normpath("/".join([base] + comps[i + 1:]))
                break
        else:
            return path
    return None


def listeners_all_netns(proc: str = "/proc") -> Tuple[Dict[str, List[Dict[str, Any]]], bool, int]:
    """``({path: [{"type", "netns", "via_pid"}]}, init_net_known, namespaces read)``: listening
    unix sockets of every network namespace that some process is in (one /proc/PID/net/unix per
    namespace; init_net through PID 1 first)."""
    seen: Dict[int, int] = {}
    pids = ["1"]
    try:
        pids += sorted((d for d in os.listdir(proc) if d.isdigit() and d != "1"), key=int)
    except OSError:
        pass
    out: Dict[str, List[Dict[str, Any]]] = {}
    init_known = False
    for pid in pids:
        try:
            ns = os.stat(f"{proc}/{pid}/ns/net").st_ino
        except OSError:
            if pid != "1":
                continue
            ns = 0  # PID 1's namespace file may be unreadable; its net/unix still is init_net's
        if ns in seen:
            continue
        seen[ns] = int(pid)
        socks = listening_unix_sockets(f"{proc}/{pid}/net/unix")
        if socks is None:
            continue
        if pid == "1":
            init_known = True
        for p, typ in socks.items():
            have = out.setdefault(p, [])
            if pid != "1" and any(e["init_net"] and e["type"] == typ for e in have):
                continue  # the same namespace as PID 1's, seen through a pid whose ns/net we could read
            have.append({"type": typ, "netns": ns or None, "via_pid": int(pid), "init_net": pid == "1"})
    return out, init_known, len(seen)


def _same_mntns() -> Optional[bool]:
    try:
        return os.stat("/proc/self/ns/mnt").st_ino == os.stat("/proc/1/ns/mnt").st_ino
    except OSError:
        return None


def _lookup(p: str) -> Dict[str, Any]:
    """The walk from PID 1's root when it can be read, else from coredoctor's own root (then
    ``root`` says so and ``same_mntns`` whether that is the same mount namespace, None: unknown)."""
    try:
        os.lstat(_HOST_ROOT + "/")
        root = _HOST_ROOT
    except OSError:
        root = ""
    d = walk_from_root(p, root)
    d["root"] = root or "/"
    d["same_mntns"] = True if root else _same_mntns()
    return d


def socket_facts(p: str) -> Dict[str, Any]:
    """Facts for ``@p`` / ``@@p``: the path as the kernel's lookup sees it and who listens."""
    facts: Dict[str, Any] = {"path": p}
    # the view of coredoctor's own mount namespace (kept: older snapshots have only this)
    try:
        st = os.lstat(p)
        facts["exists"] = True
        facts["is_socket"] = stat.S_ISSOCK(st.st_mode)
    except OSError:
        facts["exists"] = False
    facts["lookup"] = _lookup(p)
    listeners, init_known, nns = listeners_all_netns()
    socks = listening_unix_sockets()
    facts["listening"] = None if socks is None else socks.get(p)
    facts["listening_known"] = socks is not None
    facts["listeners"] = listeners.get(p, [])
    facts["netns_read"] = nns
    return facts
