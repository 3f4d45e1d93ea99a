"""
Handler stores
--------------
Cores that a pipe handler kept, as events to correlate by pid and time (pids are reused: the
time tells two crashes of one pid apart). systemd-coredump: ``coredumpctl --json=short list``
when it answers (it reads the journal and knows ``present``/``missing``/``truncated``), else its
store ``/var/lib/systemd/coredump/core.COMM.UID.BOOT_ID.PID.USEC[.zst|.xz|.lz4]`` (USEC is the
crash time the kernel passed as %t). Apport's cores: see :mod:`.apport`.
"""

import glob
import json
import os
import shutil
import subprocess

from coredoctor.history import apport

__all__ = ["systemd_coredump", "apport_cores", "SYSTEMD_STORE"]

SYSTEMD_STORE = "/var/lib/systemd/coredump"
_COMPRESSED = (".zst", ".xz", ".lz4", ".gz")


def _store_glob(root, since):
    out = []
    for p in glob.glob(os.path.join(root, SYSTEMD_STORE.lstrip("/"), "core.*")):
        name = os.path.basename(p)
        for ext in _COMPRESSED:
            if name.endswith(ext):
                name = name[:-len(ext)]
        parts = name.split(".")
        if len(parts) < 6 or not (parts[-1].isdigit() and parts[-2].isdigit()):
            continue
        when = int(parts[-1]) / 1e6
        if since is not None and when < since:
            continue
        try:
            size = os.path.getsize(p)
        except OSError:
            continue
        out.append({"event": "stored-core", "pid": int(parts[-2]), "comm": ".".join(parts[1:-4]) or None,
                    "time": when, "path": p, "size": size, "handler": "systemd-coredump", "truncated": None,
                    "source": f"systemd-coredump:{SYSTEMD_STORE}", "gate": None,
                    "line": f"stored core {p}"})
    return out


def _coredumpctl(since):
    if shutil.which("coredumpctl") is None:
        return None
    cmd = ["coredumpctl", "--json=short", "--no-pager", "-q", "list"]
    if since is not None:
        cmd += [f"--since=@{int(since)}"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0 or not r.stdout.strip().startswith("["):
        return None  # no journal, no entries, or a coredumpctl without --json
    try:
        rows = json.loads(r.stdout)
    except ValueError:
        return None
    out = []
    for row in rows:
        state = row.get("corefile")
        out.append({"event": "stored-core", "pid": row.get("pid"), "comm": None, "exe": row.get("exe"),
                    "time": row["time"] / 1e6 if row.get("time") else None, "signo": row.get("sig"),
                    "path": row.get("filename"), "size": row.get("size"), "handler": "systemd-coredump",
                    "truncated": state == "truncated", "corefile": state, "source": "coredumpctl", "gate": None,
                    "line": f"coredumpctl: pid {row.get('pid')} {row.get('exe')} signal {row.get('sig')} "
                            f"corefile {state}"})
    return out


def systemd_coredump(since=None, root="/"):
    """``(events, how)``: what systemd-coredump kept; *how* is ``coredumpctl`` or ``store``.
    The store is read too: coredumpctl knows only what the journal recorded."""
    events = _coredumpctl(since) if root == "/" else None
    how = "coredumpctl" if events is not None else "store"
    events = list(events or [])
    known = {e["path"] for e in events if e.get("path")}
    events += [e for e in _store_glob(root, since) if e["path"] not in known]
    return events, how


def apport_cores(root="/"):
    """apport's stored cores as events (pid from the name, time from the file)."""
    out = []
    for pid, paths in apport.core_files(root).items():
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                continue
            out.append({"event": "stored-core", "pid": pid, "comm": None, "time": st.st_mtime, "path": p,
                        "size": st.st_size, "handler": "apport", "truncated": None, "gate": None,
                        "source": "apport:/var/lib/apport/coredump", "line": f"stored core {p}"})
    return out
