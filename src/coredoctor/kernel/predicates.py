"""
Gate predicates
---------------
One function per gate of :mod:`coredoctor.kernel.table`: ``predicate(world)`` returns None
(no facts to judge by) or a result ``{"status", "evidence", "reason"?, "fixes"?}``: status
pass/fail/warn/unknown, the evidence (what was seen), a reason record
(:mod:`.reasons`) for the verdict sentence, and the remedies (:mod:`.remedies`). The evaluator
calls a predicate only on its gate's branch, so predicates do not check the branch.
"""

import shlex
import stat
from typing import Any, Dict, List, Optional

from coredoctor import programs, runtimes
from coredoctor.kernel import (container_handlers, core_pattern, dumpable as dmod, handlers, landing, namei,
                               observed as O, remedies as R)
from coredoctor.kernel.reasons import reason, who
from coredoctor.kernel.signal import FAULT_SIGNALS, SIG_KERNEL_COREDUMP, decide
from coredoctor.kernel.world import dump_cred, estimate_core_size, limit_text, who_values

Result = Dict[str, Any]
World = Dict[str, Any]


def _r(status: str, evidence: str, why: Optional[Dict[str, Any]] = None,
       fixes: Optional[List[Dict[str, Any]]] = None) -> Result:
    d: Result = {"status": status, "evidence": evidence}
    if why:
        d["reason"] = why
    if fixes:
        d["fixes"] = [f for f in fixes if f]
    return d


def _text(s: str) -> Dict[str, Any]:
    return reason(None, "text", text=s)


def _obs(w: World) -> Optional[O.Observed]:
    """What was observed of a real crash or delivery (evaluate(observed=...)), or None."""
    return w.get("observed")


def _facts(w: World) -> Dict[str, Any]:
    if "facts" not in w:
        w["facts"] = R.facts_of(w["snap"])
    return w["facts"]


# --------------------------------------------------------------------------- shared remedies


_PATTERN_WHY = ("an absolute core name in a directory every process can write; %p and %t keep one crash "
                "from overwriting another")


def _pattern_actions(w: World, why: str = _PATTERN_WHY) -> List[Dict[str, Any]]:
    """An absolute core_pattern in a sticky world-writable /var/crash, persisted."""
    return [R.mkdir(R.DEFAULT_DIR, "1777", "where the cores go (sticky like /tmp: each core is a 0600 file of "
                    "its owner)", risk="a world-writable (sticky) directory: any user may create files there"),
            R.sysctl("kernel.core_pattern", R.DEFAULT_PATTERN, why),
            R.sysctl_persist({"kernel.core_pattern": R.DEFAULT_PATTERN}, _facts(w))]


def _pattern_fix(w: World, why: str) -> Dict[str, Any]:
    return R.fix(f"Point kernel.core_pattern at a writable directory ({why})", _pattern_actions(w))


def _limit_actions(w: World, resource: str = "core") -> List[Dict[str, Any]]:
    proc = w["proc"]
    acts = [R.prlimit(proc["pid"], resource, f"RLIMIT_{resource.upper()} of the running process "
                      "(takes effect at once)")]
    if resource != "core":
        return acts
    if proc.get("unit") and _in_machine(w):
        pass  # a unit of an nspawn machine's own systemd: a host drop-in does not reach it (origin/units.py
        # proposes the drop-in inside the machine)
    elif proc.get("unit"):
        acts.append(R.dropin(proc["unit"], "core", ["[Service]", "LimitCORE=infinity"],
                             "LimitCORE= for the next start of the unit"))
    else:
        acts.append(R.manual("make RLIMIT_CORE persistent where the program is started ('ulimit -c unlimited' "
                             "in its start script, or /etc/security/limits.d for login sessions)",
                             "a live limit is lost when the process is started again",
                             ["# persist: 'ulimit -c unlimited' in the script that starts it, or "
                              "'* soft core unlimited' in /etc/security/limits.d/ for login sessions"]))
    return acts


def _in_machine(w: World) -> bool:
    """Is the process's unit one of another systemd's, the init of its own pid namespace (an nspawn
    machine booted with -b: origin.unitfile.manager_of)?"""
    from coredoctor.origin import unitfile
    proc = w["proc"]
    if len(proc.get("nspid") or [1]) <= 1:
        return False
    snap = w.get("snap") or {}
    by_pid = {p["pid"]: p for p in snap.get("processes") or [] if isinstance(p, dict) and "pid" in p}
    return unitfile.manager_of(by_pid, proc) is not None


def _limit_fix(w: World) -> Dict[str, Any]:
    return R.fix("Raise RLIMIT_CORE of the running process (takes effect now) and where it comes from",
                 _limit_actions(w))


def _restart(w: World, why: str) -> Dict[str, Any]:
    return R.restart(w["proc"], why)


# --------------------------------------------------------------------------- gates


def signal(w: World) -> Result:
    proc, k = w["proc"], w["kernel"]
    nspid = proc.get("nspid") or [proc["pid"]]
    status, case, ev = decide(w["signal"], w["how"], k["signals"], proc.get("sig") or {},
                              proc.get("thread_blocked"), proc.get("tracer_pid", 0),
                              ns_init=len(nspid) > 1 and nspid[-1] == 1, global_init=proc["pid"] == 1)
    if status == "unknown" and case == "handler":
        known = programs.reraising_handler(proc.get("exe"), w["signal"])
        rt = runtimes.decide(proc.get("runtime"), w["signal"], w["how"])
        if known:
            status, ev = "pass", f"{w['signal']} has a handler installed (SigCgt), known to re-raise: {known}"
        elif rt is not None:
            status, ev = rt[0], f"{w['signal']} has a handler installed (SigCgt): {rt[1]}"
    fixes = None
    if status == "fail" and w["signal"] in FAULT_SIGNALS and w["how"] == "kill":
        fixes = [R.fix("A real fault still dumps; only kill-sent signals are dropped this way",
                       [R.manual("a real fault still dumps; only kill-sent signals are dropped this way",
                                 "the signal's disposition is the program's own choice")])]
    res = _r(status, ev, _text(ev) if status in ("fail", "unknown") else None, fixes)
    obs = _obs(w)
    if obs is not None and obs.signal == w["signal"] and w["signal"] in SIG_KERNEL_COREDUMP:
        # the kernel delivered it and its default action ran: whatever masks, handlers or a
        # tracer the snapshot shows, they did not stop it
        res = O.settle(res, "pass", f"the kernel delivered {w['signal']} and ran its default action")
        res.pop("fixes", None)
    return res


def kernel_config(w: World) -> Result:
    if not w["kernel"]["features"].get("coredump", True):
        return _r("fail", "/proc/sys/kernel/core_pattern does not exist: the kernel is built without "
                  "CONFIG_COREDUMP, so vfs_coredump() is an empty stub", reason(None, "no-coredump-config"))
    return _r("pass", "core dumps are built in (kernel.core_pattern exists)")


def dumpable(w: World) -> Result:
    v = w["dumpable"]
    d = w["proc"].get("dumpable") or {}
    if v == dmod.SUID_DUMP_DISABLE:
        info = w["cause_info"]
        cause, cev = info["cause"], info["evidence"]
        why = reason(None, "not-dumpable", cause=cause, via=info.get("via"), origin=info.get("origin"),
                     origin_comm=info.get("origin_comm"), to=info.get("to"), suid_dumpable_now=w["sysctl"].get(
                         "fs.suid_dumpable"), **{"from": info.get("from")})
        return _r("fail", f"dumpable=0 ({d.get('evidence')}); cause {cause}: {cev}", why, [_dumpable_fix(w, cause)])
    obs = _obs(w)
    then = str(obs.sysctls.get("fs.suid_dumpable", "")) if obs is not None else ""
    if v == dmod.SUID_DUMP_ROOT and then == "0":
        # SUID_DUMP_ROOT is only ever copied from fs.suid_dumpable (commit_creds(), begin_new_exec());
        # the crashed process made the same change while it was 0
        note = (obs.sysctl_notes.get("fs.suid_dumpable") if obs is not None else None) or "at the crash's time"
        model = _r("pass", f"dumpable=2 now ({d.get('source', 'unknown')}), copied from fs.suid_dumpable at its "
                   "credential change or set-id exec")
        ev = (f"fs.suid_dumpable was 0 ({note}); dumpable=2 is copied from fs.suid_dumpable at a credential "
              "change (commit_creds()) or a set-id exec, so the crashed process had been made dumpable 0 the "
              "same way")
        return O.settle(model, "fail", ev, reason(None, "text", text=f"observed: {ev}"))
    if v == dmod.SUID_DUMP_ROOT:
        return _r("pass", f"dumpable=2 (SUID_DUMP_ROOT; {d.get('source', 'unknown')}): it dumps as root, only to "
                  "an absolute path or a pipe/socket")
    return _r("pass", f"dumpable=1 ({d.get('evidence')})")


_SUID2_RISK = ("fs.suid_dumpable=2 is host-wide: every process that changed credentials (set-id programs, "
               "privilege-dropping daemons) will dump too, as root-owned 0600 files; cores can hold secrets "
               "(keys, passwords, session data)")


def _dumpable_fix(w: World, cause: str) -> Dict[str, Any]:
    proc = w["proc"]
    if cause == "prctl":
        extra = risk = None
        if proc.get("comm") in programs.DELIBERATELY_UNDUMPABLE:
            extra = f" ({proc.get('comm')} does this on purpose: its memory holds secrets)"
            risk = f"{proc.get('comm')} makes itself non-dumpable on purpose: its memory holds secrets"
        return R.fix("The program disabled dumping itself" + (extra or "") + "; enable it in the program's "
                     "own configuration, or take a core of the live process with gcore",
                     [R.manual("the program turned dumping off itself (prctl(PR_SET_DUMPABLE, 0)); no sysctl "
                               "changes that: enable dumps in its own configuration, or take a live core with "
                               "gcore", "prctl(PR_SET_DUMPABLE, 0) is the program's own decision",
                               [f"gcore -o /var/crash/core.{shlex.quote(str(proc.get('comm')))} {proc['pid']}"
                                "   # needs gdb and CAP_SYS_PTRACE"], risk=risk)])
    parsed = w["parsed"]
    acts: List[Dict[str, Any]] = []
    if parsed["kind"] == "file" and not parsed["absolute"]:
        acts += _pattern_actions(w, "fs.suid_dumpable=2 dumps only to an absolute path (or a pipe/socket): set "
                                 "it first, or the kernel refuses relative names")[:2]
        persist = {"kernel.core_pattern": R.DEFAULT_PATTERN, "fs.suid_dumpable": "2"}
    else:
        if parsed["kind"] == "file":
            dirpath, _ = core_pattern.split_dir(core_pattern.expand(parsed, {})["parts"])
            if dirpath and dirpath.startswith("/") and _facts(w)["dirs"].get(dirpath) is False:
                acts.append(R.mkdir(dirpath, "1777", "the pattern's directory"))
        persist = {"fs.suid_dumpable": "2"}
    switch = programs.own_switch(proc.get("exe"))
    if switch:
        acts.append(R.daemon_option(str(proc.get("comm")), f"alternative with a smaller blast radius: {switch}",
                                    "the daemon's own switch keeps only this program dumpable"))
    acts += [R.sysctl("fs.suid_dumpable", 2, "processes that changed credentials dump again, as root",
                      risk=_SUID2_RISK),
             R.sysctl_persist(persist, _facts(w)),
             _restart(w, "its dumpable flag was copied at its privilege change; only a restart re-reads "
                         "fs.suid_dumpable")]
    return R.fix("Set fs.suid_dumpable=2 (cores of such processes are written as root, mode 0600, only to an "
                 "absolute path or a pipe/socket; they may hold secrets), then restart the process: the flag "
                 "is copied at the moment of the privilege change", acts)


def rlimit_core(w: World) -> Result:
    proc, kind = w["proc"], w["kind"]
    soft, hard = ((proc.get("limits") or {}).get("core") or [None, None])
    lim = f"RLIMIT_CORE soft {limit_text(soft)} (hard {limit_text(hard)})"
    if kind == "pipe":
        if soft == 1:
            return _r("fail", f"{lim}: 1 marks a recursive crash of a pipe helper (umh_pipe_setup()), so the "
                      "kernel aborts (\"RLIMIT_CORE is set to 1, aborting core\")",
                      reason(None, "rlimit-core-one"), [_limit_fix(w)])
        return _r("pass", f"{lim}: ignored in pipe mode (cprm.limit = RLIM_INFINITY); the helper may read it via %c")
    if kind == "socket":
        return _r("pass", f"{lim}: ignored completely in socket mode")
    page = w["kernel"].get("page_size", 4096)
    if soft is not None and soft < page:
        return _r("fail", f"{lim} is below binfmt->min_coredump ({page} bytes): the file branch gives up "
                  "silently", reason(None, "rlimit-core-below-page", soft=soft, page=page), [_limit_fix(w)])
    est = estimate_core_size(proc)
    if soft is not None and est and soft < est:
        res = _r("warn", f"{lim} is less than the process's anonymous memory (~{est} bytes): the core will "
                 "be truncated", fixes=[_limit_fix(w)])
    else:
        res = _r("pass", lim)
    obs = _obs(w)
    if O.cut_by(obs, soft):
        assert obs is not None
        ev = f"{O.cut_text(obs)}, at {lim}: dump_emit() stops writing at RLIMIT_CORE"
        return O.settle(dict(res, fixes=[_limit_fix(w)]), "fail", ev, _text(f"observed: {ev}"))
    return res


def suid_path(w: World) -> Optional[Result]:
    if w["dumpable"] != dmod.SUID_DUMP_ROOT:
        return None
    if w["exp"]["absolute"]:
        return _r("pass", "dumpable=2 and the core name is absolute")
    name = core_pattern.render(w["exp"]["parts"])
    return _r("fail", f"dumpable=2 and the core name {name!r} is not absolute: \"can only dump core to a "
              "fully qualified path, skipping core dump\"",
              reason(None, "suid-relative", pattern=w["sysctl"].get("kernel.core_pattern")),
              [R.fix("Use an absolute core_pattern (or a pipe) for processes in dump mode 2", _pattern_actions(w))])


def core_dir(w: World) -> Optional[Result]:
    key, base, d, _ = w["view"]
    if d is None:
        return _r("unknown", "the directory part of the core name depends on a value known only at crash time "
                  f"({core_pattern.render(w['exp']['parts'])})")
    facts = (w["snap"].get("paths") or {}).get(key)
    if facts is None:
        return _r("unknown", f"the snapshot has no facts about {d} as this process sees it")
    where = "the host root (dumpable=2 opens from init_task's root)" if base == "/" else (
        "its cwd" if key.startswith("cwd:") else "its root")
    shown = d if d.startswith("/") else (f"{w['proc'].get('cwd')}/{d}" if d != "." else (w["proc"].get("cwd") or "."))
    if not facts.get("exists"):
        err = facts.get("error")
        if err in ("ENOENT", "ENOTDIR", "ELOOP"):
            fix = (R.fix(f"Create {shown}", [R.mkdir(shown, "1777", "the pattern's directory")])
                   if d.startswith("/") else _pattern_fix(w, "the relative directory is missing"))
            return _r("fail", f"{shown} (from {where}) cannot be reached: {err} at {facts.get('missing', d)}; "
                      "the open fails silently", reason(None, "dir-missing", dir=shown), [fix])
        return _r("unknown", f"could not read {shown}: {err}")
    cred = dump_cred(w)
    wv = who_values(w)
    for comp in facts["walk"][:-1]:
        if not namei.may_access(comp, cred, namei.MAY_EXEC):
            return _r("fail", f"{who(wv)} may not search {comp['path']} (mode {stat.filemode(comp['mode'])} "
                      f"{comp['uid']}:{comp['gid']}): EACCES, silent" + landing.userns_note(w["proc"], cred["fsuid"]),
                      reason(None, "dir-unreachable", dir=shown, component=comp["path"], who=wv),
                      [_pattern_fix(w, "the process cannot reach the current one")])
    last = facts["walk"][-1]
    if not namei.may_access(last, cred, namei.MAY_WRITE | namei.MAY_EXEC):
        why = reason(None, "dir-not-writable", dir=shown, who=wv)
        if not d.startswith("/") and (w["proc"].get("cwd") == "/"):
            why = reason(None, "cwd-root-not-writable", who=wv)
        return _r("fail", f"{shown} (mode {stat.filemode(last['mode'])} {last['uid']}:{last['gid']}) is not "
                  f"writable and searchable by {who(wv)}: the open fails with EACCES, silently"
                  + landing.userns_note(w["proc"], cred["fsuid"]),
                  why, [_pattern_fix(w, "the current one is not writable by the process")])
    if (facts.get("fs") or {}).get("readonly"):
        return _r("fail", f"{shown} is on a read-only filesystem: EROFS, silent",
                  reason(None, "dir-readonly", dir=shown), [_pattern_fix(w, "read-only filesystem")])
    return _r("pass", f"{shown} (mode {stat.filemode(last['mode'])} {last['uid']}:{last['gid']}, from {where}) "
              f"is writable by {who(wv)}")


def core_file(w: World) -> Optional[Result]:
    if w["view"][2] is None:
        return None
    proc = w["proc"]
    umask = proc.get("umask")
    if umask is not None and umask & 0o600:
        mode = 0o600 & ~umask
        why = "a umask applies from the next start"
        acts = ([R.dropin(proc["unit"], "umask", ["[Service]", "UMask=0022"],
                          "a umask that keeps the core's 0600 mode", needs_restart=True)] if proc.get("unit") else
                [R.manual("start the program with a umask that keeps owner read/write (e.g. umask 022)",
                          "the core is created with the process's umask", ["# set 'umask 022' where it is started"])])
        res = _r("fail", f"the process's umask is {umask:04o}: the core is created with mode {mode:04o}, and "
                 "the kernel requires (i_mode & 0677) == 0600 (\"cannot preserve file permissions\"); an empty "
                 "file is left", reason(None, "umask", umask=umask, mode=mode),
                 [R.fix("Give the process a umask that keeps owner read/write (e.g. 0022)",
                        acts + [_restart(w, why)])])
        if O.is_empty(_obs(w)):
            res = O.settle(res, "fail", f"an empty core, as the umask {umask:04o} leaves it; " + res["evidence"],
                           res.get("reason"))
        return res
    base_parts = w["view"][3]
    name = core_pattern.render(base_parts)
    if any(p is None for p in base_parts):
        return _r("pass", f"the file name {name} includes a value known only at crash time; no existing file "
                  "to collide with")
    f = ((proc.get("dest") or {}).get(str(w["dumpable"])) or {}).get("file")
    if f is None:
        return _r("pass", f"no facts about an existing {name}")
    if f.get("exists") is None:
        return _r("unknown", f"could not tell whether {name} exists ({f.get('error')})")
    if not f.get("exists"):
        return _r("pass", f"{name} does not exist yet (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600)")
    facts = (w["snap"].get("paths") or {}).get(w["view"][0]) or {}
    dir_inode = facts["walk"][-1] if facts.get("walk") else None
    # never delete a core: the remedy is a name that does not collide
    fix = R.fix(f"Remove the old {name}, or put %p and %t in kernel.core_pattern", _pattern_actions(w))
    if w["dumpable"] == dmod.SUID_DUMP_ROOT:
        return _r("fail", f"{name} exists and dumpable=2 does not unlink it first: O_EXCL fails with EEXIST",
                  reason(None, "file-exists", name=name), [fix])
    if stat.S_ISDIR(f["mode"]):
        return _r("fail", f"{name} exists and is a directory", reason(None, "dir-in-way", name=name), [fix])
    if dir_inode is not None:
        ok, why = namei.may_delete(dir_inode, f, dump_cred(w))
        if not ok:
            return _r("fail", f"{name} exists (owner {f['uid']}) and the process cannot unlink it ({why}): "
                      "O_EXCL fails with EEXIST, silently", reason(None, "old-file", name=name, uid=f["uid"]), [fix])
    return _r("pass", f"an old {name} exists; the kernel unlinks it first (it may)")


def space(w: World) -> Optional[Result]:
    res = _space(w)
    obs = _obs(w)
    if obs is None or not (O.is_empty(obs) or O.is_cut(obs)):
        return res
    proc = w["proc"]
    lim = proc.get("limits") or {}
    fsize = (lim.get("fsize") or [None])[0]
    umask = proc.get("umask")
    model = res or _r("unknown", "no facts about the core's filesystem")
    if O.is_empty(obs):
        if fsize == 0 or (umask is not None and umask & 0o600):
            return res  # explained by RLIMIT_FSIZE 0 (rlimit-fsize) or the umask (core-file)
        ev = ("an empty core file: the kernel created it and could write nothing, and neither the umask nor "
              "RLIMIT_FSIZE explains it: no space then (ENOSPC at the first write)")
    else:
        if O.cut_by(obs, (lim.get("core") or [None])[0]) or O.cut_by(obs, fsize):
            return res  # cut at a limit: rlimit-core or rlimit-fsize
        ev = f"{O.cut_text(obs)}, at neither RLIMIT_CORE nor RLIMIT_FSIZE: the filesystem ran full (ENOSPC)"
    return O.settle(dict(model, fixes=model.get("fixes") or [_space_fix(w)]), "fail", ev, _text(f"observed: {ev}"))


def _space_fix(w: World) -> Dict[str, Any]:
    facts = (w["snap"].get("paths") or {}).get((w["view"] or ("",))[0]) or {}
    d = facts.get("dir") or (w["view"][2] if w["view"] else None) or "."
    return R.fix("Free space on the core's filesystem",
                 [R.manual("free space on the core's filesystem", "a full filesystem leaves an empty core",
                           [f"df -h {shlex.quote(str(d))}"])])


def _space(w: World) -> Optional[Result]:
    if w["view"][2] is None:
        return None
    facts = (w["snap"].get("paths") or {}).get(w["view"][0]) or {}
    fs = facts.get("fs")
    if not fs:
        return None
    cred = dump_cred(w)
    # ext2/3/4 reserved blocks: for fsuid == resuid, a member of resgid, or CAP_SYS_RESOURCE
    # (ext4_has_free_clusters(), fs/ext4/balloc.c); resuid/resgid default to 0
    opts = dict(o.partition("=")[::2] for o in (fs.get("super_options") or "").split(","))
    resuid, resgid = int(opts.get("resuid") or 0), int(opts.get("resgid") or 0)
    root_reserve = (cred["fsuid"] == resuid or (resgid != 0 and resgid in [cred["fsgid"]] + list(cred["groups"]))
                    or namei.has_cap(cred["cap_eff"], namei.CAP_SYS_RESOURCE))
    free = fs["bfree"] if root_reserve else fs["bavail"]
    est = estimate_core_size(w["proc"]) or 0
    if free <= 0:
        return _r("fail", f"no free space where the core goes ({free} bytes"
                  f"{' incl. the reserved blocks' if root_reserve else ''}): an empty file is created",
                  reason(None, "fs-full"),
                  [R.fix("Free space on the core's filesystem",
                         [R.manual("free space on the core's filesystem", "a full filesystem leaves an empty core",
                                   [f"df -h {shlex.quote(str(facts.get('dir')))}"])])])
    if est and free < est:
        return _r("warn", f"{free} bytes free, the process has ~{est} bytes of anonymous memory: the core will "
                  "be truncated (ENOSPC)")
    return _r("pass", f"{free} bytes free (core needs ~{est} bytes)")


def pipe_handler(w: World) -> Result:
    parsed = w["parsed"]
    pl = w["sysctl"].get("kernel.core_pipe_limit") or 0
    note = (f"; core_pipe_limit={pl}: when more than {pl} dumps run at once, this one is skipped" if pl else "")
    if not parsed.get("valid"):
        return _r("fail", "core_pattern is a bare '|': format_corename() fails", reason(None, "pipe-empty"),
                  [_pattern_fix(w, "the pipe names no helper")])
    h = (w["snap"].get("handler") or {}).get("helper") or {}
    path = parsed["helper"]
    fix = R.fix(f"Install {path} or point kernel.core_pattern at an existing helper or an absolute path",
                _pattern_actions(w))
    if not h.get("exists"):
        return _r("fail", f"the pipe helper {path} does not exist ({h.get('error', 'ENOENT')}): "
                  "call_usermodehelper_exec() fails, \"pipe failed\"", reason(None, "helper-missing", path=path), [fix])
    if not h.get("executable"):
        return _r("fail", f"the pipe helper {path} is not an executable regular file: \"pipe failed\"",
                  reason(None, "helper-not-executable", path=path), [fix])
    if h.get("interpreter") and not h.get("interpreter_exists"):
        return _r("fail", f"the pipe helper {path} is a script for {h['interpreter']}, which is missing",
                  reason(None, "interpreter-missing", path=path), [fix])
    return _r("pass", f"the pipe helper {path} exists and is executable (runs as root in the initial "
              f"namespaces){note}")


def _sock_rule(rule_id: str) -> str:
    r = next(r for r in handlers.SOCKET_RULES if r["id"] == rule_id)
    return r["kernel"]


def _sock_fix(summary: str, text: str, why: str, cmds: List[str]) -> Dict[str, Any]:
    return R.fix(summary, [R.manual(text, why, cmds)])


def socket_handler(w: World) -> Result:
    """The socket branch in the kernel's order (kernel.handlers.SOCKET_RULES): the path rules of
    coredump_parse(), the lookup of unix_find_bsd(SOCK_COREDUMP) from init_task's root, then the
    listener (by inode, any network namespace; SOCK_STREAM only)."""
    parsed = w["parsed"]
    h = w["snap"].get("handler") or {}
    path = parsed["path"]
    at = "@@" if parsed.get("protocol") == "request" else "@"
    cmd = ("systemctl start systemd-coredump.socket" if path.startswith("/run/systemd/coredump")
           else f"# start the listener of {path}")
    fix = R.fix(f"Start the server that listens on {path}",
                [R.manual(f"start the server that listens on {path}", "the kernel connects to it at each crash",
                          [cmd])])
    bad = handlers.socket_path_problem(path)
    if bad:
        rid, what = bad
        ev = (f"the core socket path {path!r} {what}: " + (
            "coredump_parse() refuses it at every crash (\"Coredump socket may not ... contain spaces\", "
            "\"format_corename failed, aborting core\")" if rid == "path-space" else
            "check_coredump_socket() refuses such a value (EINVAL); the kernel cannot use it"))
        return _r("fail", ev + f" [{_sock_rule(rid)}]", _text(ev), [_sock_fix(
            "Use a socket path without spaces, absolute, at most 107 bytes",
            f"bind the server at a path without spaces, absolute, at most {handlers.UNIX_PATH_MAX - 1} bytes, "
            f"and point kernel.core_pattern at it ({at}/run/<name>.sock)",
            "the kernel checks the path before it connects", ["# sysctl -w kernel.core_pattern=@/run/<server>.sock"])])
    lk = h.get("lookup") if isinstance(h.get("lookup"), dict) else None
    listeners = [x for x in (h.get("listeners") or []) if isinstance(x, dict)] if isinstance(
        h.get("listeners"), list) else None
    if listeners is None and h.get("listening"):
        listeners = [{"type": h["listening"], "init_net": True}]
    if lk is None:  # a snapshot without the walk: coredoctor's own view of the path
        if not h.get("exists"):
            return _r("fail", f"the core socket {path} does not exist: \"Coredump socket connection failed -2\"",
                      reason(None, "socket-missing", path=path), [fix])
    else:
        root = "init's root (/proc/1/root)" if lk.get("root") != "/" else "coredoctor's root"
        err = lk.get("error")
        if err == "ELOOP" and lk.get("symlink"):
            real = lk.get("resolved")
            ev = (f"{lk['symlink']} in the core socket path {path} is a symlink: the kernel looks the path up "
                  f"with LOOKUP_NO_SYMLINKS, \"Coredump socket connection {path} failed -40\" (ELOOP) "
                  f"[{_sock_rule('lookup-symlink')}]")
            acts = ([R.sysctl("kernel.core_pattern", at + real, "the kernel follows no symlink in the socket path"),
                     R.sysctl_persist({"kernel.core_pattern": at + real}, _facts(w))] if isinstance(real, str)
                    and real.startswith("/") and not handlers.socket_path_problem(real) else
                    [R.manual("name the socket by its real path (no symlinked directory) in kernel.core_pattern",
                              "the kernel follows no symlink in the socket path",
                              [f"# sysctl -w kernel.core_pattern={at}$(realpath {shlex.quote(path)})"])])
            return _r("fail", ev, _text(f"the core socket path {path} goes through a symlink ({lk['symlink']}), "
                                        "which the kernel does not follow"),
                      [R.fix("Name the core socket by its real path", acts)])
        if err:
            if listeners:
                ev = (f"a server listens on {path}, but the path does not exist from {root} "
                      f"({err} at {lk.get('at')}): it was bound in another mount namespace (a private /tmp, "
                      f"a container); the kernel resolves from init_task's root: \"Coredump socket connection "
                      f"{path} failed -2\" [{_sock_rule('lookup-mntns')}]")
                return _r("fail", ev, _text(f"the server on {path} is bound in a mount namespace that the kernel's "
                                            "root does not see"), [_sock_fix(
                                                "Bind the core socket in the host's mount namespace",
                                                f"bind the server's socket in the initial mount namespace (no "
                                                f"PrivateTmp=, not inside a container), at {path}",
                                                "the kernel resolves the path from init_task's root",
                                                ["# systemd: PrivateTmp=no, or a path under /run"])])
            return _r("fail", f"the core socket {path} does not exist from {root} ({err} at {lk.get('at')}): "
                      f"\"Coredump socket connection {path} failed -2\" [{_sock_rule('lookup-missing')}]",
                      reason(None, "socket-missing", path=path), [fix])
        if lk.get("final") != "socket":
            what = {"symlink": "a symlink (the last component is not followed)", "file": "a regular file",
                    "dir": "a directory"}.get(str(lk.get("final")), "not a socket")
            ev = (f"{path} is {what}, not a socket: \"Coredump socket connection {path} failed -111\" "
                  f"(ECONNREFUSED) [{_sock_rule('not-socket')}]")
            return _r("fail", ev, _text(f"the core socket path {path} is {what}, not a socket"),
                      [_sock_fix("Point kernel.core_pattern at the server's socket itself",
                                 f"point kernel.core_pattern at the server's real socket ({at}/path/of/socket)",
                                 "the kernel connects only to a socket inode",
                                 [f"# sysctl -w kernel.core_pattern={at}/path/of/the/socket"])])
        if lk.get("same_mntns") is False and lk.get("root") == "/":
            return _r("unknown", f"{path} exists in coredoctor's mount namespace, which is not the kernel's "
                      "(init_task's root could not be read)")
    if listeners is None:
        if h.get("listening_known") is False:
            return _r("unknown", f"{path} exists, but /proc/1/net/unix could not be read to see whether a server "
                      "listens there")
        listeners = []
    if not listeners:
        return _r("fail", f"{path} is a socket but no server listens there (in any network namespace): "
                  f"\"Coredump socket connection {path} failed -111\" [{_sock_rule('no-listener')}]",
                  reason(None, "socket-not-listening", path=path), [fix])
    types = sorted({str(x.get("type")) for x in listeners})
    if "stream" not in types:
        ev = (f"the server on {path} listens as {'/'.join(types)}; the kernel connects with SOCK_STREAM: "
              f"\"Coredump socket connection {path} failed -91\" (EPROTOTYPE) [{_sock_rule('wrong-type')}]")
        return _r("fail", ev, _text(f"the server on {path} is {'/'.join(types)}, the kernel connects only to "
                                    "SOCK_STREAM"),
                  [_sock_fix("Make the core server listen with SOCK_STREAM",
                             f"make the server on {path} listen with SOCK_STREAM", "coredump_sock_connect() creates "
                             "a SOCK_STREAM socket", ["# socket(AF_UNIX, SOCK_STREAM, 0)"])])
    where = ("init_net" if any(x.get("init_net") for x in listeners) else
             "another network namespace (path sockets are found by inode: it still connects)")
    proto = ("@@ request protocol: the server answers each coredump_req with a coredump_ack (KERNEL: write the "
             "core, USERSPACE: nothing written but WCOREDUMP set, REJECT: no core; the kernel waits for the ack "
             "with no timeout)" if at == "@@" else "@: the kernel writes the core at once")
    owner = f", socket file of uid {lk['uid']}" if lk and isinstance(lk.get("uid"), int) else ""
    return _r("pass", f"a stream socket listens on {path} (resolved from init's root{owner}; listener in {where}); "
              f"{proto}; a server that stops reading stalls the crashing process in state S until it reads "
              "or the process gets SIGKILL (then no WCOREDUMP, a partial core)")


def handler_policy(w: World) -> Result:
    parsed = w["parsed"]
    h = w["snap"].get("handler") or {}
    if w["kind"] == "pipe":
        name = handlers.identify(parsed["helper"])
        tokens = parsed["tokens"][1:]
    else:
        name = handlers.identify(parsed["path"])
        name = name if name == "systemd-coredump" else (
            "socket-request" if parsed.get("protocol") == "request" else "socket-unknown")
        tokens = []
        if name == "systemd-coredump":
            h = dict(h, systemd_coredump={"conf": (h.get("systemd_coredump") or {}).get("conf", {}),
                                          "socket": h.get("listening")})
    soft = ((w["proc"].get("limits") or {}).get("core") or [None])[0]
    status, ev, fix = handlers.policy(name, h, tokens, soft, w["kernel"].get("page_size", 4096),
                                      estimate_core_size(w["proc"]), exe=w["proc"].get("exe"), signal=w["signal"])
    status, ev = container_handlers.note(w, str(name), status, ev)  # a process in a container
    fixes = None
    if fix:
        acts = list(fix.get("actions") or [])
        if fix.get("limit"):
            acts = _limit_actions(w)
        if fix.get("pattern"):
            acts += _pattern_actions(w)
        fixes = [R.fix(fix["summary"], acts)]
    return _r(status, ev, _text(ev) if status == "fail" else None, fixes)


def rlimit_fsize(w: World) -> Result:
    res = _rlimit_fsize(w)
    obs = _obs(w)
    soft = ((w["proc"].get("limits") or {}).get("fsize") or [None])[0]
    if soft == 0 and O.is_empty(obs):
        return O.settle(res, "fail", "an empty core file, as RLIMIT_FSIZE 0 leaves it (EFBIG at the first write)",
                        res.get("reason"))
    core_soft = ((w["proc"].get("limits") or {}).get("core") or [None])[0]
    if O.cut_by(obs, soft) and not O.cut_by(obs, core_soft):
        assert obs is not None
        ev = f"{O.cut_text(obs)}, at RLIMIT_FSIZE soft {soft}: the write past it fails with EFBIG"
        return O.settle(dict(res, fixes=res.get("fixes") or [R.fix("Raise RLIMIT_FSIZE", _limit_actions(w, "fsize"))]),
                        "fail", ev, _text(f"observed: {ev}"))
    return res


def _rlimit_fsize(w: World) -> Result:
    soft = ((w["proc"].get("limits") or {}).get("fsize") or [None])[0]
    if soft is None:
        return _r("pass", "RLIMIT_FSIZE unlimited")
    fix = R.fix("Raise RLIMIT_FSIZE", _limit_actions(w, "fsize"))
    if soft == 0:
        return _r("fail", "RLIMIT_FSIZE is 0: the first write of the core fails with EFBIG (the SIGXFSZ is "
                  "dropped) and an empty file is left", reason(None, "fsize-zero"), [fix])
    est = estimate_core_size(w["proc"])
    if est and soft < est:
        return _r("warn", f"RLIMIT_FSIZE soft {soft} is less than the core (~{est} bytes): the core is truncated "
                  "at that size", fixes=[fix])
    return _r("pass", f"RLIMIT_FSIZE soft {soft}")


def coredump_filter(w: World) -> Optional[Result]:
    f = w["proc"].get("coredump_filter")
    if f is None:
        return None
    if not int(f, 16) & 1:
        return _r("warn", f"coredump_filter {f} leaves out anonymous private memory (bit 0): the heap and "
                  "stacks will be missing from the core", fixes=[R.fix(
                      "Include anonymous memory in the core",
                      [R.manual("include anonymous memory in the core (coredump_filter bit 0)",
                                "the heap and stacks are what a core is read for",
                                [f"echo 0x33 > /proc/{w['proc']['pid']}/coredump_filter"])])])
    return _r("pass", f"coredump_filter {f}")
