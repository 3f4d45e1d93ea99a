"""
Origins: the language runtime behind the signal gate
----------------------------------------------------
When the signal gate fails (or warns) because a runtime's handler keeps the kernel's default
action from running (Go without ``GOTRACEBACK=crash``, HotSpot with
``-XX:-CreateCoredumpOnCrash``), the origin is that runtime (kind ``runtime``): the variable or
option as found, and the table row's citation (:data:`coredoctor.runtimes.RUNTIMES`). The fix
sets the runtime's switch where the process is started: a unit drop-in ``Environment=`` for a
systemd service (next start), else the start script.
"""

import shlex
from typing import Any, Dict, List, Optional

from coredoctor import runtimes
from coredoctor.kernel import remedies as R
from coredoctor.origin import Found, origin

__all__ = ["find"]


def _where(rid: str, facts: Dict[str, Any]) -> Dict[str, Any]:
    """What the origin points at: the variable or option as found (text, argv) or its absence."""
    env: Dict[str, Any] = facts["env"] if isinstance(facts.get("env"), dict) else {}
    if rid == "go":
        v = env.get("GOTRACEBACK")
        return {"text": None if v is None else f"GOTRACEBACK={v}",
                "what": "GOTRACEBACK is not set (the default 'single')" if v is None else f"GOTRACEBACK={v!r}"}
    if rid == "java":
        _on, where = runtimes.java_coredump_flag(facts)
        words = [w for w in (facts.get("argv") or []) if "CreateCoredumpOnCrash" in str(w)]
        argv = words[-1:] if "command line" in where else None
        return {"text": where.split(" in ", 1)[0] if " in " in where else None, "argv": argv, "what": where}
    return {"text": None, "what": "the runtime's default"}


def _fix(rid: str, proc: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    row = runtimes.row(rid)
    if not row or not row.get("fix"):
        return None
    text, assignment = row["fix"]
    unit = proc.get("unit")
    why = f"{row['name']} re-raises the signal with its default action only with {assignment}"
    if unit and unit.endswith(".service"):
        acts = [R.dropin(unit, "runtime", ["[Service]", f"Environment={assignment}"],
                         f"{assignment} in {unit}'s environment from its next start", needs_restart=True),
                R.restart(proc, "the runtime reads it at start")]
    else:
        acts = [R.manual(f"{text} where {proc.get('comm') or 'the program'} is started "
                         f"(e.g. 'export {assignment}' in its start script)", why,
                         [f"# {shlex.quote(assignment)} in the environment of pid {proc['pid']}'s next start"],
                         needs_restart=True)]
    return R.fix(f"{row['name']}: {text} (this program only; the kernel then dumps it)", acts)


def find(snap: Dict[str, Any], proc: Dict[str, Any], target: Dict[str, Any]) -> Found:
    """The runtime origin of a failing/warned signal gate, and the runtime's own switch as a fix."""
    facts = proc.get("runtime")
    gate = next((g for g in target.get("gates", ()) if g.get("id") == "signal"), None)
    if not isinstance(facts, dict) or gate is None or gate.get("status") not in ("fail", "warn", "unknown"):
        return Found({}, [])
    ans = runtimes.decide(facts, target.get("signal") or "SIGSEGV", target.get("how") or "fault")
    if ans is None or ans[0] == "pass":
        return Found({}, [])
    status, ev, rid, _sig = ans
    row = runtimes.row(rid) or {}
    w = _where(rid, facts)
    o = origin("runtime", f"{row.get('name', rid)}: {w['what']}", row.get("source", ""), program=rid,
               text=w.get("text"), argv=w.get("argv"))
    fixes: List[Dict[str, Any]] = []
    f = _fix(rid, proc)
    if f:
        fixes.append(R.public_fix(f))
    return Found({"signal": o}, fixes)
