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

import errno
import glob
import gzip
import os
import re
import time
import zlib
from typing import Iterator

from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Iterator, List, Optional, Tuple

from coredoctor.history import BadRecord, MAX_LINE, OnSkip, lines_bounded, number, open_in_dir, safe_dir_entries

if TYPE_CHECKING:
    from coredoctor.history.kmsg import Event

__all__ = ["read_reports", "core_files", "read_log", "log_files", "enabled", "MAX_REPORT"]

#: /var/crash is world-writable (1777 on Ubuntu, and so made by our own fix): a report is read up
#: to this many bytes (its CoreDump, base64, comes before ProcStatus and Signal in apport's sorted
#: keys, so a big core is read past); a larger file is not read to its end and is counted as skipped
MAX_REPORT = 1 << 30
#: and all reports together up to this many (a user can plant many files): the rest are counted
MAX_REPORTS_TOTAL = 4 << 30
_FIELD_LINE = 64 << 10  # a longer line of a field we read is no apport output (ProcStatus: ~1.5K)

_WANTED = {"ProblemType", "Date", "ExecutablePath", "Signal", "SignalName", "ProcStatus", "CoreDump",
           "UnreportableReason", "ProcCwd", "_PID"}


def _date(text: str) -> Optional[float]:
    """apport's dates are time.asctime() in local time: 'Tue Nov 25 01:36:00 2026'."""
    try:
        return time.mktime(time.strptime(text.strip(), "%a %b %d %H:%M:%S %Y"))
    except (ValueError, OverflowError):
        return None


def _parse_report(f: BinaryIO, source: str, limit: int = MAX_REPORT) -> Dict[str, str]:
    """The fields of :data:`_WANTED` of an open report (binary file *f*), reading at most *limit*
    bytes and no line of a wanted field longer than 64 KiB (the CoreDump's lines are passed over).
    ``f.tell()`` is what was read, also when it raises BadRecord."""
    fields: Dict[str, str] = {}
    cur: Optional[str] = None
    seen = 0
    while True:
        raw = f.readline(_FIELD_LINE)
        if not raw:
            return fields
        seen += len(raw)
        if len(raw) == _FIELD_LINE and not raw.endswith(b"\n"):  # a long line: pass over the rest
            while True:
                more = f.readline(1 << 20)
                seen += len(more)
                if not more or more.endswith(b"\n") or seen > limit:
                    break
            if raw[:1] not in (b" ", b"\t"):
                cur = raw.split(b":", 1)[0].decode("utf-8", "replace")
                if cur in _WANTED and cur != "CoreDump":
                    raise BadRecord(source, f"field {cur} has a line over {_FIELD_LINE} bytes")
                if cur == "CoreDump":
                    fields[cur] = "present"
            elif cur == "CoreDump":
                fields[cur] = "present"
            elif cur == "ProcStatus":
                raise BadRecord(source, f"field ProcStatus has a line over {_FIELD_LINE} bytes")
            raw = b""
        if seen > limit:
            raise BadRecord(source, f"a report of more than {limit} bytes: not read to its end")
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t"):
            if cur == "ProcStatus":
                if len(fields[cur]) < _FIELD_LINE:
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


def _report(path: str, fd: int, st: os.stat_result, skipped: "OnSkip | None" = None,
            limit: int = MAX_REPORT) -> Tuple[Dict[str, Any], int]:
    """One report's event, from its open *fd* (:func:`read_reports`), and the bytes read;
    BadRecord when it cannot be trusted or read."""
    if st.st_nlink != 1:  # a hard link to someone else's file: apport writes each report anew
        os.close(fd)
        raise BadRecord(path, f"has {st.st_nlink} hard links: not a report apport wrote")
    with os.fdopen(fd, "rb") as f:
        try:
            r = _parse_report(f, path, limit)
        except BadRecord as err:
            err.seen = f.tell()  # what the read budget was charged
            raise
        seen = f.tell()
    status = r.get("ProcStatus", "")
    pid_m = re.search(r"^Pid:\s*(\S+)", status, re.M)
    uid = re.search(r"^Uid:\s*(\S+)", status, re.M)
    name = re.search(r"^Name:\s*(.+)$", status, re.M)
    crashed_uid = number(uid.group(1), "uid", path, "ProcStatus Uid") if uid else None
    if st.st_uid != 0 and st.st_uid != crashed_uid:
        # apport writes a report as root and gives it to the crashed process's uid; anyone else
        # can drop a file in the world-writable /var/crash
        raise BadRecord(path, f"owned by uid {st.st_uid}, neither root nor the crashed process's uid: "
                              "not trusted")
    pid: Optional[int]
    if pid_m:
        pid = number(pid_m.group(1), "pid", path, "ProcStatus Pid")
    elif r.get("_PID"):
        pid = number(r["_PID"], "pid", path, "_PID")
    else:
        pid = None
    sig = r.get("Signal", "")
    signo = number(sig, "signo", path, "Signal") if sig else None
    return {"event": "apport-report", "pid": pid,
            "comm": name.group(1).strip() if name else None, "exe": r.get("ExecutablePath"),
            "signo": signo, "signal": r.get("SignalName"), "time": _date(r.get("Date", "")),
            "gate": None, "source": f"apport:{path}", "path": path,
            "core": "present" if r.get("CoreDump") else "missing",
            "unreportable": r.get("UnreportableReason"), "problem": r.get("ProblemType", "Crash"),
            "line": f"apport report {path}: {r.get('ExecutablePath', '?')} signal {signo if sig else '?'}, "
                    f"{'with' if r.get('CoreDump') else 'without'} CoreDump"}, seen


def read_reports(root: str = "/", since: "float | None" = None, skipped: "OnSkip | None" = None,
                 limit: int = MAX_REPORT, total: int = MAX_REPORTS_TOTAL) -> "Iterator[dict]":
    """One event per crash report: ``event`` ``apport-report``, ``pid``, ``comm``, ``exe``,
    ``signo``, ``time``, ``path`` and ``core`` (``present`` when the report embeds it).
    /var/crash is world-writable: it is opened O_NOFOLLOW|O_DIRECTORY and each report with openat
    O_NOFOLLOW from it (a symlink is not followed), a report owned by neither root nor the uid it
    names is not trusted, and at most *limit* bytes of one (*total* of all) are read. *skipped* is
    called with the :class:`BadRecord` of each report left out."""
    d = os.path.join(root, "var/crash")
    dirfd, names = safe_dir_entries(d)
    if dirfd is None:
        return
    try:
        for n in names:
            if not n.endswith(".crash"):
                continue
            path = os.path.join(d, n)
            try:
                if total <= 0:
                    raise BadRecord(path, f"not read: the reports before it took the {MAX_REPORTS_TOTAL >> 30} GiB "
                                          "read for all")
                fd, st = open_in_dir(dirfd, n)
                e, seen = _report(path, fd, st, skipped, min(limit, total))
                total -= seen
            except BadRecord as err:
                total -= getattr(err, "seen", 0)
                if skipped is not None:
                    skipped(BadRecord(path, err.why))
                continue
            except OSError as err:
                if skipped is not None:
                    why = "a symlink: not followed" if err.errno == errno.ELOOP else \
                        f"cannot be read ({err.strerror})"
                    skipped(BadRecord(path, why))
                continue
            if e.pop("problem") != "Crash":
                continue
            if since is not None and e["time"] is not None and e["time"] < since:
                continue
            yield e
    finally:
        os.close(dirfd)


def core_files(root: str = "/", skipped: "OnSkip | None" = None) -> "dict[int, list[str]]":
    """``{pid: [paths]}`` of apport's stored cores (core.EXE_PATH.UID.BOOT_ID.PID.TIME)."""
    out: Dict[int, List[str]] = {}
    d = os.path.join(root, "var/lib/apport/coredump")
    dirfd, names = safe_dir_entries(d)
    if dirfd is None:
        return out
    os.close(dirfd)
    for n in names:
        if not n.startswith("core."):
            continue
        parts = n.split(".")
        if len(parts) >= 5 and parts[-2].isdigit():
            try:
                pid = number(parts[-2], "pid", os.path.join(d, n), "the pid in the name")
            except BadRecord as err:
                if skipped is not None:
                    skipped(err)
                continue
            out.setdefault(pid, []).append(os.path.join(d, n))
    return out


def log_files(root: str = "/") -> List[str]:
    """/var/log/apport.log and its rotations (.1, .2.gz, ...), newest first."""
    base = os.path.join(root, "var/log/apport.log")
    rot = [p for p in glob.glob(glob.escape(base) + ".*") if re.fullmatch(r"\.[0-9]{1,6}(\.gz)?", p[len(base):])]
    return ([base] if os.path.isfile(base) else []) + sorted(rot, key=lambda p: _rotation(p[len(base):]))


def _rotation(suffix: str) -> int:
    """The number of a rotation suffix (``.2.gz`` -> 2; log_files() keeps only suffixes that have one)."""
    m = re.search(r"\.([0-9]+)", suffix)
    return int(m.group(1)) if m else 0


def read_log(paths: "list[str] | None" = None, root: str = "/", since: "float | None" = None,
             skipped: "OnSkip | None" = None) -> "list[Event]":
    """apport.log lines classified by :func:`daemonlog.parse_apport_line`, oldest file first,
    with ``source`` ``apport.log:PATH``; handler lines tied to their crashed pid
    (:func:`daemonlog.link`). *skipped*: called with the BadRecord of each line left out."""
    from coredoctor.history import daemonlog
    out = []
    for path in reversed(log_files(root) if paths is None else paths):
        source = f"apport.log:{path}"
        try:
            f = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
        except OSError:
            continue
        with f:
            try:
                for raw, n in lines_bounded(f, MAX_LINE):
                    try:
                        if raw is None:
                            raise BadRecord(source, f"a line of {n} bytes (at most {MAX_LINE} are read)")
                        if b"apport (pid" not in raw:
                            continue
                        e = daemonlog.parse_apport_line(raw.decode("utf-8", "replace"), source=source)
                    except BadRecord as err:
                        if skipped is not None:
                            skipped(err)
                        continue
                    if e is not None and (since is None or e["time"] is None or e["time"] >= since):
                        out.append(e)
            except (OSError, EOFError, zlib.error):  # a cut or corrupt .gz: what was read stands
                continue
    return daemonlog.link(out)


def enabled(root: str = "/") -> Optional[bool]:
    """/etc/default/apport ``enabled=`` (True, False, or None when there is no such file)."""
    try:
        with open(os.path.join(root, "etc/default/apport")) as f:
            for line in f:
                if line.strip().startswith("enabled="):
                    return line.strip().split("=", 1)[1].strip() not in ("0", "false", "no")
    except OSError:
        return None
    return True
