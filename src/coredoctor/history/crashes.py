"""
Crashes that already happened
-----------------------------
Correlate the traces a crash leaves into one record per crash, find out whether its core
survived, and if not, why. This first version reads the kernel log (:mod:`.kmsg`), file-mode
cores (by expanding today's core_pattern for the crashed pid) and systemd-coredump's store;
journal, syslog, audit.log and apport sources are still to come.

Core status: ``present`` (an ELF core of that pid, or a handler's stored core), ``truncated``
(an ELF core without its notes), ``empty`` (a 0-byte file: a late failure), ``missing``, or
``unknown`` when the place cannot be known (a relative pattern: the crashed process's cwd is gone).
"""

import glob
import os
import re
import time

from coredoctor import elfcore
from coredoctor.kernel import core_pattern, handlers

__all__ = ["correlate", "core_status", "parse_since"]

WINDOW = 5.0  # seconds: events of one crash


def parse_since(text, now=None):
    """'2 days ago', '90 minutes ago', '2026-11-25T01:36:00Z' -> seconds since the epoch."""
    import datetime
    now = time.time() if now is None else now
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|second|m|min|minute|h|hour|d|day|w|week)s?\s+ago\s*", text or "")
    if m:
        mult = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
                "d": 86400, "day": 86400, "w": 604800, "week": 604800}[m.group(2)]
        return now - float(m.group(1)) * mult
    try:
        t = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise ValueError(f"cannot read the time {text!r} (use e.g. '2 days ago' or 2026-11-25T01:36:00Z)")
    if t.tzinfo is None:
        t = t.astimezone()
    return t.timestamp()


def correlate(events):
    """Group classified log events into crash records (one per pid and time window); events
    without a pid (pre-6.12 pipe failures, 6.x fatal-signal lines) join the nearest record."""
    crashes = []
    by_pid = {}
    orphans = []
    for e in sorted(events, key=lambda e: (e.get("time") or 0)):
        if e["event"] == "handler" or e["pid"] is None:
            orphans.append(e)
            continue
        c = by_pid.get(e["pid"])
        if c is None or (e.get("time") and c["time"] and e["time"] - c["time"] > WINDOW):
            c = {"time": e.get("time"), "pid": e["pid"], "comm": e.get("comm"), "exe": None, "signal": None,
                 "signo": None, "sources": [], "refusals": [], "lines": []}
            by_pid[e["pid"]] = c
            crashes.append(c)
        _add(c, e)
    for e in orphans:
        near = [c for c in crashes if c["time"] and e.get("time") and abs(c["time"] - e["time"]) <= WINDOW
                and (not e.get("comm") or e["comm"] == c["comm"])]
        if near:
            _add(min(near, key=lambda c: abs(c["time"] - e["time"])), e)
    return crashes


def _add(c, e):
    src = {"fault": "kernel:fault", "fatal-signal": "kernel:fatal-signal", "audit-abend": "audit:ANOM_ABEND",
           "coredump-refused": "kernel:coredump", "handler": "kernel:handler"}[e["event"]]
    if src not in c["sources"]:
        c["sources"].append(src)
    c["signal"] = c["signal"] or e.get("signal")
    c["signo"] = c["signo"] or e.get("signo")
    c["exe"] = c["exe"] or e.get("exe")
    c["comm"] = c["comm"] or e.get("comm")
    if e.get("gate") and e["event"] in ("coredump-refused", "handler"):
        c["refusals"].append({"gate": e["gate"], "evidence": e["line"]})
    c["lines"].append(e["line"])


def core_status(crash, pattern, signals, socket_supported=False):
    """Where this crash's core would be under *pattern* (today's), and what is there."""
    parsed = core_pattern.parse(pattern, socket_supported)
    signo = crash.get("signo") or signals.get(crash.get("signal") or "", None)
    if parsed["kind"] == "pipe":
        name = handlers.identify(parsed["helper"])
        if name == "systemd-coredump":
            m = sorted(glob.glob(f"/var/lib/systemd/coredump/core.*.{crash['pid']}.*"))
            if m:
                return {"status": "present", "path": m[0], "size": os.path.getsize(m[0]), "handler": name}
            return {"status": "missing", "path": None, "size": None, "handler": name}
        return {"status": "unknown", "path": None, "size": None, "handler": name,
                "why": f"the pipe helper {parsed['helper']} keeps cores where coredoctor cannot look yet"}
    if parsed["kind"] == "socket":
        return {"status": "unknown", "path": None, "size": None, "why": "cores went to a socket server"}
    ctx = {"pid": crash["pid"], "pid_ns": crash["pid"], "comm": crash.get("comm"), "exe": crash.get("exe"),
           "signo": signo, "tid": None, "tid_ns": None}
    exp = core_pattern.expand(parsed, ctx)
    if not exp["absolute"]:
        return {"status": "unknown", "path": core_pattern.render(exp["parts"]), "size": None,
                "why": "the pattern is relative: it resolved against the crashed process's cwd"}
    path_glob = core_pattern.render(exp["parts"]).replace("*", "?*")
    for p in sorted(glob.glob(path_glob)):
        size = os.path.getsize(p)
        if size == 0:
            return {"status": "empty", "path": p, "size": 0}
        try:
            info = elfcore.read_core_info(p)
        except elfcore.NotACore as e:
            return {"status": "truncated" if "PRPSINFO" in str(e) else "unknown", "path": p, "size": size,
                    "why": str(e)}
        if info["pid"] == crash["pid"]:
            return {"status": "present", "path": p, "size": size}
    return {"status": "missing", "path": core_pattern.render(exp["parts"]), "size": None}
