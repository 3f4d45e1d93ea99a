"""
User-space crash lines
----------------------
Classify the lines that user-space programs log about a crash, wherever they are read from
(syslog files, the journal, apport.log): systemd's unit results, systemd-coredump's messages and
apport's log. Pure: a message in, a :class:`coredoctor.history.kmsg.Event` (or None) out.

Each pattern is data: the program whose ident it is logged under, the event it means, the exact
source string it matches (file and function, systemd versions v239..v257, apport 2.20..2.33), and
for refusals the id of the check gate that refused (``handler-policy``; ``rlimit-core`` when the
handler says the crashed process's RLIMIT_CORE forbade it).

Events:

``unit-result``
    systemd saw a unit's process end by a signal: ``dumped`` True (``code=dumped``, result
    ``core-dump``: the kernel wrote a core to the handler) or False (``code=killed``: no core). Only
    for the signals whose default action dumps core.
``handler-called``
    the core-dump handler was started for a crashed pid (systemd-coredump, apport).
``handler-stored``
    the handler received the core and kept it (systemd-coredump: "dumped core."; whether the
    file is still in the store is for the store to say) or wrote a report/core file (apport).
``handler-refused``
    the handler got the crash and did not keep a core: ``gate`` says why.
``handler-truncated``
    the handler kept a truncated core (``size`` bytes).
``handler-exe``
    apport's "executable: PATH" line (ties its pid to a program).
"""

import re
import signal as _signal
import time

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from coredoctor.history import BadRecord, finite_time, number, signed
from coredoctor.history.kmsg import Event
from coredoctor.kernel.signal import SIG_KERNEL_COREDUMP

__all__ = ["PATTERNS", "parse_message", "parse_tagged", "parse_apport_line", "link", "linked", "IDENTS", "SUPERVISORS",
           "SUPERVISOR_IDENTS"]

#: signals whose default action dumps core (include/linux/signal.h SIG_KERNEL_COREDUMP_MASK), by the
#: short names systemd prints in "status=11/SEGV"
_CORE_SIGNALS = frozenset(s[3:] for s in SIG_KERNEL_COREDUMP)


class P:
    __slots__ = ("ident", "event", "regex", "source", "gate", "dumped")

    def __init__(self, ident: str, event: str, regex: str, source: str, gate: Optional[str] = None,
                 dumped: Optional[bool] = None) -> None:
        self.ident, self.event, self.regex, self.source = ident, event, re.compile(regex, re.ASCII), source
        self.gate, self.dumped = gate, dumped


_SD = "systemd src/coredump/coredump.c"
_AP = "apport data/apport"
_PROC = r"^Process (?P<pid>\d+) \((?P<comm>.*)\) of user (?P<uid>\d+) "

PATTERNS = (
    # systemd (PID 1 or a user manager): service_sigchld_event() src/core/service.c, LOG_UNIT_MESSAGE
    # prefixes "UNIT: "; "main process exited" in lower case before v236
    P("systemd", "unit-result", r"^(?P<unit>\S+): (?:[Mm]ain|Control) process exited, code=(?P<code>dumped|killed), "
      r"status=(?P<signo>\d+)/(?P<signame>[A-Z0-9+]+)", "service_sigchld_event() systemd src/core/service.c"),
    # service_enter_dead() src/core/service.c (v227+): the unit's result. Only 'core-dump': 'signal' is
    # also a kill -9 by hand; the "code=killed, status=N/SIG" line above says which signal
    P("systemd", "unit-result", r"^(?P<unit>\S+): Failed with result '(?P<result>core-dump)'\.",
      "service_enter_dead() systemd src/core/service.c (v227+)"),
    # systemd-coredump, process_kernel(): logged first, "so it is not lost" (v246+)
    P("systemd-coredump", "handler-called", _PROC + r"terminated abnormally with signal (?P<signo>\d+)/"
      r"(?P<signame>[A-Z0-9+]+), processing\.\.\.", _SD + " process_kernel() (v246+)"),
    # submit_coredump(): the journal message; the stack trace follows on the next lines (v239..v257)
    P("systemd-coredump", "handler-stored", _PROC + r"dumped core\.", _SD + " submit_coredump()"),
    P("systemd-coredump", "handler-refused", _PROC + r"terminated abnormally without generating a coredump\.",
      _SD + " submit_coredump()", gate="handler-policy"),
    # save_external_coredump(): RLIMIT_CORE (%c) below a page
    P("systemd-coredump", "handler-refused", r"^Resource limits disable core dumping for process (?P<pid>\d+) "
      r"\((?P<comm>.*)\)\.", _SD + " save_external_coredump()", gate="rlimit-core"),
    P("systemd-coredump", "handler-truncated", r"^Core file was truncated to (?P<size>\d+) bytes\.",
      _SD + " save_external_coredump() (SD_MESSAGE_TRUNCATED_CORE)"),
    # ExternalSizeMax= / JournalSizeMax=
    P("systemd-coredump", "handler-refused", r"^The core will not be stored: size (?P<size>\d+) is greater than "
      r"(?P<max>\d+) \(the configured maximum\)", _SD + " submit_coredump()", gate="handler-policy"),
    P("systemd-coredump", "handler-refused", r"^Cannot store coredump of (?P<pid>\d+) \((?P<comm>.*)\): (?P<detail>.*)",
      _SD + " save_external_coredump()", gate="handler-policy"),
    # send_iovec(): systemd-coredump.socket not listening
    P("systemd-coredump", "handler-refused", r"^Failed to connect to coredump service: (?P<detail>.*)",
      _SD + " send_iovec()", gate="handler-policy"),
    # apport: LOG_FORMAT "%(levelname)s: apport (pid %(process)s) %(asctime)s: %(message)s" (apport.log)
    P("apport", "handler-called", r"^called for (?:global )?pid (?P<pid>\d+), signal (?P<signo>\d+), "
      r"core limit (?P<limit>-?\d+), dump mode (?P<mode>\d+)", _AP + " process_crash_from_kernel_with_proc_pid()"),
    P("apport", "handler-exe", r"^(?:executable|script): (?P<exe>.+?)(?:, interpreted by .*)? \(command line ",
      _AP + " process_crash()"),
    P("apport", "handler-stored", r"^wrote report (?P<path>\S+)", _AP + " process_crash()"),
    P("apport", "handler-stored", r"^writing core dump (?:to )?(?P<path>\S+) (?:\(limit: (?P<limit>-?\d+)\)|of size "
      r"(?P<size>\d+))", _AP + " write_user_coredump()"),
    P("apport", "handler-refused", r"^aborting core dump writing, size (?:.*)exceeds current limit",
      _AP + " write_user_coredump()", gate="rlimit-core"),
    P("apport", "handler-refused", r"^(?P<detail>Ignoring signal (?P<signo>\d+) \(caused by exceeding soft RLIMIT\))",
      _AP + " process_crash()", gate="handler-policy"),
    P("apport", "handler-refused", r"^(?P<detail>not creating core for pid with dump mode of (?P<mode>\d+))",
      _AP + " (2.20: suid_dumpable=2 crashes)", gate="handler-policy"),
    P("apport", "handler-refused", r"^(?P<detail>core dump exceeded \d+ MiB, dropped to avoid memory overflow)",
      _AP + " process_crash_from_kernel_with_proc_pid()", gate="handler-policy"),
    P("apport", "handler-refused", r"^(?P<detail>\S+ not found\. Cannot collect crash information for process "
      r"(?P<pid>\d+) any more\.)", _AP + " process_crash_from_kernel()", gate="handler-policy"),
    P("apport", "handler-refused", r"^(?P<detail>The process (?P<pid>\d+) has already been replaced by a new process)",
      _AP + " process_crash_from_kernel()", gate="handler-policy"),
    P("apport", "handler-refused", r"^(?P<detail>host pid (?P<pid>\d+) crashed in a container without apport support)",
      _AP + " forward_crash_to_container()", gate="handler-policy"),
    P("apport", "handler-refused", r"^(?P<detail>Ignoring systemd watchdog restart)", _AP + " (LP: #1433320)",
      gate="handler-policy"),
    # every other refusal ends so: "executable does not belong to a package, ignoring", "this executable
    # already crashed 2 times, ignoring", "happens for shutting down session, ignoring", ...
    P("apport", "handler-refused", r"^(?P<detail>.+?), ignoring$", _AP + " process_crash() and others",
      gate="handler-policy"),
)

# Supervisors: the parent that reaps a crashed child logs how it died, whatever the kernel log
# says (arm64's debug.exception-trace=0 prints nothing). Event ``supervisor-exit``: ``pid`` the
# child, ``signo``/``signal``, ``dumped`` True when the line says the kernel dumped core
# (WCOREDUMP), False when the program would say so and did not, None when it never says.
_SUP = "supervisor-exit"
SUPERVISORS = (
    # Open vSwitch monitor_daemon() lib/daemon-unix.c: "%d crashes: pid %lu died, %s, restarting",
    # process_status_msg() lib/process.c: "killed (%s)" (strsignal) + ", core dumped" if WCOREDUMP;
    # in syslog as vlog's "ovs|%05N|%c%T|%p|%m", in the log file "%D{%Y-%m-%dT%H:%M:%S.###Z}|..."
    P("ovs-vswitchd", _SUP, r"daemon_unix\(monitor\)\|[A-Z]+\|(?:\d+ crashes: )?pid (?P<pid>\d+) died, "
      r"killed \((?P<sigdesc>[^)]{1,40})\)(?P<core>, core dumped)?", "monitor_daemon() openvswitch lib/daemon-unix.c",
      dumped=False),
    P("ovsdb-server", _SUP, r"daemon_unix\(monitor\)\|[A-Z]+\|(?:\d+ crashes: )?pid (?P<pid>\d+) died, "
      r"killed \((?P<sigdesc>[^)]{1,40})\)(?P<core>, core dumped)?", "monitor_daemon() openvswitch lib/daemon-unix.c",
      dumped=False),
    # nginx ngx_process_get_status() src/os/unix/ngx_process.c: "%s %P exited on signal %d%s",
    # " (core dumped)" if WCOREDUMP; %s "worker process", "cache manager process", ...
    P("nginx", _SUP, r"\[alert\] \d+#\d+: (?:\*\d+ )?(?P<what>[a-z ]{1,40}process) (?P<pid>\d+) exited on signal "
      r"(?P<signo>\d+)(?P<core> \(core dumped\))?", "ngx_process_get_status() nginx src/os/unix/ngx_process.c",
      dumped=False),
    # Apache httpd ap_process_child_status() server/mpm_common.c: AH00051 "child pid %ld exit signal %s
    # (%d), possible coredump in %s" (WCOREDUMP), AH00052 "child pid %ld exit signal %s (%d)"
    P("httpd", _SUP, r"AH0005[12]: child pid (?P<pid>\d+) exit signal (?P<sigdesc>[^(]{1,40}?) \((?P<signo>\d+)\)"
      r"(?P<core>, possible coredump in (?P<path>.*))?", "ap_process_child_status() httpd server/mpm_common.c",
      dumped=False),
    # PostgreSQL LogChildExit() src/backend/postmaster/postmaster.c: "%s (PID %d) was terminated by
    # signal %d: %s" (no word of a core)
    P("postgres", _SUP, r"(?P<what>[a-z][a-z \"\w]{0,60}) \(PID (?P<pid>\d+)\) was terminated by signal "
      r"(?P<signo>\d+)", "LogChildExit() postgresql src/backend/postmaster/postmaster.c"),
    # php-fpm fpm_children_bury() sapi/fpm/fpm/fpm_children.c: "[pool %s] child %d exited on signal %d
    # (%s%s) after ..." with " - core dumped" if WCOREDUMP
    P("php-fpm", _SUP, r"\[pool (?P<pool>[^\]]{1,64})\] child (?P<pid>\d+) exited on signal (?P<signo>\d+) "
      r"\((?P<signame>SIG[A-Z0-9]+)?(?P<core> - core dumped)?\)", "fpm_children_bury() php-src "
      "sapi/fpm/fpm/fpm_children.c", dumped=False),
    # supervisord Subprocess.finish() supervisor/process.py: "exited: %s (%s; not expected)" with
    # decode_wait_status() supervisor/options.py "terminated by %s" + " (core dumped)"; no pid (the
    # earlier "spawned: '%s' with pid %s" line names it, see supervisors.read)
    P("supervisord", _SUP, r"exited: (?P<comm>\S{1,64}) \(terminated by (?P<signame>SIG[A-Z0-9]+)"
      r"(?P<core> \(core dumped\))?; not expected\)", "Subprocess.finish() supervisor/process.py", dumped=False),
    P("supervisord", "supervisor-spawned", r"spawned: '(?P<comm>[^']{1,64})' with pid (?P<pid>\d+)",
      "Subprocess.spawn() supervisor/process.py"),
)
PATTERNS = PATTERNS + SUPERVISORS  # type: ignore[assignment]  # (a longer tuple of the same rows)

#: strsignal() descriptions (glibc) as OVS and httpd print them -> the signal
_SIGDESC = {"Segmentation fault": "SIGSEGV", "Aborted": "SIGABRT", "Bus error": "SIGBUS",
            "Illegal instruction": "SIGILL", "Floating point exception": "SIGFPE", "Quit": "SIGQUIT",
            "Trace/breakpoint trap": "SIGTRAP", "Bad system call": "SIGSYS", "CPU time limit exceeded": "SIGXCPU",
            "File size limit exceeded": "SIGXFSZ", "IOT trap": "SIGABRT", "EMT trap": "SIGEMT"}
#: idents a supervisor logs under besides its row's (Debian's apache2, php-fpm8.2, postgresql)
_IDENT_ALIASES = {"apache2": "httpd", "postgresql": "postgres", "postmaster": "postgres"}

#: the idents (syslog tag / SYSLOG_IDENTIFIER) whose messages parse_message() classifies
IDENTS = tuple(sorted({p.ident for p in PATTERNS if p not in SUPERVISORS}))
#: the idents of the supervisors' rows
SUPERVISOR_IDENTS = tuple(sorted({p.ident for p in SUPERVISORS}))

_BY_IDENT = {i: tuple(p for p in PATTERNS if p.ident == i) for i in IDENTS + SUPERVISOR_IDENTS}

# the first line of a message: systemd-coredump appends the stack trace after "\n\n"; rsyslog
# escapes control characters as "#012" (octal) in files
_FIRST_LINE = re.compile(r"\n|#012")
#: the longest first line classified: apport's "executable: ... (command line ...)" holds the
#: crashed process's argv; more than this is not read (the patterns' lazy groups would take long)
MAX_FIRST_LINE = 16 << 10
#: the digits each number field may have (see coredoctor.history.DIGITS)
_KIND = {"uid": "uid", "size": "u64", "max": "u64", "limit": "u64", "mode": "mode"}


def _ident_family(ident: Optional[str]) -> Optional[str]:
    if not ident:
        return None
    ident = ident.rsplit("/", 1)[-1]
    if ident in _BY_IDENT:
        return ident
    if ident.startswith("systemd-coredump"):  # "systemd-coredump@0-1234-0.service" as a unit name
        return "systemd-coredump"
    if ident in _IDENT_ALIASES:
        return _IDENT_ALIASES[ident]
    if ident.startswith("php-fpm"):  # php-fpm8.2, php-fpm7.4
        return "php-fpm"
    return None


def parse_message(ident: "str | None", pid: "int | str | None", message: str, when: "float | None" = None,
                  source: str = "syslog") -> "Event | None":
    """Classify one user-space log message (without the syslog prefix). ``ident`` is the syslog tag
    (``systemd``, ``systemd-coredump``, ``apport``), ``pid`` the logging process's pid (kept as
    ``hpid``), ``when`` seconds since the epoch or None. Returns an Event or None."""
    fam = _ident_family(ident)
    if fam is None or not message:
        return None
    parts = _FIRST_LINE.split(message, 1)
    first = parts[0].rstrip("\r")
    if len(first) > MAX_FIRST_LINE:
        raise BadRecord(source, f"a {fam} line of {len(first)} characters (at most {MAX_FIRST_LINE} are read)")
    for p in _BY_IDENT[fam]:
        m = p.regex.search(first)
        if not m:
            continue
        g = m.groupdict()
        signame = g.get("signame")
        if p.event == _SUP:
            return _supervisor_event(p, g, fam, pid, first, when, source)
        if p.event == "supervisor-spawned":
            return Event(event=p.event, pid=number(g["pid"], "pid", source), comm=g.get("comm"), gate=None, signal=None,
                         signo=None, source=source, ref=p.source, line=first, time=finite_time(when, source),
                         unit=None, dumped=None, ident=fam,
                         hpid=number(pid, "pid", source, "the logger's pid") if isinstance(pid, str) and pid else pid)
        if p.event == "unit-result":
            if signame is not None and signame not in _CORE_SIGNALS:
                return None  # code=killed status=15/TERM: a stop, not a crash
            dumped = g.get("code") == "dumped" or g.get("result") == "core-dump"
        else:
            dumped = None
        if isinstance(pid, str):
            pid = number(pid, "pid", source, "the logger's pid") if pid else None
        e = Event(event=p.event, pid=number(g["pid"], "pid", source) if g.get("pid") else None, comm=g.get("comm"),
                  gate=p.gate, signal="SIG" + signame if signame else None,
                  signo=number(g["signo"], "signo", source) if g.get("signo") else None,
                  source=source, ref=p.source, line=first, time=finite_time(when, source), unit=g.get("unit"),
                  dumped=dumped, ident=fam, hpid=pid)
        if fam == "systemd" and p.event == "unit-result":
            e["hpid"] = None  # the manager's pid, not the crashed process's
        for k in ("uid", "size", "max", "limit", "mode"):
            if g.get(k) is not None:
                e[k] = signed(g[k], _KIND[k], source, k)
        for k in ("exe", "path", "detail", "result", "code"):
            if g.get(k):
                e[k] = g[k]
        if fam == "systemd-coredump" and p.event == "handler-stored" and len(parts) > 1:
            stack = [ln.strip() for ln in _FIRST_LINE.split(parts[1]) if ln.strip()]
            if stack:
                e["stack"] = stack
        if e["signal"] is None and e["signo"] is not None:
            try:  # apport logs only the number: name it as this host's architecture does
                e["signal"] = _signal.Signals(e["signo"]).name
            except ValueError:
                pass
        if e["gate"] == "handler-policy" and "No space left on device" in (g.get("detail") or ""):
            e["gate"] = "space"
        return e
    return None


def _supervisor_event(p: P, g: Dict[str, Any], fam: str, hpid: "int | str | None", first: str,
                      when: "float | None", source: str) -> "Event | None":
    """A supervisor's line about a child's death (SUPERVISORS), or None when the signal is not one
    that dumps core (a stop by SIGTERM is no crash)."""
    signo = number(g["signo"], "signo", source) if g.get("signo") else None
    sig = g.get("signame") or _SIGDESC.get((g.get("sigdesc") or "").strip())
    if sig is None and signo is not None:
        try:
            sig = _signal.Signals(signo).name  # the number as this host's architecture names it
        except ValueError:
            sig = None
    if sig is None or sig[3:] not in _CORE_SIGNALS:
        return None
    if isinstance(hpid, str):
        hpid = number(hpid, "pid", source, "the logger's pid") if hpid else None
    dumped = bool(g.get("core")) if p.dumped is not None else None  # rows that would say "core dumped"
    e = Event(event=_SUP, pid=number(g["pid"], "pid", source) if g.get("pid") else None, comm=g.get("comm"),
              gate=None, signal=sig, signo=signo, source=source, ref=p.source, line=first,
              time=finite_time(when, source), unit=None, dumped=dumped, ident=fam, hpid=hpid)
    if g.get("path"):
        e["path"] = g["path"]
    return e


_TAGGED = re.compile(r"^(?P<ident>[^\s\[:]+)(?:\[(?P<pid>[0-9]+)\])?: (?P<msg>.*)$", re.S | re.ASCII)


def parse_tagged(text: str, when: "float | None" = None, source: str = "kmsg") -> "Event | None":
    """Classify a record that carries its own ``ident[pid]: `` tag: what user space writes to
    /dev/kmsg when there is no journal (systemd-coredump logs "systemd-coredump[N]: Resource limits
    disable core dumping ..." there), and what syslog daemons then write as kernel lines."""
    m = _TAGGED.match(text)
    if not m or _ident_family(m.group("ident")) is None:
        return None
    e = parse_message(m.group("ident"), m.group("pid"), m.group("msg"), when, source=source)
    if e is not None:
        e["line"] = _FIRST_LINE.split(text, 1)[0].rstrip("\r")
    return e


# "ERROR: apport (pid 17768) Thu Apr 27 03:08:58 2023: called for pid 17767, ..." (asctime as
# time.ctime() in apport 2.20) or "INFO: apport (pid 64872) 2024-08-18 17:28:39,123: ..." (logging's
# default asctime, apport 2.27+)
_APPORT_LINE = re.compile(r"^(?:(?P<level>[A-Z]+): )?apport \(pid (?P<hpid>[0-9]+)\) (?P<when>.+?): (?P<msg>.*)$",
                          re.ASCII)


def _apport_time(text: str) -> Optional[float]:
    base, _, frac = text.partition(",")
    if len(base) > 64:
        return None
    for fmt in ("%a %b %d %H:%M:%S %Y", "%Y-%m-%d %H:%M:%S"):
        try:
            t = time.mktime(time.strptime(base.strip(), fmt))
        except (ValueError, OverflowError):
            continue
        ok = frac.isascii() and frac.isdigit() and len(frac) <= 6  # logging's msecs: 3 digits
        return t + (int(frac) / 10 ** len(frac) if ok else 0.0)
    return None


def parse_apport_line(line: str, source: str = "apport.log") -> "Event | None":
    """Classify one line of /var/log/apport.log (local time, as apport writes it)."""
    if len(line) > MAX_FIRST_LINE:
        raise BadRecord(source, f"an apport.log line of {len(line)} characters (at most {MAX_FIRST_LINE} are read)")
    m = _APPORT_LINE.match(line.rstrip("\n"))
    if not m:
        return None
    e = parse_message("apport", m.group("hpid"), m.group("msg"), _apport_time(m.group("when")), source=source)
    if e is not None:
        e["line"] = line.rstrip("\n")
    return e


def link(events: Iterable[Event]) -> List[Event]:
    """Fill in the crashed pid (and comm, signal) of handler lines that do not name them --
    systemd-coredump's "Core file was truncated" and "dumped core." (no signal), apport's
    "..., ignoring" -- from the earlier line of the same handler process (same ident and hpid).
    Events are changed in place and returned, in order."""
    return list(linked(events))


def linked(events: Iterable[Event]) -> Iterator[Event]:
    """:func:`link` for a stream of events (a generator: constant memory per handler process)."""
    last: Dict[Tuple[Any, Any], Event] = {}
    spawned: Dict[Tuple[Any, Any], Any] = {}  # supervisord: (ident, program) -> the pid it spawned
    for e in events:
        if e.get("event") == "supervisor-spawned":
            # a start, not a crash (crashes.correlate leaves it out): it names a later "exited:" line's pid
            spawned[(e.get("ident"), e.get("comm"))] = e.get("pid")
        if e.get("event") == "supervisor-exit" and e.get("pid") is None:
            e["pid"] = spawned.pop((e.get("ident"), e.get("comm")), None)
        key = (e.get("ident"), e.get("hpid"))
        if key[1] is not None and str(e.get("event", "")).startswith("handler-"):
            prev = last.get(key)
            if e.get("pid") is not None:
                if prev is not None and prev["pid"] == e["pid"] and e.get("signo") is None:
                    e["signo"], e["signal"] = prev.get("signo"), prev.get("signal")
                last[key] = e
            elif prev is not None:
                e["pid"] = prev["pid"]
                if not e.get("comm"):
                    e["comm"] = prev.get("comm")
                if e.get("signo") is None and prev.get("signo") is not None:
                    e["signo"], e["signal"] = prev["signo"], prev.get("signal")
        yield e
