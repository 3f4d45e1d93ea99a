"""
Crashes that already happened
-----------------------------
Correlate the traces one crash leaves in many places -- the kernel log (:mod:`.kmsg`), the
journal (:mod:`.journal`), classic syslog files (:mod:`.syslog`), audit.log (:mod:`.audit`),
apport (:mod:`.apport`), the stores of the core handlers -- into one record per crash. Pure:
events in, records out; :mod:`.report` does the reading and asks where the core went.

A crash is a pid and a moment: events of the same pid within :data:`WINDOW` seconds are one
crash (pids are reused, so the same pid later is another crash). The same line seen in several
places (kmsg, a syslog file, the journal) is one piece of evidence with several sources; an
audit record is the same record wherever its ``audit(TIME:SERIAL)`` appears.
"""

import re
import time

from typing import Any, Dict, Iterable, List, Optional

__all__ = ["correlate", "parse_since", "WINDOW"]

WINDOW = 5.0  # seconds: events of one crash (syslog has 1 s resolution, kmsg times are estimates)
#: what is logged only once the core has been written (a big core through a pipe takes a while):
#: the handler's verdict, its store, systemd's unit result -- these may come this much later
LATE_WINDOW = 300.0
_LATE = ("handler-stored", "handler-refused", "handler-truncated", "handler-coredump", "stored-core",
         "unit-result", "apport-report")


def parse_since(text: str, now: "float | None" = None) -> float:
    """'2 days ago', '90 minutes ago', '2026-11-25T01:36:00Z' -> seconds since the epoch. A time
    before the epoch ('99999999 days ago', year 1) is the epoch: every record is after it; one
    past the year 2242 (the last a record can carry) is that year. ValueError (one line, for the
    user) for anything else."""
    import datetime
    now = time.time() if now is None else now
    bad = ValueError(f"cannot read the time {str(text)[:40]!r} (use e.g. '2 days ago' or 2026-11-25T01:36:00Z)")
    if not isinstance(text, str) or len(text) > 64:
        raise bad
    m = re.fullmatch(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*(s|sec|second|m|min|minute|h|hour|d|day|w|week)s?\s+ago\s*",
                     text, re.ASCII)
    if m:
        mult = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
                "d": 86400, "day": 86400, "w": 604800, "week": 604800}[m.group(2)]
        return _clamp(now - float(m.group(1)) * mult, bad)
    try:
        t = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise bad from None
    if t.year < 1970:
        return 0.0
    if t.year > 2242:
        return _clamp(float("inf"), bad)
    try:
        if t.tzinfo is None:
            t = t.astimezone()
        return _clamp(t.timestamp(), bad)
    except (OverflowError, OSError, ValueError):
        raise bad from None


def _clamp(t: float, bad: Exception) -> float:
    """Within [0, MAX_TIME]: before the epoch is the epoch, after the last time a record can carry
    (the year 2242) is that time (no record is after it)."""
    from coredoctor.history import MAX_TIME
    if t != t:  # NaN
        raise bad
    return min(max(0.0, t), MAX_TIME)


def _place(source: Optional[str]) -> str:
    """'syslog:/var/log/kern.log.2.gz' -> kept as is; the kind of place is before the colon."""
    return source or "?"


def _new(e: Dict[str, Any]) -> Dict[str, Any]:
    return {"time": e.get("time"), "pid": e.get("pid"), "comm": e.get("comm"), "exe": None, "unit": None, "uid": None,
            "signal": None, "signo": None, "sources": [], "events": [], "refusals": [], "stored": [],
            "unit_result": None, "handler_truncated": None, "fault": None, "supervisor": None, "_keys": {}}


def _near(c: Dict[str, Any], e: Dict[str, Any]) -> bool:
    if c["time"] is None or e.get("time") is None:
        return True
    d = e["time"] - c["time"]
    return -WINDOW <= d <= (LATE_WINDOW if e.get("event") in _LATE else WINDOW)


def _unit_fits(c: Dict[str, Any], e: Dict[str, Any]) -> bool:
    """A unit result without a pid belongs to a crash of that unit (or whose comm names it)."""
    u = e.get("unit")
    if not u:
        return False
    if c["unit"]:
        return c["unit"] == u
    return bool(c["comm"]) and u.rsplit(".", 1)[0].startswith(c["comm"][:15])


def correlate(events: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Group classified events into crash records, oldest first.

    Each record: ``time`` (the earliest event), ``pid``, ``comm``, ``exe``, ``unit``,
    ``signal``/``signo``, ``sources`` (every place it was seen), ``events`` (one per distinct
    line: ``event``, ``line``, ``sources``, ``gate``), ``refusals`` (gate + evidence from the
    kernel or a handler), ``stored`` (cores a handler says it kept) and ``unit_result``
    (``dumped``/``killed`` from systemd).
    """
    crashes: List[Dict[str, Any]] = []
    by_pid: Dict[int, List[Dict[str, Any]]] = {}
    orphans: List[Dict[str, Any]] = []
    for e in sorted(events, key=lambda e: (e.get("time") is None, e.get("time") or 0)):
        if e.get("event") == "supervisor-spawned":
            continue  # a supervisor started a child: no crash (it only names a later exit's pid)
        if e.get("pid") is None or e.get("event") == "handler":
            orphans.append(e)
            continue
        c = next((c for c in reversed(by_pid.get(e["pid"], [])) if _near(c, e)), None)
        if c is None:
            c = _new(e)
            by_pid.setdefault(e["pid"], []).append(c)
            crashes.append(c)
        _add(c, e)
    for e in orphans:
        near = [c for c in crashes if c["time"] is not None and e.get("time") is not None
                and abs(c["time"] - e["time"]) <= WINDOW
                and (not e.get("comm") or not c["comm"] or e["comm"] == c["comm"])
                and (not e.get("unit") or not c["unit"] or e["unit"] == c["unit"])]
        if e.get("event") in _LATE and e.get("time") is not None:
            # a late line that names its unit: the latest earlier crash of that unit first
            late = [c for c in crashes if c["time"] is not None and -WINDOW <= e["time"] - c["time"] <= LATE_WINDOW
                    and _unit_fits(c, e)]
            near = late or near
        if near:
            _add(min(near, key=lambda c: abs(c["time"] - e["time"])), e)
        elif e.get("event") in ("unit-result", "fatal-signal"):
            c = _new(e)  # a crash known only by its unit result (or a pid-less fatal-signal line)
            crashes.append(c)
            _add(c, e)
    crashes.sort(key=lambda c: (c["time"] is None, c["time"] or 0))
    for c in crashes:
        del c["_keys"]
    return crashes


def _add(c: Dict[str, Any], e: Dict[str, Any]) -> None:
    src = _place(e.get("source"))
    if src not in c["sources"]:
        c["sources"].append(src)
    key = ("serial", e["serial"]) if e.get("serial") else ("line", (e.get("line") or "").strip())
    seen = c["_keys"].get(key)
    if seen is not None:  # the same line (or audit record) seen in another place
        if src not in seen["sources"]:
            seen["sources"].append(src)
        return
    ev = {"event": e.get("event"), "line": e.get("line"), "sources": [src], "gate": e.get("gate")}
    if e.get("untrusted"):  # a line a process may have written in the kernel's name
        ev["untrusted"] = e["untrusted"]
    if e.get("cgroup"):  # the crashed (or logging) process's cgroup: which container
        ev["cgroup"] = e["cgroup"]
    c["_keys"][key] = ev
    c["events"].append(ev)
    if c["time"] is None or (e.get("time") is not None and e["time"] < c["time"]):
        c["time"] = e.get("time")
    if e.get("source") == "kmsg" and isinstance(e.get("seq"), int) and not e.get("untrusted") and (
            c.get("kmsg_seq") is None or e["seq"] < c["kmsg_seq"]):
        c["kmsg_seq"] = e["seq"]  # the kernel log's own order (this boot): see sysctl_history.value_at
    if e.get("untrusted"):
        return  # evidence shown as such; it decides nothing (no refusal, store, unit result or name)
    for k in ("signal", "signo", "exe", "comm", "unit", "pid", "uid"):
        if c.get(k) is None and e.get(k) is not None:
            c[k] = e[k]
    if e.get("event") == "supervisor-exit" and c.get("supervisor") is None:
        # the parent that reaped it: "core dumped" is WCOREDUMP(status), the kernel's own verdict
        c["supervisor"] = {"program": e.get("ident"), "dumped": e.get("dumped"), "line": e.get("line"),
                           "path": e.get("path")}
    if e.get("esr") and c.get("fault") is None:  # arm64: what the exception syndrome says (history.esr)
        c["fault"] = dict(e["esr"], desc=e.get("desc"))
    if e.get("event") == "unit-result" and e.get("dumped") is not None:
        # systemd's view of the kernel's verdict: code=dumped (the kernel wrote a core, to a file or
        # the handler) or code=killed (no core at all)
        c["unit_result"] = "dumped" if e["dumped"] else "killed"
    if e.get("gate") and e.get("event") not in ("fault", "fatal-signal", "audit-abend"):
        c["refusals"].append({"gate": e["gate"], "evidence": e.get("line"), "source": src})
    if e.get("event") == "handler-truncated":
        c["handler_truncated"] = e.get("size")
    path = e.get("path") or ""
    if e.get("event") == "apport-report" and e.get("core") != "present":
        return  # a report without its core: the crash is known, no core was kept
    if e.get("event") in ("handler-coredump", "apport-report", "stored-core") or \
            (e.get("event") == "handler-stored" and path and not path.endswith(".crash")):
        c["stored"].append({k: e.get(k) for k in ("handler", "path", "truncated", "core", "size", "time",
                                                   "corefile", "source")})
        if not c["stored"][-1]["handler"]:
            c["stored"][-1]["handler"] = e.get("ident")
