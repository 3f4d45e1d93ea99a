"""
Watch entries
-------------
Pure: what ``coredoctor watch`` logs for each record of the tracker
(:mod:`coredoctor.trace.transitions`), and how it is framed -- a structured journal entry in
systemd's native protocol, or one RFC 3164 syslog line -- plus the journal catalog of every
event kind.

Every event kind has a MESSAGE_ID, a 128-bit id generated once and frozen here (``journalctl
MESSAGE_ID=...`` finds them on every host, the catalog explains them); never change one, add
a new kind instead. Fields are ``COREDOCTOR_*`` (upper case, digits, underscores: the journal's
rule for field names) and hold values from the kernel and from processes (names, paths): the
native protocol carries any bytes (a value with a newline goes in its length-prefixed form);
the syslog line and every MESSAGE text escape them (:func:`coredoctor.render.safe.escape`).
Sources: systemd's docs/JOURNAL_NATIVE_PROTOCOL.md (framing), docs/CATALOG.md and
catalog/systemd.catalog.in (catalog format), RFC 3164 section 4.1 (the syslog line),
glibc misc/syslog.c (``<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG``, as local daemons send to /dev/log).
"""

from __future__ import annotations

import struct
import time

from coredoctor.render.safe import escape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

__all__ = ["KINDS", "Entry", "classify", "is_loss", "notice", "native", "syslog_line", "catalog",
           "SERVICE_SUFFIX", "IDENTIFIER"]

IDENTIFIER = "coredoctor"
SERVICE_SUFFIX = ".service"
#: a value longer than this is cut (a process can put anything in its name, path or argv)
MAX_VALUE = 4096

#: kind -> (MESSAGE_ID, syslog/journal PRIORITY, Subject, catalog text). Frozen ids.
KINDS: "Dict[str, Tuple[str, int, str, str]]" = {
    "dumpability-lost": (
        "f1fb545531a841f89301dd2fac44b6cf", 4,
        "A process of @COREDOCTOR_UNIT@ lost its dumpable flag: its next crash leaves no core",
        "Process @COREDOCTOR_PID@ (@COREDOCTOR_COMM@) of @COREDOCTOR_UNIT@ changed its dumpable flag\n"
        "from @COREDOCTOR_DUMPABLE_BEFORE@ to @COREDOCTOR_DUMPABLE_AFTER@ by @COREDOCTOR_CAUSE@\n"
        "(@COREDOCTOR_SYSCALL@): @COREDOCTOR_WHY@\n"
        "\n"
        "With dumpable 0 the kernel writes no core when the process crashes; with 2 only a core\n"
        "owned by root, and only when kernel.core_pattern is an absolute path or a pipe\n"
        "(fs.suid_dumpable). The usual causes are a daemon dropping privileges (setuid/setgid\n"
        "to its service user), the exec of a set-id or file-capability binary, and\n"
        "prctl(PR_SET_DUMPABLE, 0).\n"
        "\n"
        "\"coredoctor check --unit @COREDOCTOR_UNIT@\" names the gate and the smallest change that\n"
        "lets the next crash leave a core (for a privilege drop: the daemon's own switch, or\n"
        "prctl(PR_SET_DUMPABLE, 1) after the drop, or fs.suid_dumpable=2 with an absolute\n"
        "core_pattern)."),
    "crash-core": (
        "3fbf5352ddbb4bb4bb39f7a9c4c8782e", 5,
        "@COREDOCTOR_COMM@ crashed (@COREDOCTOR_SIGNAL@) and the kernel wrote a core",
        "Process @COREDOCTOR_PID@ (@COREDOCTOR_COMM@) of @COREDOCTOR_UNIT@ died of\n"
        "@COREDOCTOR_SIGNAL@ and the kernel dumped its core (the wait status has the core flag).\n"
        "coredoctor predicted: @COREDOCTOR_PREDICTED@ (@COREDOCTOR_VERDICT@).\n"
        "\n"
        "The core went where kernel.core_pattern says (@COREDOCTOR_DESTINATION@);\n"
        "\"coredoctor crashes\" shows where it is now."),
    "crash-no-core": (
        "1933e3de10074e6994a1818ec49a6add", 3,
        "@COREDOCTOR_COMM@ crashed (@COREDOCTOR_SIGNAL@) and left no core: @COREDOCTOR_GATE@",
        "Process @COREDOCTOR_PID@ (@COREDOCTOR_COMM@) of @COREDOCTOR_UNIT@ died of\n"
        "@COREDOCTOR_SIGNAL@, a signal whose default action dumps core, and the kernel wrote no\n"
        "core (the wait status has no core flag).\n"
        "\n"
        "coredoctor's gate model, from the last reading of the process before the signal, names\n"
        "the gate that blocked: @COREDOCTOR_GATE@ -- @COREDOCTOR_VERDICT@\n"
        "\n"
        "\"coredoctor check --unit @COREDOCTOR_UNIT@\" (while the service runs again) says what to\n"
        "change; \"coredoctor fix\" plans and applies it."),
    "crash-outcome-unknown": (
        "a33e74cef78140bab8356929cd16dc71", 4,
        "@COREDOCTOR_COMM@ got the fatal @COREDOCTOR_SIGNAL@; whether a core was written is unknown",
        "Process @COREDOCTOR_PID@ (@COREDOCTOR_COMM@) got @COREDOCTOR_SIGNAL@, a signal whose\n"
        "default action dumps core, but its exit status could not be read: the process was not\n"
        "coredoctor's child, the kernel offers no PIDFD_INFO_EXIT (before 6.15), and it was reaped\n"
        "before /proc could be read. coredoctor predicted: @COREDOCTOR_PREDICTED@\n"
        "(@COREDOCTOR_VERDICT@)."),
    "killed": (
        "bf439e64b1874ac09f2dbee0cb9e40c7", 6,
        "@COREDOCTOR_COMM@ was ended by @COREDOCTOR_SIGNAL@ (a signal that dumps no core)",
        "Process @COREDOCTOR_PID@ (@COREDOCTOR_COMM@) of @COREDOCTOR_UNIT@ died of\n"
        "@COREDOCTOR_SIGNAL@, whose default action ends the process without a core (SIGKILL,\n"
        "SIGTERM, SIGINT, SIGHUP, ...). No core was to be expected."),
    "watch-started": (
        "d45ab48c86d240dda4dba0f53d8866d3", 6,
        "coredoctor watch started",
        "coredoctor watch follows, host-wide, every change of a process's dumpable flag and every\n"
        "fatal signal, through a private tracefs instance (@COREDOCTOR_INSTANCE@). It logs each\n"
        "loss of dumpability by a service or container process and each fatal signal, with\n"
        "coredoctor's prediction and what the kernel did."),
    "watch-stopped": (
        "37c0befb9fb74ec6a1e94375c1fde3b4", 6,
        "coredoctor watch stopped",
        "coredoctor watch stopped (@COREDOCTOR_REASON@) and removed its tracefs instance.\n"
        "Events it saw: @COREDOCTOR_EVENTS@; events the kernel's ring buffer lost:\n"
        "@COREDOCTOR_LOST@."),
    "watch-notice": (
        "4274684a7abb47cea3ab5277494e83bf", 5,
        "coredoctor watch: @COREDOCTOR_NOTICE@",
        "Something coredoctor watch has to say about what it can see: an event this kernel does\n"
        "not offer (what it would have shown is then unknown), events the kernel's ring buffer\n"
        "lost, or a reload (SIGHUP) of its configuration."),
}


class Entry(dict):
    """One log entry: ``kind``, ``message`` (one line, escaped), ``fields`` (name -> str)."""


def _s(v: "Any") -> str:
    if v is None:
        return "unknown"
    if v is True:
        return "yes"
    if v is False:
        return "no"
    s = v if isinstance(v, str) else str(v)
    return s if len(s) <= MAX_VALUE else s[:MAX_VALUE - 3] + "..."


def _yn(v: "Any") -> str:
    return "unknown" if v is None else "yes" if v else "no"


def is_loss(r: "Dict[str, Any]") -> bool:
    """A dumpable-change record that took the flag off 1 (SUID_DUMP_USER) -- to 0 or 2 -- as the
    kernel confirmed it (a confirmation that disagrees gives the kernel's value)."""
    if r.get("event") != "dumpable-change":
        return False
    after = r.get("after")
    conf = r.get("confirmed") or {}
    if conf.get("agrees") is False and conf.get("value") is not None:
        after = conf["value"]
    if after not in (0, 2):
        return False
    before = r.get("before")
    if before is None:
        return 1 in (r.get("before_candidates") or [])
    return before == 1


def _verdict(r: "Dict[str, Any]") -> "Tuple[str, str, str]":
    pr = r.get("prediction") or {}
    p = r.get("predicted")
    predicted = "core" if p is True else "no_core" if p is False else "undecided"
    gate = pr.get("blocking_gate") or ("none" if p is True else "unknown")
    return predicted, str(gate), _s(pr.get("verdict") or "no prediction")


def classify(r: "Dict[str, Any]", unit: "Optional[str]", container: str,
             all_processes: bool = False) -> "Optional[Entry]":
    """The entry for a tracker record, or None: losses of dumpability by a service or container
    process, every fatal signal whose default action dumps core, and the other fatal signals
    (SIGKILL, SIGTERM, ...) of service or container processes; *all_processes*: any process's."""
    ev = r.get("event")
    service = bool(unit and unit.endswith(SERVICE_SUFFIX)) or bool(container)
    who = unit or (f"container {container}" if container else "no service")
    base = {"COREDOCTOR_PID": _s(r.get("pid")), "COREDOCTOR_TID": _s(r.get("tid") or r.get("pid")),
            "COREDOCTOR_COMM": _s(r.get("comm")), "COREDOCTOR_UNIT": _s(unit or ""),
            "COREDOCTOR_CONTAINER": _s(container), "COREDOCTOR_EVENT_TIME": _s(r.get("time"))}
    comm = escape(_s(r.get("comm")))
    if ev == "dumpable-change":
        if not is_loss(r) or not (service or all_processes):
            return None
        conf = r.get("confirmed") or {}
        after = r.get("after")
        if conf.get("agrees") is False and conf.get("value") is not None:
            after = conf["value"]
        cb, ca = r.get("creds_before") or {}, r.get("creds_after") or {}
        rule = r.get("rule") or {}
        f = dict(base, COREDOCTOR_CAUSE=_s(r.get("cause")), COREDOCTOR_SYSCALL=_s(r.get("syscall")),
                 COREDOCTOR_ARGS=_s(" ".join(map(str, r.get("args") or []))),
                 COREDOCTOR_RULE=_s(rule.get("id")), COREDOCTOR_RULE_SOURCE=_s(rule.get("file")),
                 COREDOCTOR_WHY=_s(r.get("why")),
                 COREDOCTOR_DUMPABLE_BEFORE=_s(r.get("before")), COREDOCTOR_DUMPABLE_AFTER=_s(after),
                 COREDOCTOR_SUID_DUMPABLE=_s(r.get("suid_dumpable")),
                 COREDOCTOR_UID_BEFORE=_s(" ".join(map(str, cb.get("uid") or []))),
                 COREDOCTOR_UID_AFTER=_s(" ".join(map(str, ca.get("uid") or []))),
                 COREDOCTOR_GID_AFTER=_s(" ".join(map(str, ca.get("gid") or []))),
                 COREDOCTOR_CONFIRMED=_yn(conf.get("agrees")),
                 COREDOCTOR_CONFIRMED_BY=_s(conf.get("source")),
                 COREDOCTOR_GATE="dumpable")
        msg = (f"{comm}[{r.get('pid')}] of {escape(who)} lost its dumpable flag "
               f"({_s(r.get('before'))} -> {_s(after)}) by {escape(_s(r.get('syscall')))}: "
               f"{escape(_s(r.get('why')))}")
        return _entry("dumpability-lost", msg, f)
    if ev == "fatal-signal":
        predicted, gate, verdict = _verdict(r)
        dumped = r.get("dumped")
        if not r.get("dumps_by_default"):
            if not (service or all_processes):  # kill -9 of any process of the host: too common
                return None
            kind = "killed"
        elif dumped is True:
            kind = "crash-core"
        elif dumped is False:
            kind = "crash-no-core"
        else:
            kind = "crash-outcome-unknown"
        f = dict(base, COREDOCTOR_SIGNAL=_s(r.get("signal")), COREDOCTOR_SIGNO=_s(r.get("signo")),
                 COREDOCTOR_HOW=_s(r.get("how")), COREDOCTOR_PREDICTED=predicted, COREDOCTOR_GATE=gate,
                 COREDOCTOR_VERDICT=verdict, COREDOCTOR_DUMPED=_yn(dumped),
                 COREDOCTOR_EXIT_STATUS=_s(r.get("exit_status")),
                 COREDOCTOR_OUTCOME_SOURCE=_s(r.get("outcome_source")),
                 COREDOCTOR_AGREES=_yn(r.get("agrees")), COREDOCTOR_DESTINATION=_s(r.get("destination")),
                 COREDOCTOR_DUMPABLE=_s(r.get("dumpable")))
        outcome = {"crash-core": "core dumped", "crash-no-core": "no core",
                   "crash-outcome-unknown": "outcome unknown", "killed": "killed"}[kind]
        msg = (f"{comm}[{r.get('pid')}] of {escape(who)} died of {_s(r.get('signal'))}: {outcome}; "
               f"predicted {predicted} (gate {escape(gate)})")
        if r.get("agrees") is False:
            msg += " -- the prediction was wrong"
        return _entry(kind, msg, f)
    return None


def notice(kind: str, message: str, **fields: "Any") -> Entry:
    """A watch-started / watch-stopped / watch-notice entry."""
    f = {f"COREDOCTOR_{k.upper()}": _s(v) for k, v in fields.items()}
    if kind == "watch-notice":
        f.setdefault("COREDOCTOR_NOTICE", _s(message))
    return _entry(kind, escape(message), f)


def _entry(kind: str, message: str, fields: "Dict[str, str]") -> Entry:
    mid, prio = KINDS[kind][0], KINDS[kind][1]
    return Entry(kind=kind, message=message, priority=prio, message_id=mid,
                 fields=dict(fields, COREDOCTOR_EVENT=kind))


def native(e: "Dict[str, Any]") -> bytes:
    """The entry in the journal's native protocol: ``KEY=value\\n``, or for a value holding a
    newline ``KEY\\n`` + its length (64-bit little endian) + the value + ``\\n``."""
    pairs: "List[Tuple[str, str]]" = [("MESSAGE", e["message"]), ("MESSAGE_ID", e["message_id"]),
                                      ("PRIORITY", str(e["priority"])), ("SYSLOG_IDENTIFIER", IDENTIFIER),
                                      ("SYSLOG_FACILITY", "3")]
    pairs += sorted(e["fields"].items())
    out = []
    for k, v in pairs:
        b = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)
        if b"\n" in b:
            out.append(k.encode() + b"\n" + struct.pack("<Q", len(b)) + b + b"\n")
        else:
            out.append(k.encode() + b"=" + b + b"\n")
    return b"".join(out)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: the fields a syslog line carries after the message (a reader greps key=value)
SYSLOG_KEYS = ("COREDOCTOR_EVENT", "COREDOCTOR_PID", "COREDOCTOR_UNIT", "COREDOCTOR_CONTAINER",
               "COREDOCTOR_SIGNAL", "COREDOCTOR_PREDICTED", "COREDOCTOR_GATE", "COREDOCTOR_DUMPED",
               "COREDOCTOR_CAUSE", "COREDOCTOR_SYSCALL", "COREDOCTOR_DUMPABLE_AFTER")
FACILITY_DAEMON = 3


def syslog_line(e: "Dict[str, Any]", pid: int, now: "Optional[float]" = None) -> bytes:
    """``<PRI>Mmm dd hh:mm:ss coredoctor[PID]: MESSAGE_ID=... key=value... -- MESSAGE`` -- facility
    daemon, the entry's severity, local time; one line (everything escaped), at most 8 KiB."""
    t = time.localtime(now if now is not None else time.time())
    stamp = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    kv = " ".join(f"{k[len('COREDOCTOR_'):].lower()}={_kv(e['fields'][k])}" for k in SYSLOG_KEYS
                  if k in e["fields"])
    # the id and the fields first, the message (which quotes process names) last: a name that
    # holds "MESSAGE_ID=" cannot come before the real one
    line = (f"<{FACILITY_DAEMON * 8 + int(e['priority'])}>{stamp} {IDENTIFIER}[{pid}]: "
            f"MESSAGE_ID={e['message_id']} {kv} -- {escape(e['message'])}")
    b = line.encode("utf-8", "backslashreplace")
    return b[:8192]


def _kv(v: str) -> str:
    v = escape(v)
    return '"' + v.replace('"', '\\"') + '"' if (" " in v or '"' in v or not v) else v


def catalog() -> str:
    """The journal catalog (``journalctl --update-catalog`` format) of every kind: the text of
    contrib/systemd/coredoctor.catalog (tests compare the file with this)."""
    out = ["# coredoctor watch: the journal catalog of its entries (journalctl -x / --catalog).",
           "# Generated from src/coredoctor/watch/entries.py KINDS; installed to",
           "# /usr/lib/systemd/catalog/, then 'journalctl --update-catalog'.", ""]
    for kind, (mid, _prio, subject, text) in KINDS.items():
        out += [f"-- {mid}", f"Subject: {subject}", "Defined-By: coredoctor",
                "Documentation: man:coredoctor-watch(8)", "Support: https://coredoctor.example.org/", "", text, ""]
    return "\n".join(out)
