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

from coredoctor.errors import Error, UsageError
from coredoctor.fix import journal

__all__ = ["apply", "rollback"]

_SYSCTL_PATH = {"kernel.core_pattern": "/proc/sys/kernel/core_pattern", "fs.suid_dumpable": "/proc/sys/fs/suid_dumpable"}
_RES = {"core": resource.RLIMIT_CORE, "fsize": resource.RLIMIT_FSIZE}


class ApplyError(Error):
    exit_code = 1


def _starttime(pid):
    from coredoctor.snapshot import proc
    try:
        return str(proc.stat(pid)["starttime"])
    except Error:
        return None


def _capture(a):
    k = a["kind"]
    if k == "sysctl":
        with open(_SYSCTL_PATH[a["key"]]) as f:
            return {"value": f.read().rstrip("\n")}
    if k == "mkdir":
        return {"existed": os.path.exists(a["path"])}
    if k == "file":
        prior = {"existed": os.path.exists(a["path"]), "created_dirs": []}
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


def _rl(v):
    return resource.RLIM_INFINITY if v is None else v


def _do(a):
    k = a["kind"]
    if k == "sysctl":
        with open(_SYSCTL_PATH[a["key"]], "w") as f:
            f.write(a["value"])
    elif k == "mkdir":
        if not os.path.isdir(a["path"]):
            os.makedirs(a["path"], exist_ok=True)
            os.chmod(a["path"], int(a["mode"], 8))
    elif k == "file":
        os.makedirs(os.path.dirname(a["path"]), exist_ok=True)
        journal.atomic_write(a["path"], a["content"].encode(), int(a["mode"], 8), 0, 0)
        if a.get("after") == "systemctl daemon-reload" and _systemd_running():
            subprocess.run(["systemctl", "daemon-reload"], check=False)
    elif k == "prlimit":
        resource.prlimit(a["pid"], _RES[a["resource"]], tuple(_rl(v) for v in a["value"]))


def _undo(a, prior):
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
    elif k == "file":
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
            return f"could not restore RLIMIT_CORE of pid {a['pid']}: {e.strerror}"
    return None


def _systemd_running():
    return os.path.isdir("/run/systemd/system")


def apply(fix_id, target, plan):
    """Apply *plan*, journaling first; returns the journal entry."""
    entry = {"id": fix_id, "created": time.time(), "state": "applying",
             "target": {"pid": target["pid"], "comm": target["comm"], "exe": target["exe"], "unit": target["unit"],
                        "starttime": _starttime(target["pid"])},
             "plan": {k: plan[k] for k in ("needs_restart", "security", "warnings", "manual")},
             "actions": []}
    journal.save(entry)
    pause = float(os.environ.get("COREDOCTOR_TEST_APPLY_PAUSE", "0") or 0)  # tests: a window to kill -9 in
    for a in plan["actions"]:
        rec = {"action": a, "prior": _capture(a), "done": False}
        entry["actions"].append(rec)
        journal.save(entry)
        try:
            _do(a)
        except PermissionError as e:
            if a["kind"] != "prlimit":
                raise_apply_error(entry, rec, a, e)
            # a live limit is a convenience: the persistent change still applies at the next start
            rec["error"] = f"{e.strerror}: raising another user's RLIMIT_CORE needs CAP_SYS_RESOURCE"
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


def raise_apply_error(entry, rec, a, e):
    entry["state"] = "failed"
    rec["error"] = f"{e.strerror or e}"
    journal.save(entry)
    notes = rollback_entry(entry)
    raise ApplyError(f"{_describe(a)} failed ({e.strerror or e}); everything done so far was rolled "
                     f"back{'; ' + '; '.join(notes) if notes else ''}")


def rollback_entry(entry):
    notes = []
    # reverse order: the persisted file first, suid_dumpable before core_pattern (the safe order)
    for rec in reversed(entry["actions"]):
        n = _undo(rec["action"], rec["prior"])
        if n:
            notes.append(n)
    entry["state"] = "rolled-back"
    entry["rolled_back"] = time.time()
    entry["notes"] = notes
    journal.save(entry)
    return notes


def rollback(fix_id):
    entry = journal.load(fix_id)
    if entry.get("state") == "rolled-back":
        raise UsageError(f"fix {fix_id} was already rolled back")
    return entry, rollback_entry(entry)


def _describe(a):
    k = a["kind"]
    if k == "sysctl":
        return f"sysctl -w {a['key']}={a['value']}"
    if k == "mkdir":
        return f"mkdir -m {a['mode']} {a['path']}"
    if k == "file":
        return f"write {a['path']}"
    if k == "prlimit":
        return f"prlimit --pid {a['pid']} --{a['resource']}=unlimited:unlimited"
    return k


describe = _describe
