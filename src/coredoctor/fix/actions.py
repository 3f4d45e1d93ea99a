"""
Applying and rolling back
-------------------------
Each action's prior state is captured and journaled *before* the action runs; rollback restores
every captured prior state (file bytes, mode and owner; live sysctl values, suid_dumpable before
core_pattern; directories and drop-in folders it created; a process's RLIMIT_CORE if it is still
the same process), so an apply killed midway is undone as well as a finished one.
"""

import base64
import os
import resource
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple, Union

from coredoctor.errors import Error, UsageError
from coredoctor.fix import journal
from coredoctor.kernel.remedies import REPORTED_KINDS, edit_text

__all__ = ["apply", "apply_document", "rollback", "rollback_entry", "describe", "entry_targets"]

_SYSCTL_PATH = {"kernel.core_pattern": "/proc/sys/kernel/core_pattern", "fs.suid_dumpable": "/proc/sys/fs/suid_dumpable"}
_RES = {"core": resource.RLIMIT_CORE, "fsize": resource.RLIMIT_FSIZE}


class ApplyError(Error):
    exit_code = 1


def _starttime(pid: int) -> Optional[str]:
    from coredoctor.snapshot import proc
    try:
        return str(proc.stat(pid)["starttime"])
    except Error:
        return None


def _capture(a: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    k = a["kind"]
    if k == "sysctl":
        with open(_SYSCTL_PATH[a["key"]]) as f:
            return {"value": f.read().rstrip("\n")}
    if k == "mkdir":
        return {"existed": os.path.exists(a["path"])}
    if k in REPORTED_KINDS:
        return None  # reported, not applied: nothing to restore
    if k in ("file", "dropin", "config-line"):
        prior: Dict[str, Any] = {"existed": os.path.exists(a["path"]), "created_dirs": []}
        d = os.path.dirname(a["path"])
        while d and not os.path.exists(d):
            prior["created_dirs"].insert(0, d)
            d = os.path.dirname(d)
        if prior["existed"]:
            st = os.stat(a["path"])
            with open(a["path"], "rb") as f:
                prior.update(bytes=base64.b64encode(f.read()).decode(), mode=st.st_mode & 0o7777,
                             uid=st.st_uid, gid=st.st_gid)
        return prior
    if k == "prlimit":
        soft, hard = resource.prlimit(a["pid"], _RES[a["resource"]])
        return {"soft": soft, "hard": hard, "starttime": _starttime(a["pid"])}
    raise UsageError(f"unknown action {k}")


def _rl(v: Optional[int]) -> int:
    return resource.RLIM_INFINITY if v is None else v


def _do(a: Dict[str, Any]) -> None:
    k = a["kind"]
    if k == "sysctl":
        with open(_SYSCTL_PATH[a["key"]], "w") as f:
            f.write(a["value"])
    elif k == "mkdir":
        if not os.path.isdir(a["path"]):
            os.makedirs(a["path"], exist_ok=True)
            os.chmod(a["path"], int(a["mode"], 8))
    elif k in ("file", "dropin"):
        os.makedirs(os.path.dirname(a["path"]), exist_ok=True)
        journal.atomic_write(a["path"], a["content"].encode(), int(a["mode"], 8), 0, 0)
        if a.get("after") == "systemctl daemon-reload" and _systemd_running():
            subprocess.run(["systemctl", "daemon-reload"], check=False)
    elif k == "config-line":
        # the daemon's own file, edited in place: its owner and mode kept; never through a symlink
        fd = os.open(a["path"], os.O_RDONLY | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            old = os.read(fd, 1 << 22)
        finally:
            os.close(fd)
        try:
            new = edit_text(old.decode("utf-8", "surrogateescape"), a).encode("utf-8", "surrogateescape")
        except ValueError as e:
            raise OSError(0, str(e))
        journal.atomic_write(a["path"], new, st.st_mode & 0o7777, st.st_uid, st.st_gid)
    elif k == "prlimit":
        soft, hard = a["value"]  # (a ValueError for any other length, as prlimit() gives)
        resource.prlimit(a["pid"], _RES[a["resource"]], (_rl(soft), _rl(hard)))


def _undo(a: Dict[str, Any], prior: Dict[str, Any]) -> Optional[str]:
    """Restore *prior*; returns a note about anything that could not be restored."""
    k = a["kind"]
    if k == "sysctl":
        with open(_SYSCTL_PATH[a["key"]], "w") as f:
            f.write(prior["value"])
    elif k == "mkdir":
        if not prior["existed"] and os.path.isdir(a["path"]):
            try:
                os.rmdir(a["path"])
            except OSError:
                return f"kept {a['path']}: it is not empty (cores may be in it)"
    elif k in REPORTED_KINDS or prior is None:
        return None
    elif k in ("file", "dropin", "config-line"):
        if prior["existed"]:
            journal.atomic_write(a["path"], base64.b64decode(prior["bytes"]), prior["mode"], prior["uid"], prior["gid"])
        elif os.path.lexists(a["path"]):
            os.unlink(a["path"])
        for d in reversed(prior.get("created_dirs") or []):
            try:
                os.rmdir(d)
            except OSError:
                pass
        if a.get("after") == "systemctl daemon-reload" and _systemd_running():
            subprocess.run(["systemctl", "daemon-reload"], check=False)
    elif k == "prlimit":
        if _starttime(a["pid"]) != prior.get("starttime"):
            return f"pid {a['pid']} is gone or is another process now: its limit is not restored"
        try:
            resource.prlimit(a["pid"], _RES[a["resource"]], (prior["soft"], prior["hard"]))
        except OSError as e:
            return f"could not restore RLIMIT_{a['resource'].upper()} of pid {a['pid']}: {e.strerror}"
    return None


def _systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


def _limit_error(a: Dict[str, Any], e: OSError) -> str:
    return (f"{e.strerror}: raising another user's RLIMIT_{a['resource'].upper()} needs CAP_SYS_RESOURCE "
            f"(pid {a['pid']} keeps its limit until it is started again)")


def _target_rec(t: Dict[str, Any]) -> Dict[str, Any]:
    return {"pid": t["pid"], "comm": t["comm"], "exe": t.get("exe"), "unit": t.get("unit"),
            "starttime": _starttime(t["pid"])}


def entry_targets(entry: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The targets of a journal entry (entries written before multi-target journaling have one)."""
    return entry.get("targets") or ([entry["target"]] if entry.get("target") else [])


def apply(fix_id: str, targets: Union[Dict[str, Any], List[Dict[str, Any]]], plan: Dict[str, Any]) -> Dict[str, Any]:
    """Apply *plan* for *targets* (a list; one target dict is accepted too), journaling first:
    every target and every record, applied ones with their prior state; records a person does
    (restart, manual, daemon-option) are journaled as reported, not applied. Returns the entry."""
    if isinstance(targets, dict):
        targets = [targets]
    recs = [_target_rec(t) for t in targets]
    entry: Dict[str, Any] = {"id": fix_id, "created": time.time(), "state": "applying", "target": recs[0] if recs else None,
             "targets": recs,
             "plan": {k: plan.get(k, []) for k in ("needs_restart", "security", "warnings", "manual")},
             "actions": []}
    from coredoctor.history import kmsg
    entry["kmsg"] = kmsg.position()  # additive: orders an old crash's kernel line against this fix
    journal.save(entry)
    pause = float(os.environ.get("COREDOCTOR_TEST_APPLY_PAUSE", "0") or 0)  # tests: a window to kill -9 in
    for a in list(plan["actions"]) + list(plan.get("reported") or []):
        if a["kind"] in REPORTED_KINDS:
            entry["actions"].append({"action": a, "prior": None, "done": False, "reported": True})
            journal.save(entry)
            continue
        try:
            prior = _capture(a)
        except PermissionError as e:
            if a["kind"] != "prlimit":
                raise
            # even reading another user's limit needs CAP_SYS_RESOURCE (check_prlimit_permission())
            entry["actions"].append({"action": a, "prior": None, "done": False, "error": _limit_error(a, e)})
            journal.save(entry)
            continue
        rec = {"action": a, "prior": prior, "done": False}
        entry["actions"].append(rec)
        journal.save(entry)
        try:
            _do(a)
        except PermissionError as e:
            if a["kind"] != "prlimit":
                raise_apply_error(entry, rec, a, e)
            # a live limit is a convenience: the persistent change still applies at the next start
            rec["error"] = _limit_error(a, e)
            journal.save(entry)
            continue
        except OSError as e:
            raise_apply_error(entry, rec, a, e)
        rec["done"] = True
        journal.save(entry)
        if pause:
            time.sleep(pause)
    entry["state"] = "applied"
    journal.save(entry)
    return entry


def apply_document(doc: Dict[str, Any], targets: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Apply the plan of a coredoctor.fix/1 *doc* (from :func:`coredoctor.fix.plan.document`) and
    record the outcome in it: ``id``, ``applied``, ``errors``."""
    if doc["refused"]:
        raise UsageError("refused: " + "; ".join(doc["refused"]))
    if not doc["actions"]:
        doc.update(applied=False, id=None)
        return doc
    fix_id = journal.new_id()
    entry = apply(fix_id, targets, doc)
    doc.update(id=fix_id, applied=True, errors=[r["error"] for r in entry["actions"] if r.get("error")])
    return doc


def raise_apply_error(entry: Dict[str, Any], rec: Dict[str, Any], a: Dict[str, Any], e: OSError) -> None:
    entry["state"] = "failed"
    rec["error"] = f"{e.strerror or e}"
    journal.save(entry)
    notes = rollback_entry(entry)
    raise ApplyError(f"{_describe(a)} failed ({e.strerror or e}); everything done so far was rolled "
                     f"back{'; ' + '; '.join(notes) if notes else ''}")


def rollback_entry(entry: Dict[str, Any]) -> List[str]:
    notes = []
    # reverse order: the persisted file first, suid_dumpable before core_pattern (the safe order)
    for rec in reversed(entry["actions"]):
        if rec.get("reported") or rec.get("prior") is None:
            continue  # reported, or never captured (so never done)
        n = _undo(rec["action"], rec["prior"])
        if n:
            notes.append(n)
    entry["state"] = "rolled-back"
    entry["rolled_back"] = time.time()
    entry["notes"] = notes
    journal.save(entry)
    return notes


def rollback(fix_id: str) -> Tuple[Dict[str, Any], List[str]]:
    entry = journal.load(fix_id)
    if entry.get("state") == "rolled-back":
        raise UsageError(f"fix {fix_id} was already rolled back")
    return entry, rollback_entry(entry)


def _describe(a: Dict[str, Any]) -> str:
    k = a["kind"]
    if k == "sysctl":
        return f"sysctl -w {a['key']}={a['value']}"
    if k == "mkdir":
        return f"mkdir -m {a['mode']} {a['path']}"
    if k == "file":
        return f"write {a['path']}"
    if k == "dropin":
        return f"write {a['path']} (then {a.get('after') or 'systemctl daemon-reload'})"
    if k == "prlimit":
        soft, hard = a.get("value") or [None, None]
        lim = lambda v: "unlimited" if v is None else str(v)  # noqa: E731
        return f"prlimit --pid {a['pid']} --{a['resource']}={lim(soft)}:{lim(hard)}"
    if k == "config-line":
        return f"edit {a['path']}: {a.get('text')}"
    if k == "restart":
        return f"restart (by hand): {a.get('command')}"
    if k in ("manual", "daemon-option"):
        return f"by hand: {a.get('text')}"
    return k


describe = _describe
