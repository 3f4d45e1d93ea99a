"""
Sysctl history
--------------
What ``kernel.core_pattern`` and ``fs.suid_dumpable`` were at the moment of an old crash, as far
as coredoctor's own fix journal (:mod:`coredoctor.fix.journal`) tells: every ``fix --apply``
recorded each live value before it changed it, and every rollback put it back at a known time.

Without this, ``crashes`` judges every old crash by today's values. After the seed's fix
(``fs.suid_dumpable`` 0 -> 2, a relative pattern made absolute) that would look for the old
crash's core under the new pattern and find the restarted daemon dumpable now -- and so miss
the very reason its core was lost. Changes made by other means leave no record here: a value
is said to come from the journal, never guessed.

Pure: the journal entries come in as dicts.
"""

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ["changes", "value_at"]


def changes(entries: Optional[Iterable[Dict[str, Any]]], key: str) -> List[Dict[str, Any]]:
    """``[{"time", "before", "after", "fix", "how"}]`` for sysctl *key*, oldest first: each
    applied action (at the fix's time) and each rollback of one (at the rollback's time)."""
    out: List[Dict[str, Any]] = []
    for e in entries or []:
        for rec in e.get("actions") or []:
            a, prior = rec.get("action") or {}, rec.get("prior") or {}
            if a.get("kind") != "sysctl" or a.get("key") != key or "value" not in prior:
                continue
            if not rec.get("done"):
                continue  # journaled, not known to have been carried out (failed, or apply was killed)
            before, after = str(prior["value"]), str(a.get("value"))
            if e.get("created") is not None:
                out.append({"time": float(e["created"]), "before": before, "after": after, "fix": e.get("id"),
                            "how": "applied", "kmsg": e.get("kmsg") if isinstance(e.get("kmsg"), dict) else None})
            if e.get("state") == "rolled-back" and e.get("rolled_back") is not None:
                out.append({"time": float(e["rolled_back"]), "before": after, "after": before, "fix": e.get("id"),
                            "how": "rolled back"})
    out.sort(key=lambda c: c["time"])
    return [c for c in out if c["before"] != c["after"]]


def _after(c: Dict[str, Any], when: float, kmsg_seq: Optional[int], boot_id: Optional[str]) -> bool:
    """Whether change *c* came after a crash at *when*: by the kernel log's sequence numbers when
    the crash is a kernel line of this boot (*kmsg_seq*) and the fix journaled where the log
    stood (``kmsg``: boot_id, next_seq) -- a crash's kernel-log time is printk's local_clock(),
    which may run ahead of CLOCK_MONOTONIC (by 0.7 s at 8 s uptime in the emulated arm64 guest,
    more under load) and so look later than a fix made after it; else by time."""
    k = c.get("kmsg")
    if kmsg_seq is not None and boot_id and isinstance(k, dict) and k.get("boot_id") == boot_id \
            and isinstance(k.get("next_seq"), int):
        return kmsg_seq < k["next_seq"]  # the crash was logged before the fix
    return bool(c["time"] > when)


def value_at(chs: Sequence[Dict[str, Any]], when: Optional[float], today: Optional[str],
             kmsg_seq: Optional[int] = None, boot_id: Optional[str] = None
             ) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """``(value, change)``: the value in force at *when* (epoch seconds) -- the ``before`` of the
    first journaled change after it -- and that change; ``(today, None)`` when no journaled
    change came after *when* (or *when* is unknown). *kmsg_seq*, *boot_id*: the crash's kernel
    log line and the current boot, an order without clocks (see :func:`_after`)."""
    if when is None:
        return today, None
    for c in chs:
        if _after(c, when, kmsg_seq, boot_id):
            return c["before"], c
    return today, None
