"""
Reasons
-------
Why a target would (not) leave a core, as data: the evaluator returns reason records
``{"gate", "clause", "values"}`` and this module composes the English sentence from them (the
``verdict`` of coredoctor.check/1, the summary table's reason column). One table row per
clause; nothing here reads a sentence back.
"""

from typing import Any, Callable, Dict, List, Optional

from coredoctor.kernel.signal import FAULT_SIGNALS

__all__ = ["reason", "who", "clause_text", "reason_text", "outcome", "verdict", "CLAUSES"]

Reason = Dict[str, Any]


def reason(gate: Optional[str], clause: str, **values: Any) -> Reason:
    return {"gate": gate, "clause": clause, "values": values}


def who(v: Dict[str, Any]) -> str:
    """The dumping credentials: ``{"root": dumps as root, "user", "fsuid", "fsgid"}``."""
    if v.get("root"):
        return f"fsuid 0 (dumpable=2 dumps as root), fsgid {v['fsgid']}"
    return f"{v.get('user') or v['fsuid']} (fsuid {v['fsuid']}, fsgid {v['fsgid']})"


def _cause(v: Dict[str, Any]) -> str:
    """How the process became non-dumpable (values of :func:`coredoctor.kernel.dumpable.infer_cause`)."""
    cause = v.get("cause")
    sd = "fs.suid_dumpable was 0"
    inherited = ", and it inherited the flag at fork" if v.get("via") else ""
    parent = f"its parent {v.get('origin_comm')} (pid {v.get('origin')})"
    if cause == "privilege-change":
        frm = (v.get("from") or "").split(":")[0] or None
        change = f"switched from {frm} to {v['to']}" if frm and v.get("to") else "changed its credentials"
        if v.get("via"):
            return f"since {parent} {change} while {sd}{inherited}"
        return f"since it {change} while {sd}"
    if cause == "exec":
        return f"since {'it' if not v.get('via') else parent} executed a set-id or file-capability program " \
               f"while {sd}{inherited}"
    if cause == "prctl":
        return f"since {'it' if not v.get('via') else parent} turned dumping off with " \
               f"prctl(PR_SET_DUMPABLE, 0){inherited}"
    if cause == "inherited":
        return "since it inherited the flag from its non-dumpable parent"
    return f"(cause unknown; fs.suid_dumpable is {v.get('suid_dumpable_now')} now)"


#: clause id -> how it reads (values -> text)
CLAUSES: Dict[str, Callable[[Dict[str, Any]], str]] = {
    "text": lambda v: v["text"],
    "no-coredump-config": lambda v: "this kernel is built without core dump support (CONFIG_COREDUMP=n)",
    "not-dumpable": lambda v: f"it is not dumpable (dumpable=0) {_cause(v)}",
    "rlimit-core-one": lambda v: "its RLIMIT_CORE is 1, which pipe mode treats as a crashing core helper",
    "rlimit-core-below-page": lambda v: f"its RLIMIT_CORE is {v['soft']} (below one page, {v['page']} bytes)",
    "suid-relative": lambda v: f"it is dumpable=2 and kernel.core_pattern {v['pattern']!r} is relative",
    "dir-missing": lambda v: f"the core directory {v['dir']} does not exist",
    "dir-unreachable": lambda v: f"it may not reach {v['dir']} ({v['component']} is not searchable by "
                                 f"{who(v['who'])})",
    "dir-not-writable": lambda v: f"{v['dir']} is not writable by {who(v['who'])}",
    "cwd-root-not-writable": lambda v: f"its cwd is / and {who(v['who'])} may not write there "
                                       "(kernel.core_pattern is relative)",
    "dir-readonly": lambda v: f"{v['dir']} is on a read-only filesystem",
    "umask": lambda v: f"its umask {v['umask']:04o} makes the core file mode {v['mode']:04o}, which the "
                       "kernel refuses",
    "file-exists": lambda v: f"a file {v['name']} already exists where the core would go",
    "dir-in-way": lambda v: f"a directory {v['name']} is in the way",
    "old-file": lambda v: f"an old {v['name']} owned by uid {v['uid']} is in the way",
    "fs-full": lambda v: "the core's filesystem is full",
    "pipe-empty": lambda v: "kernel.core_pattern is an empty pipe",
    "helper-missing": lambda v: f"the core_pattern helper {v['path']} is missing",
    "helper-not-executable": lambda v: f"the core_pattern helper {v['path']} is not executable",
    "interpreter-missing": lambda v: f"the interpreter of the core_pattern helper {v['path']} is missing",
    "socket-missing": lambda v: f"nothing listens on the core socket {v['path']} (it does not exist)",
    "socket-not-listening": lambda v: f"nothing listens on the core socket {v['path']}",
    "fsize-zero": lambda v: "its RLIMIT_FSIZE is 0, so the core file stays empty",
    "dumpable-candidates": lambda v: f"its dumpable value could be {' or '.join(map(str, v['candidates']))} "
                                     f"and the answer depends on it ({v['evidence']})",
}


def clause_text(r: Reason) -> str:
    return CLAUSES[r["clause"]](r["values"])


def reason_text(t: Dict[str, Any]) -> str:
    """The reason part of a target's verdict (after its " -- "), or the whole outcome when it dumps."""
    texts = list(dict.fromkeys(clause_text(r) for r in t.get("reasons") or []))
    if t["dumps"] is False:
        return " -- or, ".join(texts)
    if t["dumps"] is None:
        return texts[0] if texts else "unknown"
    return outcome(t)


def outcome(t: Dict[str, Any]) -> str:
    """The verdict without the process's name: 'a SIGSEGV now would ...'."""
    sig = t["signal"]
    how = "" if t["how"] == "fault" or sig not in FAULT_SIGNALS else " sent with kill"
    if t["dumps"] is True:
        dest = t["core_destination"]
        where = dest["path"] if dest["kind"] == "file" else f"{dest['kind']} {dest['path']}"
        return f"a {sig}{how} now would leave a core ({where})"
    if t["dumps"] is False:
        return f"a {sig}{how} now would NOT leave a core -- {reason_text(t)}"
    return f"a {sig}{how} now might or might not leave a core -- {reason_text(t)}"


def verdict(t: Dict[str, Any]) -> str:
    """The one-sentence verdict of a target (``targets[].verdict``)."""
    return f"{t['comm']} (pid {t['pid']}): {outcome(t)}"


def dedup(rs: List[Reason]) -> List[Reason]:
    """Reasons that read the same, once."""
    seen, out = set(), []
    for r in rs:
        s = clause_text(r)
        if s not in seen:
            seen.add(s)
            out.append(r)
    return out
