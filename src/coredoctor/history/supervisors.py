"""
Supervisors' own log files
--------------------------
The other witnesses of a crash: the parent that reaps a crashed child writes how it died to its
own log file (nginx's error.log, Open vSwitch's ovs-vswitchd.log, ...), whether or not the kernel
logged the fault (arm64: ``debug.exception-trace`` is 0 by default). The lines' messages are
classified by :data:`coredoctor.history.daemonlog.SUPERVISORS` (one row per program, citing its
source); this module knows where each program writes and how each stamps its lines. Reading:
bounded lines, files opened without following symlinks, each bad line one skipped record.
"""

import calendar
import os
import re
import time

from typing import Callable, Iterable, Iterator, List, Optional, Tuple

from coredoctor.history import BadRecord, OnSkip, lines_bounded, open_in_dir, safe_dir_entries
from coredoctor.history import daemonlog
from coredoctor.history.kmsg import Event

__all__ = ["FILES", "parse_file_line", "log_files", "read"]


def _local(fmt: str) -> Callable[[str], Optional[float]]:
    def conv(text: str) -> Optional[float]:
        try:
            return time.mktime(time.strptime(text, fmt))
        except (ValueError, OverflowError):
            return None
    return conv


def _utc(fmt: str) -> Callable[[str], Optional[float]]:
    def conv(text: str) -> Optional[float]:
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except (ValueError, OverflowError):
            return None
    return conv


#: (ident of the daemonlog row, directory under the root, file name regex, line-start regex with the
#: time in group "t" (fraction dropped), time converter, source of the format)
FILES: Tuple[Tuple[str, str, str, str, Callable[[str], Optional[float]], str], ...] = (
    # ngx_log_error_core() src/core/ngx_log.c: ngx_cached_err_log_time "%4d/%02d/%02d %02d:%02d:%02d" (local)
    ("nginx", "var/log/nginx", r"error\.log(?:\.1)?$", r"(?P<t>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[",
     _local("%Y/%m/%d %H:%M:%S"), "ngx_log_error_core() nginx src/core/ngx_log.c"),
    # vlog's default file pattern "%D{%Y-%m-%dT%H:%M:%S.###Z}|%05N|%c%T|%p|%m" (lib/vlog.c), UTC
    ("ovs-vswitchd", "var/log/openvswitch", r"ovs-vswitchd\.log(?:\.1)?$",
     r"(?P<t>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?Z\|", _utc("%Y-%m-%dT%H:%M:%S"),
     "vlog default_pattern openvswitch lib/vlog.c"),
    ("ovsdb-server", "var/log/openvswitch", r"ovsdb-server\.log(?:\.1)?$",
     r"(?P<t>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?Z\|", _utc("%Y-%m-%dT%H:%M:%S"),
     "vlog default_pattern openvswitch lib/vlog.c"),
    # httpd log_ctime() server/log.c: "[%a %b %d %H:%M:%S.%u %Y] " (local)
    ("httpd", "var/log/apache2", r"error\.log(?:\.1)?$",
     r"\[(?P<t>[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d)(?:\.\d+)? (?P<y>\d{4})\] ",
     _local("%a %b %d %H:%M:%S %Y"), "log_ctime() httpd server/log.c"),
    ("httpd", "var/log/httpd", r"error_log$",
     r"\[(?P<t>[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d)(?:\.\d+)? (?P<y>\d{4})\] ",
     _local("%a %b %d %H:%M:%S %Y"), "log_ctime() httpd server/log.c"),
    # Debian's log_line_prefix '%m [%p] ' (postgresql-common): "2026-12-01 12:00:00.123 UTC [99] "
    ("postgres", "var/log/postgresql", r"postgresql-[0-9.]+-[A-Za-z0-9_-]+\.log(?:\.1)?$",
     r"(?P<t>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.\d+)? (?P<tz>UTC|GMT) ", _utc("%Y-%m-%d %H:%M:%S"),
     "log_line_prefix %m postgresql-common"),
    # fpm zlog() sapi/fpm/fpm/zlog.c: "[%d-%b-%Y %H:%M:%S] " (local; 7.3+ may add ".%06d")
    ("php-fpm", "var/log", r"php[0-9.]*-fpm\.log(?:\.1)?$", r"\[(?P<t>\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d)"
     r"(?:\.\d+)?\] ", _local("%d-%b-%Y %H:%M:%S"), "zlog() php-src sapi/fpm/fpm/zlog.c"),
    # supervisor loggers.py: "%(asctime)s %(levelname)s %(message)s", asctime "%Y-%m-%d %H:%M:%S,mmm" (local)
    ("supervisord", "var/log/supervisor", r"supervisord\.log(?:\.1)?$",
     r"(?P<t>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d{3} ", _local("%Y-%m-%d %H:%M:%S"),
     "supervisor/loggers.py"),
)
_STARTS = tuple((ident, re.compile(start, re.ASCII), conv) for ident, _d, _n, start, conv, _s in FILES)
#: the longest supervisor line read (nginx's own limit is NGX_MAX_ERROR_STR 2048)
MAX_LINE = 8192


def parse_file_line(line: str, source: str = "daemon-log") -> "Event | None":
    """Classify one line of a supervisor's own log file, whichever program's format it is in."""
    if len(line) > MAX_LINE:
        raise BadRecord(source, f"a daemon log line of {len(line)} characters (at most {MAX_LINE} are read)")
    line = line.rstrip("\r\n")
    for ident, start, conv in _STARTS:
        m = start.match(line)
        if not m:
            continue
        t = m.group("t") + (" " + m.group("y") if "y" in start.groupindex else "")
        e = daemonlog.parse_message(ident, None, line, conv(t), source=source)
        if e is not None:
            e["line"] = line
            return e
    return None


def log_files(root: str = "/") -> List[str]:
    """The supervisors' log files present under *root* (the live file and its first rotation)."""
    out = []
    for _ident, d, name, _s, _c, _src in FILES:
        path = os.path.join(root, d)
        fd, names = safe_dir_entries(path)
        if fd is None:
            continue
        os.close(fd)
        out += [os.path.join(path, n) for n in names if re.fullmatch(name, n, re.ASCII)]
    return sorted(set(out))


def read(paths: Iterable[str], skipped: "OnSkip | None" = None, long_lines: bool = True) -> Iterator[Event]:
    """The supervisor events of *paths*, each file in order (source ``daemon-log:PATH``); a file
    is opened without following a symlink in its last component. *long_lines*: report a line
    too long to read as a skipped record (False when the syslog reader reads the same files and
    reports it already)."""
    for path in paths:
        src = f"daemon-log:{path}"
        fd, _names = safe_dir_entries(os.path.dirname(path) or ".")
        if fd is None:
            continue
        try:
            try:
                ffd, _st = open_in_dir(fd, os.path.basename(path))
            except (OSError, BadRecord) as err:
                if skipped is not None and isinstance(err, BadRecord):
                    skipped(err)
                continue
        finally:
            os.close(fd)
        events = []
        with os.fdopen(ffd, "rb") as f:
            for raw, n in lines_bounded(f, MAX_LINE):
                try:
                    if raw is None:
                        if not long_lines:
                            continue
                        raise BadRecord(src, f"a daemon log line of {n} bytes (at most {MAX_LINE} are read)")
                    e = parse_file_line(raw.decode("utf-8", "replace"), src)
                except BadRecord as err:
                    if skipped is not None:
                        skipped(err)
                    continue
                if e is not None:
                    events.append(e)
        yield from daemonlog.linked(events)
