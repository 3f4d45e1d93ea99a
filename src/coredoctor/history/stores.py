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
from typing import Any, Dict, List, Optional

import stat

from coredoctor.history import BadRecord, DIGITS, OnSkip, apport, finite_time, number

__all__ = ["systemd_coredump", "apport_cores", "SYSTEMD_STORE"]

SYSTEMD_STORE = "/var/lib/systemd/coredump"
_COMPRESSED = (".zst", ".xz", ".lz4", ".gz")


def _store_glob(root: str, since: Optional[float], skipped: "OnSkip | None" = None) -> List[Dict[str, Any]]:
    out = []
    for p in glob.glob(os.path.join(glob.escape(root), SYSTEMD_STORE.lstrip("/"), "core.*")):
        name = os.path.basename(p)
        for ext in _COMPRESSED:
            if name.endswith(ext):
                name = name[:-len(ext)]
        parts = name.split(".")
        if len(parts) < 6 or not (parts[-1].isdigit() and parts[-2].isdigit()):
            continue
        try:
            pid = number(parts[-2], "pid", p, "the pid in the name")
            when = finite_time(number(parts[-1], "u64", p, "the time in the name") / 1e6, p)
        except BadRecord as err:
            if skipped is not None:
                skipped(err)
            continue
        if since is not None and when < since:
            continue
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        out.append({"event": "stored-core", "pid": pid, "comm": ".".join(parts[1:-4]) or None,
                    "time": when, "path": p, "size": st.st_size, "handler": "systemd-coredump", "truncated": None,
                    "source": f"systemd-coredump:{SYSTEMD_STORE}", "gate": None,
                    "line": f"stored core {p}"})
    return out


def _row_int(v: object, kind: str) -> Optional[int]:
    """A number of coredumpctl's JSON (an int there), or None when it is not one in range."""
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 10 ** DIGITS[kind]:
        return None
    return v


def _coredumpctl(since: Optional[float], skipped: "OnSkip | None" = None) -> Optional[List[Dict[str, Any]]]:
    if shutil.which("coredumpctl") is None:
        return None
    cmd = ["coredumpctl", "--json=short", "--no-pager", "-q", "list"]
    if since is not None:
        cmd += [f"--since=@{int(since)}"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                           errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0 or not r.stdout.strip().startswith("["):
        return None  # no journal, no entries, or a coredumpctl without --json
    try:
        rows = json.loads(r.stdout)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rows, list):
        return None
    out = []
    for row in rows:
        if not isinstance(row, dict):
            if skipped is not None:
                skipped(BadRecord("coredumpctl", "a row that is not a JSON object"))
            continue
        t = _row_int(row.get("time"), "u64")
        try:
            when = finite_time(t / 1e6, "coredumpctl") if t else None
        except BadRecord as err:
            if skipped is not None:
                skipped(err)
            continue
        state = row.get("corefile") if isinstance(row.get("corefile"), str) else None
        pid, sig = _row_int(row.get("pid"), "pid"), _row_int(row.get("sig"), "signo")
        exe = row.get("exe") if isinstance(row.get("exe"), str) else None
        out.append({"event": "stored-core", "pid": pid, "comm": None, "exe": exe,
                    "time": when, "signo": sig,
                    "path": row.get("filename") if isinstance(row.get("filename"), str) else None,
                    "size": _row_int(row.get("size"), "u64"), "handler": "systemd-coredump",
                    "truncated": state == "truncated", "corefile": state, "source": "coredumpctl", "gate": None,
                    "line": f"coredumpctl: pid {pid} {exe} signal {sig} corefile {state}"})
    return out


def systemd_coredump(since: "float | None" = None, root: str = "/",
                     skipped: "OnSkip | None" = None) -> "tuple[list[dict], str]":
    """``(events, how)``: what systemd-coredump kept; *how* is ``coredumpctl`` or ``store``.
    The store is read too: coredumpctl knows only what the journal recorded."""
    events = _coredumpctl(since, skipped) if root == "/" else None
    how = "coredumpctl" if events is not None else "store"
    events = list(events or [])
    known = {e["path"] for e in events if e.get("path")}
    events += [e for e in _store_glob(root, since, skipped) if e["path"] not in known]
    return events, how


def apport_cores(root: str = "/", skipped: "OnSkip | None" = None) -> "list[dict]":
    """apport's stored cores as events (pid from the name, time from the file; symlinks and
    other non-files are passed over)."""
    out = []
    for pid, paths in apport.core_files(root, skipped).items():
        for p in paths:
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or not 0 <= st.st_mtime < 2 ** 33:
                continue
            out.append({"event": "stored-core", "pid": pid, "comm": None, "time": st.st_mtime, "path": p,
                        "size": st.st_size, "handler": "apport", "truncated": None, "gate": None,
                        "source": "apport:/var/lib/apport/coredump", "line": f"stored core {p}"})
    return out
