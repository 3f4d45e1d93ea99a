"""
Apport
------
What Ubuntu's crash handler (``|/usr/share/apport/apport %p %s %c %d %P %E``) leaves behind:
reports ``/var/crash/*.crash`` (RFC 822-like: ``ProblemType``, ``Date``, ``ExecutablePath``,
``Signal``, ``ProcStatus`` with the ``Pid:``, and a ``CoreDump`` field when it kept the core),
cores in ``/var/lib/apport/coredump/core.EXE_PATH.UID.BOOT_ID.PID.TIME`` (apport 2.20.11+,
only when the crashed process's RLIMIT_CORE was non-zero) and its log ``/var/log/apport.log``
(``LEVEL: apport (pid N) DATE: message``), whose lines :mod:`.daemonlog` classifies. Every
reader takes *root* so that tests (and offline copies) need not write into /var.
"""

import glob
import gzip
import os
import re
import time

__all__ = ["read_reports", "core_files", "read_log", "log_files", "enabled"]

_WANTED = {"ProblemType", "Date", "ExecutablePath", "Signal", "SignalName", "ProcStatus", "CoreDump",
           "UnreportableReason", "ProcCwd", "_PID"}


def _date(text):
    """apport's dates are time.asctime() in local time: 'Tue Nov 25 01:36:00 2026'."""
    try:
        return time.mktime(time.strptime(text.strip(), "%a %b %d %H:%M:%S %Y"))
    except (ValueError, OverflowError):
        return None


def _parse_report(path):
    fields, cur = {}, None
    with open(path, "rb") as f:
        for raw in f:
            if raw[:1] in (b" ", b"\t"):
                if cur == "ProcStatus":
                    fields[cur] += raw.decode("utf-8", "replace").strip() + "\n"
                elif cur == "CoreDump" and not fields[cur]:
                    fields[cur] = "present"
                continue
            key, sep, val = raw.decode("utf-8", "replace").partition(":")
            cur = key if sep else None
            if cur in _WANTED:
                v = val.strip()
                fields[cur] = ("present" if v else "") if cur == "CoreDump" else v
                if cur == "ProcStatus":
                    fields[cur] = ""
    return fields


def read_reports(root="/", since=None):
    """One event per crash report: ``event`` ``apport-report``, ``pid``, ``comm``, ``exe``,
    ``signo``, ``time``, ``path`` and ``core`` (``present`` when the report embeds it)."""
    for path in sorted(glob.glob(os.path.join(root, "var/crash/*.crash"))):
        try:
            r = _parse_report(path)
        except OSError:
            continue
        if r.get("ProblemType", "Crash") != "Crash":
            continue
        pid = re.search(r"^Pid:\s*(\d+)", r.get("ProcStatus", ""), re.M)
        name = re.search(r"^Name:\s*(.+)$", r.get("ProcStatus", ""), re.M)
        when = _date(r.get("Date", ""))
        if since is not None and when is not None and when < since:
            continue
        sig = r.get("Signal", "")
        yield {"event": "apport-report", "pid": int(pid.group(1)) if pid else (int(r["_PID"]) if r.get("_PID", "").isdigit() else None),
               "comm": name.group(1).strip() if name else None, "exe": r.get("ExecutablePath"),
               "signo": int(sig) if sig.isdigit() else None, "signal": r.get("SignalName"), "time": when,
               "gate": None, "source": f"apport:{path}", "path": path,
               "core": "present" if r.get("CoreDump") else "missing",
               "unreportable": r.get("UnreportableReason"),
               "line": f"apport report {path}: {r.get('ExecutablePath', '?')} signal {sig or '?'}, "
                       f"{'with' if r.get('CoreDump') else 'without'} CoreDump"}


def core_files(root="/"):
    """``{pid: [paths]}`` of apport's stored cores (core.EXE_PATH.UID.BOOT_ID.PID.TIME)."""
    out = {}
    for p in glob.glob(os.path.join(root, "var/lib/apport/coredump/core.*")):
        parts = os.path.basename(p).split(".")
        if len(parts) >= 5 and parts[-2].isdigit():
            out.setdefault(int(parts[-2]), []).append(p)
    return out


def log_files(root="/"):
    """/var/log/apport.log and its rotations (.1, .2.gz, ...), newest first."""
    base = os.path.join(root, "var/log/apport.log")
    rot = [p for p in glob.glob(base + ".*") if re.search(r"\.\d+(\.gz)?$", p)]
    return ([base] if os.path.isfile(base) else []) + sorted(rot, key=lambda p: int(re.search(r"\.(\d+)", p[len(base):]).group(1)))


def read_log(paths=None, root="/", since=None):
    """apport.log lines classified by :func:`daemonlog.parse_apport_line`, oldest file first,
    with ``source`` ``apport.log:PATH``; handler lines tied to their crashed pid
    (:func:`daemonlog.link`)."""
    from coredoctor.history import daemonlog
    out = []
    for path in reversed(log_files(root) if paths is None else paths):
        try:
            f = gzip.open(path, "rt", errors="replace") if path.endswith(".gz") else open(path, errors="replace")
        except OSError:
            continue
        with f:
            try:
                for line in f:
                    if "apport (pid" not in line:
                        continue
                    e = daemonlog.parse_apport_line(line, source=f"apport.log:{path}")
                    if e is not None and (since is None or e["time"] is None or e["time"] >= since):
                        out.append(e)
            except (OSError, EOFError):  # a cut .gz: what was read stands
                continue
    return daemonlog.link(out)


def enabled(root="/"):
    """/etc/default/apport ``enabled=`` (True, False, or None when there is no such file)."""
    try:
        with open(os.path.join(root, "etc/default/apport")) as f:
            for line in f:
                if line.strip().startswith("enabled="):
                    return line.strip().split("=", 1)[1].strip() not in ("0", "false", "no")
    except OSError:
        return None
    return True
