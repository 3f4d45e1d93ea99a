"""
Planning a fix
--------------
Pure: the fixes ``check`` found for each target (action records of
:mod:`coredoctor.kernel.remedies`) merged into one plan -- one record per thing changed, in the
safe order, without what is already in place (so planning again after an apply gives nothing to
do: apply is idempotent). The records of the plan are the records of check's ``fixes[].actions``:
this module adds no remedy of its own, only the merge, the one refusal (fs.suid_dumpable=2 with a
relative core_pattern) and the warnings that depend on what runs on the host.
"""

from typing import Any, Dict, Iterable, List, Optional

from coredoctor import programs
from coredoctor.kernel import core_pattern, remedies as R

__all__ = ["plan", "plan_targets", "document", "SYSCTL_FILE", "DEFAULT_PATTERN", "DEFAULT_DIR", "ORDER"]

SYSCTL_FILE = R.SYSCTL_FILE
DEFAULT_DIR = R.DEFAULT_DIR
DEFAULT_PATTERN = R.DEFAULT_PATTERN
#: kept for callers that sorted by it; the order now lives in remedies.order_key
ORDER = {"mkdir": 0, "sysctl:kernel.core_pattern": 1, "sysctl:fs.suid_dumpable": 2, "file": 3, "prlimit": 4}

Plan = Dict[str, Any]


def _uniq(xs: Iterable[Any]) -> List[Any]:
    out: List[Any] = []
    for x in xs:
        if x and x not in out:
            out.append(x)
    return out


def _chosen(t: Dict[str, Any], daemon: bool) -> List[Dict[str, Any]]:
    fixes = list(t.get("fixes") or [])
    own = [f for f in fixes if any(a.get("kind") in R.DAEMON_KINDS for a in f.get("actions") or [])]
    return own if daemon and own else fixes


def plan_targets(snap: Dict[str, Any], targets: List[Dict[str, Any]], conflicts: Iterable[Dict[str, Any]] = (),
                 existing_files: Optional[Dict[str, str]] = None, running: Iterable[str] = (),
                 daemon: bool = False) -> Plan:
    """Merge the fixes of *targets* (``gates.evaluate`` results on *snap*) into one plan:
    ``{"actions", "reported", "needs_restart", "security", "warnings", "manual", "refused"}``.
    *actions* are the records fix applies; *reported* the ones a person does (restart, manual,
    daemon-option). *existing_files* adds to the snapshot's ``own_files`` (path -> text);
    *running* lists the command names running on the host. With *daemon*, a target whose fixes
    include its daemon's own switch (``config-line`` edits of its config file) gets that fix
    instead of the host-wide ones; otherwise those edits are only reported."""
    facts = R.facts_of(snap, existing_files)
    records = [a for t in targets for f in _chosen(t, daemon) for a in f.get("actions") or []]
    merged = R.merge(records, facts)
    refused = []
    live = snap["sysctl"]
    final_pattern = next((a["value"] for a in merged if a["kind"] == "sysctl" and a["key"] == "kernel.core_pattern"),
                         live.get("kernel.core_pattern") or "")
    final_sd = next((a["value"] for a in merged if a["kind"] == "sysctl" and a["key"] == "fs.suid_dumpable"),
                    str(live.get("fs.suid_dumpable")))
    if final_sd == "2" and core_pattern.parse(final_pattern)["kind"] == "file" and not final_pattern.startswith("/"):
        # the one combination the kernel refuses: mode 2 with a relative name
        refused.append("fs.suid_dumpable=2 with a relative core_pattern")
        merged = [a for a in merged if not (a["kind"] == "sysctl" and a["key"] == "fs.suid_dumpable")]
    own = R.APPLIED_KINDS + (R.DAEMON_KINDS if daemon else ())
    actions = [a for a in merged if a["kind"] in own]
    reported = [a for a in merged if a["kind"] not in own]
    warnings = [a["risk"] for a in reported if a.get("risk")]
    if any(a["kind"] == "sysctl" and a["key"] == "fs.suid_dumpable" and a["value"] == "2" for a in actions):
        sensitive = sorted(set(running) & set(programs.DELIBERATELY_UNDUMPABLE))
        if sensitive:
            warnings.append(f"{', '.join(sensitive)} run here and keep secrets out of cores on purpose: those that "
                            "only drop privileges (sshd's privilege-separated children) will dump with "
                            "fs.suid_dumpable=2; those that call prctl(PR_SET_DUMPABLE, 0) stay undumpable")
    for c in conflicts:
        if c.get("wins"):
            warnings.append(f"{c['path']}: {c['effect']}" + (f" ({c['key']} = {c['value']})" if c.get("key") else ""))
    return {"actions": actions, "reported": reported,
            "needs_restart": [{"pid": a["pid"], "comm": a["comm"], "unit": a["unit"], "why": a["why"],
                               "command": a["command"].lstrip("# ")} for a in reported if a["kind"] == "restart"],
            "security": _uniq(a.get("risk") for a in actions), "warnings": _uniq(warnings),
            "manual": _uniq(a["text"] for a in reported if a["kind"] != "restart"), "refused": refused}


def plan(snap: Dict[str, Any], target: Dict[str, Any], conflicts: Iterable[Dict[str, Any]] = (),
         existing_files: Optional[Dict[str, str]] = None, running: Iterable[str] = ()) -> Plan:
    """The plan for one target (see :func:`plan_targets`)."""
    return plan_targets(snap, [target], conflicts, existing_files, running)


def document(snap: Dict[str, Any], targets: List[Dict[str, Any]], conflicts: List[Dict[str, Any]],
             running: Iterable[str] = (), daemon: bool = False) -> Dict[str, Any]:
    """The coredoctor.fix/1 document of a plan (not applied yet)."""
    p = plan_targets(snap, targets, conflicts, running=running, daemon=daemon)
    doc = {"schema": "coredoctor.fix/1", "id": None, "applied": False,
           "targets": [{"pid": t["pid"], "comm": t["comm"], "unit": t["unit"], "dumps": t["dumps"],
                        "blocking_gate": t["blocking_gate"], "verdict": t["verdict"]} for t in targets],
           "conflicts": list(conflicts)}
    doc.update(p)
    return doc
