"""
ABRT's configuration
--------------------
Facts for ``|/usr/libexec/abrt-hook-ccpp ...`` (RHEL 7/8's default core_pattern, written by
abrt-install-ccpp-hook): the settings the hook and abrtd read (:mod:`coredoctor.kernel.abrt`
judges them), each file under a *root* prefix so tests can point the reader at a tree they
wrote. The record (``handler.abrt`` in the snapshot)::

    {"abrt": {key: value} of abrt.conf, "ccpp": of plugins/CCpp.conf,
     "pkgdata": of abrt-action-save-package-data.conf,
     "files": [the files read, in order],
     "daemon": {"pidfile": path or null, "pid": int or null, "running": bool},
     "saved_core_pattern": the pattern abrt-install-ccpp-hook saved, or null,
     "free_bytes": free space of DumpLocation (statvfs f_bavail * f_frsize) or null}

Each file: the packaged defaults (``/usr/share/abrt/conf.d/...``, RHEL 8) first, then
``/etc/abrt/...``; a later file's key wins (libreport load_abrt_conf_file()).
"""

import os
from typing import Any, Dict, List, Optional

__all__ = ["parse_conf", "read_abrt", "CONF_FILES", "PIDFILES"]

_MAX_FILE = 64 << 10
_MAX_KEYS = 256
_MAX_VALUE = 4096

#: record key -> (packaged default, the administrator's file)
CONF_FILES = {
    "abrt": ("/usr/share/abrt/conf.d/abrt.conf", "/etc/abrt/abrt.conf"),
    "ccpp": ("/usr/share/abrt/conf.d/plugins/CCpp.conf", "/etc/abrt/plugins/CCpp.conf"),
    "pkgdata": ("/usr/share/abrt/conf.d/abrt-action-save-package-data.conf",
                "/etc/abrt/abrt-action-save-package-data.conf"),
}
#: libabrt daemon_is_ok(): VAR_RUN/abrt/abrtd.pid (VAR_RUN is /var/run, a link to /run)
PIDFILES = ("/var/run/abrt/abrtd.pid", "/run/abrt/abrtd.pid")
SAVED_PATTERN = "/var/run/abrt/saved_core_pattern"


def parse_conf(text: str) -> Dict[str, str]:
    """``Key = Value`` lines the way libreport's load_conf_file() reads them: ``#`` starts a
    comment line, blanks around key and value are dropped, a value in double quotes loses
    them; a line without ``=`` is skipped. At most 256 keys, values cut to 4096 characters."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, _, v = line.partition("=")
        k, v = k.strip(), v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        if not k or (k not in out and len(out) >= _MAX_KEYS):
            continue
        out[k[:256]] = v[:_MAX_VALUE]
    return out


def _read_text(path: str) -> Optional[str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        import stat
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, _MAX_FILE).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def read_abrt(root: str = "", proc: str = "/proc") -> Dict[str, Any]:
    """ABRT's record (see the module's docstring), its files read under *root*; whether abrtd
    runs is asked of *proc* the way daemon_is_ok() does (``/proc/PID/stat`` exists)."""
    rec: Dict[str, Any] = {"files": []}
    for key, paths in CONF_FILES.items():
        merged: Dict[str, str] = {}
        for p in paths:
            text = _read_text(root + p)
            if text is not None:
                merged.update(parse_conf(text))
                rec["files"].append(p)
        rec[key] = merged
    daemon: Dict[str, Any] = {"pidfile": None, "pid": None, "running": False}
    for p in PIDFILES:
        text = _read_text(root + p)
        if text is None:
            continue
        daemon["pidfile"] = p
        first = text.split("\n", 1)[0].strip()
        if first.isdigit() and first.isascii() and len(first) < 8 and 1 <= int(first) <= 1 << 22:
            daemon["pid"] = int(first)
            daemon["running"] = os.path.exists(f"{proc}/{first}/stat")
        break
    rec["daemon"] = daemon
    saved = _read_text(root + SAVED_PATTERN)
    rec["saved_core_pattern"] = saved.split("\n", 1)[0][:4096] if saved is not None else None
    loc = rec["abrt"].get("DumpLocation") or "/var/spool/abrt"
    rec["free_bytes"] = None
    try:
        st = os.statvfs(root + loc)
        rec["free_bytes"] = st.f_bavail * st.f_frsize
    except (OSError, ValueError):
        pass
    return rec


def files_read(rec: Dict[str, Any]) -> List[str]:
    return list(rec.get("files") or [])
