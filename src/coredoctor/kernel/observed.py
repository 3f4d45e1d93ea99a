"""
Observed facts
--------------
What was *seen* of a real crash or a real signal delivery, as an explicit input of the gate
evaluator (:func:`coredoctor.kernel.evaluator.evaluate`, ``observed=``): the snapshot says what
the process and the host are like, an observation says what the kernel did once.

- ``signal``: the signal the kernel delivered with its default action (a ``fault`` line,
  ``trace``'s signal_deliver). It settles the signal gate: masks, handlers and a tracer that the
  snapshot shows did not stop it.
- ``core_status``/``core_size``/``expected_size``: the core that was found (``present``,
  ``empty``, ``truncated``, ``missing``). Size 0 is left by the gates that create the file and
  write nothing (core-file's umask check, space, RLIMIT_FSIZE 0); a core cut at about
  RLIMIT_CORE's soft limit was cut by rlimit-core, one cut elsewhere by RLIMIT_FSIZE or ENOSPC.
- ``refusal``: a refusal line of the kernel or of the handler, already tied to its gate by the
  kmsg/daemonlog tables: that gate failed, in the kernel's (or the handler's) own words.
- ``sysctls``: sysctl values in force at the crash's time (the fix journal,
  :mod:`coredoctor.history.sysctl_history`), which replace the snapshot's; ``sysctl_notes``
  say where each came from.
- ``instance``: the pid of the running process whose facts stand in for the crashed one (a
  restarted instance of the same program), or None.

Pure: no system access. A predicate that an observation settles says so in its evidence
(``observed: ...``); when the model of the snapshot disagrees, :func:`settle` keeps both.
"""

from types import MappingProxyType
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

__all__ = ["Observed", "Refusal", "settle", "cut_by", "cut_text", "is_empty", "is_cut", "as_dict", "passed",
           "settled_without_facts", "EMPTY_GATES", "CUT_GATES", "SLACK"]

#: the kernel writes whole pages and notes past the last check: a core cut by a limit ends within
#: one page above it (dump_emit() checks the limit before each chunk, fs/coredump.c)
SLACK = 4096

#: the gates that create the core file and then write nothing into it, in the kernel's order:
#: core-file's "(i_mode & 0677) != 0600" check after the open, ENOSPC at the first write,
#: RLIMIT_FSIZE 0 (EFBIG at the first write)
EMPTY_GATES: Tuple[str, ...] = ("core-file", "space", "rlimit-fsize")
#: the gates that cut a core short
CUT_GATES: Tuple[str, ...] = ("rlimit-core", "space", "rlimit-fsize")


#: the empty mapping every observation without sysctls shares (read-only)
_NO_VALUES: Mapping[str, Any] = MappingProxyType({})


# NamedTuples, not dataclasses: immutable records all the same, and the dataclasses module
# (it imports inspect) was a third of check --all's start-up imports (13 of 40 ms)
class Refusal(NamedTuple):
    """A line of the kernel or of a handler that says which gate stopped the core."""
    gate: str
    source: str
    line: str


class Observed(NamedTuple):
    """Facts observed about one real crash or delivery (see the module doc)."""
    signal: Optional[str] = None
    core_status: Optional[str] = None
    core_size: Optional[int] = None
    expected_size: Optional[int] = None
    core_path: Optional[str] = None
    refusal: Optional[Refusal] = None
    sysctls: Mapping[str, Any] = _NO_VALUES
    sysctl_notes: Mapping[str, str] = _NO_VALUES
    instance: Optional[int] = None


def is_empty(obs: Optional[Observed]) -> bool:
    """The kernel created the core and wrote nothing into it."""
    return obs is not None and (obs.core_status == "empty" or (obs.core_size == 0 and obs.core_status != "missing"))


def is_cut(obs: Optional[Observed]) -> bool:
    """The core was cut short (and something of it was written)."""
    return obs is not None and obs.core_status == "truncated" and bool(obs.core_size)


def cut_by(obs: Optional[Observed], soft: Optional[int]) -> bool:
    """The observed cut is at a limit *soft* (bytes): the core ends within :data:`SLACK` above
    it, and the limit is below what the whole core would have been."""
    if not is_cut(obs) or soft is None:
        return False
    assert obs is not None and obs.core_size is not None
    return (obs.expected_size is None or soft < obs.expected_size) and obs.core_size <= soft + SLACK


def cut_text(obs: Observed) -> str:
    """``the core was cut at N bytes (of M)``"""
    of = f" of {obs.expected_size}" if obs.expected_size else ""
    return f"the core was cut at {obs.core_size} bytes{of}"


def settle(model: Dict[str, Any], status: str, evidence: str, why: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A predicate's result once an observation settled it: *status* and ``observed: evidence``;
    when the model's own status differs, its answer stays in the evidence (never silently
    contradicted) and ``model_status`` keeps it as data."""
    out = dict(model, status=status, observed=True)
    ev = f"observed: {evidence}"
    if model.get("status") != status:
        ev += f"; the model of the snapshot said: {model.get('status')} -- {model.get('evidence')}"
        out["model_status"] = model.get("status")
    out["evidence"] = ev
    if why is not None:
        out["reason"] = why
    elif status == "pass":
        out.pop("reason", None)
    return out


def as_dict(obs: Optional[Observed]) -> Optional[Dict[str, Any]]:
    """The observation as plain data (JSON), the empty fields left out."""
    if obs is None:
        return None
    d: Dict[str, Any] = {}
    for k in ("signal", "core_status", "core_size", "expected_size", "core_path", "instance"):
        v = getattr(obs, k)
        if v is not None:
            d[k] = v
    if obs.refusal is not None:
        d["refusal"] = {"gate": obs.refusal.gate, "source": obs.refusal.source, "line": obs.refusal.line}
    if obs.sysctls:
        d["sysctls"] = dict(obs.sysctls)
    return d


def settled_without_facts(obs: Observed) -> List[Dict[str, Any]]:
    """What an observation alone says, gate by gate, when no facts of the process are known
    (no running instance to stand in for it): a refusal line fails its gate; an empty or cut core
    narrows the cause to :data:`EMPTY_GATES` or :data:`CUT_GATES`, each ``unknown`` (which of them
    depends on the crashed process's limits, umask and filesystem, which are gone)."""
    out: List[Dict[str, Any]] = []
    if obs.refusal is not None:
        out.append({"id": obs.refusal.gate, "status": "fail",
                    "evidence": f"observed: {obs.refusal.source} logged: {obs.refusal.line}"})
        return out
    if is_empty(obs):
        where = f"{obs.core_path} is empty" if obs.core_path else "the core is empty"
        for gid in EMPTY_GATES:
            out.append({"id": gid, "status": "unknown",
                        "evidence": f"observed: {where}: the kernel created it and could write nothing; "
                                    "this gate leaves such a file, and the crashed process's facts "
                                    "(umask, free space then, RLIMIT_FSIZE) are not known"})
    elif is_cut(obs):
        for gid in CUT_GATES:
            out.append({"id": gid, "status": "unknown",
                        "evidence": f"observed: {cut_text(obs)}; dump_emit() stops at RLIMIT_CORE, a write "
                                    "at RLIMIT_FSIZE or on ENOSPC; the crashed process's limits are not known"})
    return out


#: the gates the kernel has passed once it created the core file (vfs_coredump() order: the
#: signal, the config and dumpable checks, suid-path and the directory's open come before it)
_BEFORE_FILE: Tuple[str, ...] = ("signal", "kernel-config", "dumpable", "suid-path", "core-dir")


def passed(obs: Optional[Observed], order: Tuple[str, ...]) -> Dict[str, str]:
    """``{gate id: why}`` for the gates an observation shows the kernel got past: every gate
    before the one whose refusal line was logged; the gates before the file's creation when a
    core file (empty or cut) was found. *order*: the table's gate ids in the kernel's order."""
    out: Dict[str, str] = {}
    if obs is None:
        return out
    if obs.refusal is not None and obs.refusal.gate in order:
        for gid in order[:order.index(obs.refusal.gate)]:
            out[gid] = f"the kernel went on to {obs.refusal.gate} ({obs.refusal.source} logged its refusal), " \
                       "so it got past this gate"
    elif is_empty(obs) or is_cut(obs):
        gids = _BEFORE_FILE + (("rlimit-core",) if is_empty(obs) else ())
        what = "an empty core file" if is_empty(obs) else "a cut core file"
        for gid in gids:
            out[gid] = f"the kernel created {what}{' ' + obs.core_path if obs.core_path else ''}, so it got " \
                       "past this gate"
    return out
