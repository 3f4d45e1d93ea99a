"""
Gates of the core-dump path
---------------------------
The kernel's decision path as an ordered table of :class:`Gate` records, and a pure evaluator
over a snapshot (see kernel-coredump-path.md). Order follows the kernel: the signal side
(``get_signal()``), then ``vfs_coredump()`` (``do_coredump()`` before 6.17), then the file, pipe
or socket branch, then what user space does with the core.

When a fact is not known exactly (dumpability 0 or 2 on a kernel without the pidfd query),
the model is evaluated once per possible value ("world") and the worlds are merged: an
answer is given only when every world agrees, otherwise ``dumps`` is ``None`` with the reason.
"""

import stat

from coredoctor import programs
from coredoctor.kernel import core_pattern, dumpable as dmod, handlers, namei
from coredoctor.kernel.signal import FAULT_SIGNALS, SIG_KERNEL_COREDUMP, disposition

__all__ = ["Gate", "GATES", "GATE_IDS", "evaluate", "pattern_context", "destination_views",
           "estimate_core_size"]


class Gate:
    """One gate: ``predicate(world)`` returns None (not on this path) or a result dict with
    ``status`` (pass/fail/warn/unknown), ``evidence``, and optionally ``summary`` (a clause
    for the verdict sentence) and ``fix``."""
    __slots__ = ("id", "order", "branch", "title", "kernel_ref", "predicate")

    def __init__(self, id, order, branch, title, kernel_ref, predicate):  # noqa: A002 - the gate id
        self.id, self.order, self.branch, self.title = id, order, branch, title
        self.kernel_ref, self.predicate = kernel_ref, predicate

    def __repr__(self):
        return f"Gate({self.id!r}, {self.order})"


def _r(status, evidence, summary=None, fix=None, **extra):
    d = {"status": status, "evidence": evidence}
    if summary:
        d["summary"] = summary
    if fix:
        d["fix"] = fix if isinstance(fix, list) else [fix]
    d.update(extra)
    return d


# --------------------------------------------------------------------------- helpers


def estimate_core_size(proc):
    """A lower bound of the core's data: anonymous + shmem resident memory (what the default
    coredump_filter 0x33 writes; file-backed text is not dumped)."""
    m = proc.get("mem") or {}
    if m.get("anon") is None:
        return m.get("rss")
    return (m.get("anon") or 0) + (m.get("shmem") or 0)


def pattern_context(proc, kernel, signo, dumpable_value):
    """Known values of format_corename()'s specifiers for this process."""
    c = proc["creds"]
    core = (proc.get("limits") or {}).get("core") or [None, None]
    soft = core[0]
    single = proc.get("threads", 1) == 1
    # %e is the comm of the thread that faults (current->comm): known only if every thread
    # has the same name; %E/%f are the exe path as seen from the task's root (d_path keeps a
    # " (deleted)" suffix), which the host's readlink shows only for a task in our root
    comm_known = single or proc.get("thread_comms_same") is True
    exe_known = proc.get("root_is_host") is not False
    return {
        "pid": proc["pid"], "pid_ns": (proc.get("nspid") or [proc["pid"]])[-1],
        "tid": proc["pid"] if single else None,
        "tid_ns": (proc.get("nspid") or [proc["pid"]])[-1] if single else None,
        "uid": c["uid"][0], "gid": c["gid"][0], "dumpable": dumpable_value, "signo": signo,
        "hostname": kernel.get("hostname") if proc.get("uts_is_host", True) is not False else None,
        "comm": proc.get("comm") if comm_known else None,
        "exe": (proc.get("exe") or None) if exe_known else None,
        "rlimit_core": 18446744073709551615 if soft is None else soft,
    }


def _parsed(snap):
    return core_pattern.parse(snap["sysctl"].get("kernel.core_pattern") or "",
                              snap["kernel"]["features"].get("socket_pattern", False))


def destination_views(snap, proc, signo, dumpable_value, exp=None):
    """For file mode: ``(key, base, dirpath, base_parts)`` of the directory the kernel opens in,
    or None. *base* is a host path: ``/proc/PID/root`` (absolute, dumpable 1), ``/proc/PID/cwd``
    (relative) or ``/`` (dumpable 2 opens from init_task's root, 4.x+)."""
    if exp is None:
        exp = _expand(snap, proc, signo, dumpable_value)
    if exp["kind"] != "file":
        return None
    d, base_parts = core_pattern.split_dir(exp["parts"])
    if d is None:
        return ("", None, None, base_parts)
    pid = proc["pid"]
    if exp["absolute"]:
        if dumpable_value == dmod.SUID_DUMP_ROOT:
            return (f"init:{d}", "/", d, base_parts)
        return (f"root:{proc.get('root_id')}:{d}", f"/proc/{pid}/root", d, base_parts)
    return (f"cwd:{proc.get('cwd_id')}:{d}", f"/proc/{pid}/cwd", d, base_parts)


def _expand(snap, proc, signo, dumpable_value):
    ctx = pattern_context(proc, snap["kernel"], signo, dumpable_value)
    return core_pattern.expand(_parsed(snap), ctx, snap["sysctl"].get("kernel.core_uses_pid") or 0)


def _dump_cred(w):
    c = w["proc"]["creds"]
    fsuid = 0 if w["dumpable"] == dmod.SUID_DUMP_ROOT else c["uid"][3]
    # capabilities count only in the task's own user namespace (capable_wrt_inode_uidgid());
    # a container's "root" has none over the host's inodes
    caps = c.get("cap_eff", "0") if w["proc"].get("userns_is_host") is not False else "0"
    return {"fsuid": fsuid, "fsgid": c["gid"][3], "groups": c.get("groups", []), "cap_eff": caps}


def _who(w):
    cr = _dump_cred(w)
    c = w["proc"]["creds"]
    if w["dumpable"] == dmod.SUID_DUMP_ROOT:
        return f"fsuid 0 (dumpable=2 dumps as root), fsgid {cr['fsgid']}"
    return f"{c.get('user') or c['uid'][3]} (fsuid {cr['fsuid']}, fsgid {cr['fsgid']})"


def _fmt_limit(v):
    return "unlimited" if v is None else str(v)


def _restart_hint(proc):
    if proc.get("unit"):
        return f"systemctl restart {proc['unit']}"
    return f"# restart {proc.get('comm')} (pid {proc['pid']}) the way it is normally started"


# --------------------------------------------------------------------------- gates


def _g_signal(w):
    proc, k = w["proc"], w["kernel"]
    nspid = proc.get("nspid") or [proc["pid"]]
    status, ev = disposition(w["signal"], w["how"], k["signals"], proc.get("sig") or {},
                             proc.get("thread_blocked"), proc.get("tracer_pid", 0),
                             ns_init=len(nspid) > 1 and nspid[-1] == 1, global_init=proc["pid"] == 1)
    if status == "unknown" and ev.endswith("(handler)"):
        known = programs.reraising_handler(proc.get("exe"), w["signal"])
        if known:
            status, ev = "pass", f"{w['signal']} has a handler installed (SigCgt), known to re-raise: {known}"
    summary = None
    fix = None
    if status == "fail":
        summary = ev
        if w["signal"] in FAULT_SIGNALS and w["how"] == "kill":
            fix = {"summary": "A real fault still dumps; only kill-sent signals are dropped this way",
                   "commands": [], "needs_restart": False}
    elif status == "unknown":
        summary = ev
    return _r(status, ev, summary, fix)


def _g_kernel_config(w):
    if not w["kernel"]["features"].get("coredump", True):
        return _r("fail", "/proc/sys/kernel/core_pattern does not exist: the kernel is built without "
                  "CONFIG_COREDUMP, so vfs_coredump() is an empty stub",
                  "this kernel is built without core dump support (CONFIG_COREDUMP=n)")
    return _r("pass", "core dumps are built in (kernel.core_pattern exists)")


def _g_dumpable(w):
    v = w["dumpable"]
    proc = w["proc"]
    d = proc.get("dumpable") or {}
    src = d.get("source", "unknown")
    if v == dmod.SUID_DUMP_DISABLE:
        cause, cev = w["cause_info"]["cause"], w["cause_info"]["evidence"]
        summary = f"it is not dumpable (dumpable=0) {_cause_clause(w, cause)}"
        return _r("fail", f"dumpable=0 ({d.get('evidence')}); cause {cause}: {cev}", summary,
                  _dumpable_fix(w, cause))
    if v == dmod.SUID_DUMP_ROOT:
        return _r("pass", f"dumpable=2 (SUID_DUMP_ROOT; {src}): it dumps as root, only to an absolute path "
                  "or a pipe/socket")
    return _r("pass", f"dumpable=1 ({d.get('evidence')})")


def _cause_clause(w, cause):
    info = w["cause_info"]
    sd = "fs.suid_dumpable was 0"
    inherited = ""
    if info.get("via"):
        inherited = ", and it inherited the flag at fork"
    if cause == "privilege-change":
        frm = (info.get("from") or "").split(":")[0] or None
        change = f"switched from {frm} to {info['to']}" if frm and info.get("to") else "changed its credentials"
        if info.get("via"):
            return (f"since its parent {info.get('origin_comm')} (pid {info['origin']}) {change} while {sd}"
                    f"{inherited}")
        return f"since it {change} while {sd}"
    if cause == "exec":
        who = "it" if not info.get("via") else f"its parent {info.get('origin_comm')} (pid {info['origin']})"
        return f"since {who} executed a set-id or file-capability program while {sd}{inherited}"
    if cause == "prctl":
        who = "it" if not info.get("via") else f"its parent {info.get('origin_comm')} (pid {info['origin']})"
        return f"since {who} turned dumping off with prctl(PR_SET_DUMPABLE, 0){inherited}"
    if cause == "inherited":
        return "since it inherited the flag from its non-dumpable parent"
    return f"(cause unknown; fs.suid_dumpable is {w['sysctl'].get('fs.suid_dumpable')} now)"


def write_lines_cmd(path, *lines):
    """A shell command that writes *lines* to *path* -- ``printf '%s\\n'``, so that core_pattern
    specifiers such as %e and %p are written as they are, not taken as printf directives."""
    quoted = " ".join("'" + ln.replace("'", "'\\''") + "'" for ln in lines)
    return f"printf '%s\\n' {quoted} > {path}"


def _safe_pattern_cmds(w):
    parsed = _parsed(w["snap"])
    cmds = []
    if parsed["kind"] == "file" and not parsed["absolute"]:
        cmds += ["mkdir -p /var/crash && chmod 1777 /var/crash",
                 "sysctl -w kernel.core_pattern=/var/crash/core.%e.%p.%t   # absolute first: mode 2 refuses relative names"]
        persist = ["kernel.core_pattern = /var/crash/core.%e.%p.%t", "fs.suid_dumpable = 2"]
    else:
        persist = ["fs.suid_dumpable = 2"]
    cmds += ["sysctl -w fs.suid_dumpable=2",
             write_lines_cmd("/etc/sysctl.d/90-coredoctor.conf", *persist) + "   # sorts after 50-coredump.conf"]
    return cmds


def _dumpable_fix(w, cause):
    proc = w["proc"]
    if cause == "prctl":
        extra = ""
        if proc.get("comm") in programs.DELIBERATELY_UNDUMPABLE:
            extra = f" ({proc.get('comm')} does this on purpose: its memory holds secrets)"
        return {"summary": "The program disabled dumping itself" + extra + "; enable it in the program's "
                "own configuration, or take a core of the live process with gcore",
                "commands": [f"gcore -o /var/crash/core.{proc.get('comm')} {proc['pid']}   # needs gdb and CAP_SYS_PTRACE"],
                "needs_restart": False}
    return {"summary": "Set fs.suid_dumpable=2 (cores of such processes are written as root, mode 0600, "
            "only to an absolute path or a pipe/socket; they may hold secrets), then restart the process: "
            "the flag is copied at the moment of the privilege change",
            "commands": _safe_pattern_cmds(w) + [_restart_hint(proc)],
            "needs_restart": True}


def _g_rlimit_core(w):
    proc, kind = w["proc"], w["kind"]
    soft, hard = ((proc.get("limits") or {}).get("core") or [None, None])
    lim = f"RLIMIT_CORE soft {_fmt_limit(soft)} (hard {_fmt_limit(hard)})"
    live = {"summary": "Raise RLIMIT_CORE of the running process (takes effect now) and where it comes from",
            "commands": [f"prlimit --pid {proc['pid']} --core=unlimited:unlimited"] + _persist_limit(proc),
            "needs_restart": False}
    if kind == "pipe":
        if soft == 1:
            return _r("fail", f"{lim}: 1 marks a recursive crash of a pipe helper (umh_pipe_setup()), so the "
                      "kernel aborts (\"RLIMIT_CORE is set to 1, aborting core\")",
                      "its RLIMIT_CORE is 1, which pipe mode treats as a crashing core helper", live)
        return _r("pass", f"{lim}: ignored in pipe mode (cprm.limit = RLIM_INFINITY); the helper may read it via %c")
    if kind == "socket":
        return _r("pass", f"{lim}: ignored completely in socket mode")
    page = w["kernel"].get("page_size", 4096)
    if soft is not None and soft < page:
        return _r("fail", f"{lim} is below binfmt->min_coredump ({page} bytes): the file branch gives up "
                  "silently", f"its RLIMIT_CORE is {soft} (below one page, {page} bytes)", live)
    est = estimate_core_size(proc)
    if soft is not None and est and soft < est:
        return _r("warn", f"{lim} is less than the process's anonymous memory (~{est} bytes): the core will "
                  "be truncated", fix=live)
    return _r("pass", lim)


def _persist_limit(proc):
    if proc.get("unit"):
        u = proc["unit"]
        return [f"mkdir -p /etc/systemd/system/{u}.d",
                write_lines_cmd(f"/etc/systemd/system/{u}.d/90-coredoctor-core.conf", "[Service]", "LimitCORE=infinity"),
                "systemctl daemon-reload   # applies from the next start"]
    return ["# persist: 'ulimit -c unlimited' in the script that starts it, or '* soft core unlimited' in "
            "/etc/security/limits.d/ for login sessions"]


def _g_suid_path(w):
    if w["kind"] != "file" or w["dumpable"] != dmod.SUID_DUMP_ROOT:
        return None
    if w["exp"]["absolute"]:
        return _r("pass", "dumpable=2 and the core name is absolute")
    name = core_pattern.render(w["exp"]["parts"])
    return _r("fail", f"dumpable=2 and the core name {name!r} is not absolute: \"can only dump core to a "
              "fully qualified path, skipping core dump\"",
              f"it is dumpable=2 and kernel.core_pattern {w['sysctl'].get('kernel.core_pattern')!r} is relative",
              {"summary": "Use an absolute core_pattern (or a pipe) for processes in dump mode 2",
               "commands": ["mkdir -p /var/crash && chmod 1777 /var/crash",
                            "sysctl -w kernel.core_pattern=/var/crash/core.%e.%p.%t"],
               "needs_restart": False})


def _pattern_fix(reason):
    return {"summary": f"Point kernel.core_pattern at a writable directory ({reason})",
            "commands": ["mkdir -p /var/crash && chmod 1777 /var/crash",
                         "sysctl -w kernel.core_pattern=/var/crash/core.%e.%p.%t",
                         write_lines_cmd("/etc/sysctl.d/90-coredoctor.conf", "kernel.core_pattern = /var/crash/core.%e.%p.%t")],
            "needs_restart": False}


def _g_core_dir(w):
    if w["kind"] != "file" or w["view"] is None:
        return None
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
            return _r("fail", f"{shown} (from {where}) cannot be reached: {err} at {facts.get('missing', d)}; "
                      "the open fails silently",
                      f"the core directory {shown} does not exist",
                      {"summary": f"Create {shown}", "commands": [f"mkdir -p {shown}"], "needs_restart": False}
                      if d.startswith("/") else _pattern_fix("the relative directory is missing"))
        return _r("unknown", f"could not read {shown}: {err}")
    cred = _dump_cred(w)
    walk = facts["walk"]
    for comp in walk[:-1]:
        if not namei.may_access(comp, cred, namei.MAY_EXEC):
            return _r("fail", f"{_who(w)} may not search {comp['path']} (mode {stat.filemode(comp['mode'])} "
                      f"{comp['uid']}:{comp['gid']}): EACCES, silent",
                      f"it may not reach {shown} ({comp['path']} is not searchable by {_who(w)})",
                      _pattern_fix("the process cannot reach the current one"))
    last = walk[-1]
    if not namei.may_access(last, cred, namei.MAY_WRITE | namei.MAY_EXEC):
        summary = f"{shown} is not writable by {_who(w)}"
        if not d.startswith("/") and (w["proc"].get("cwd") == "/"):
            summary = f"its cwd is / and {_who(w)} may not write there (kernel.core_pattern is relative)"
        return _r("fail", f"{shown} (mode {stat.filemode(last['mode'])} {last['uid']}:{last['gid']}) is not "
                  f"writable and searchable by {_who(w)}: the open fails with EACCES, silently",
                  summary, _pattern_fix("the current one is not writable by the process"))
    fs = facts.get("fs") or {}
    if fs.get("readonly"):
        return _r("fail", f"{shown} is on a read-only filesystem: EROFS, silent",
                  f"{shown} is on a read-only filesystem", _pattern_fix("read-only filesystem"))
    return _r("pass", f"{shown} (mode {stat.filemode(last['mode'])} {last['uid']}:{last['gid']}, from {where}) "
              f"is writable by {_who(w)}")


def _g_core_file(w):
    if w["kind"] != "file" or w["view"] is None or w["view"][2] is None:
        return None
    proc = w["proc"]
    umask = proc.get("umask")
    if umask is not None and umask & 0o600:
        mode = 0o600 & ~umask
        return _r("fail", f"the process's umask is {umask:04o}: the core is created with mode {mode:04o}, and "
                  "the kernel requires (i_mode & 0677) == 0600 (\"cannot preserve file permissions\"); an empty "
                  "file is left", f"its umask {umask:04o} makes the core file mode {mode:04o}, which the kernel "
                  "refuses", {"summary": "Give the process a umask that keeps owner read/write (e.g. 0022)",
                              "commands": ([f"mkdir -p /etc/systemd/system/{proc['unit']}.d",
                                            write_lines_cmd(f"/etc/systemd/system/{proc['unit']}.d/90-coredoctor-umask.conf", "[Service]", "UMask=0022"),
                                            "systemctl daemon-reload", _restart_hint(proc)]
                                           if proc.get("unit") else ["# set 'umask 022' where it is started", _restart_hint(proc)]),
                              "needs_restart": True})
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
    fix = {"summary": f"Remove the old {name}, or put %p and %t in kernel.core_pattern",
           "commands": ["sysctl -w kernel.core_pattern=/var/crash/core.%e.%p.%t"], "needs_restart": False}
    if w["dumpable"] == dmod.SUID_DUMP_ROOT:
        return _r("fail", f"{name} exists and dumpable=2 does not unlink it first: O_EXCL fails with EEXIST",
                  f"a file {name} already exists where the core would go", fix)
    if stat.S_ISDIR(f["mode"]):
        return _r("fail", f"{name} exists and is a directory", f"a directory {name} is in the way", fix)
    if dir_inode is not None:
        ok, why = namei.may_delete(dir_inode, f, _dump_cred(w))
        if not ok:
            return _r("fail", f"{name} exists (owner {f['uid']}) and the process cannot unlink it ({why}): "
                      "O_EXCL fails with EEXIST, silently", f"an old {name} owned by uid {f['uid']} is in the way", fix)
    return _r("pass", f"an old {name} exists; the kernel unlinks it first (it may)")


def _g_space(w):
    if w["kind"] != "file" or w["view"] is None or w["view"][2] is None:
        return None
    facts = (w["snap"].get("paths") or {}).get(w["view"][0]) or {}
    fs = facts.get("fs")
    if not fs:
        return None
    cred = _dump_cred(w)
    # ext2/3/4 reserved blocks: for fsuid == resuid, a member of resgid, or CAP_SYS_RESOURCE
    # (ext4_has_free_clusters(), fs/ext4/balloc.c); resuid/resgid default to 0
    opts = dict(o.partition("=")[::2] for o in (fs.get("super_options") or "").split(","))
    resuid, resgid = int(opts.get("resuid") or 0), int(opts.get("resgid") or 0)
    root_reserve = (cred["fsuid"] == resuid or (resgid != 0 and resgid in [cred["fsgid"]] + list(cred["groups"]))
                    or namei.has_cap(cred["cap_eff"], namei.CAP_SYS_RESOURCE))
    free = fs["bfree"] if root_reserve else fs["bavail"]
    est = estimate_core_size(w["proc"]) or 0
    if free <= 0:
        return _r("fail", f"no free space where the core goes ({free} bytes{' incl. the reserved blocks' if root_reserve else ''}): "
                  "an empty file is created", "the core's filesystem is full",
                  {"summary": "Free space on the core's filesystem", "commands": [f"df -h {facts.get('dir')}"],
                   "needs_restart": False})
    if est and free < est:
        return _r("warn", f"{free} bytes free, the process has ~{est} bytes of anonymous memory: the core will "
                  "be truncated (ENOSPC)")
    return _r("pass", f"{free} bytes free (core needs ~{est} bytes)")


def _g_pipe_handler(w):
    if w["kind"] != "pipe":
        return None
    parsed = w["parsed"]
    pl = w["sysctl"].get("kernel.core_pipe_limit") or 0
    note = (f"; core_pipe_limit={pl}: when more than {pl} dumps run at once, this one is skipped"
            if pl else "")
    if not parsed.get("valid"):
        return _r("fail", "core_pattern is a bare '|': format_corename() fails", "kernel.core_pattern is an empty pipe")
    h = (w["snap"].get("handler") or {}).get("helper") or {}
    path = parsed["helper"]
    fix = {"summary": f"Install {path} or point kernel.core_pattern at an existing helper or an absolute path",
           "commands": ["sysctl -w kernel.core_pattern=/var/crash/core.%e.%p.%t",
                        "mkdir -p /var/crash && chmod 1777 /var/crash"], "needs_restart": False}
    if not h.get("exists"):
        return _r("fail", f"the pipe helper {path} does not exist ({h.get('error', 'ENOENT')}): "
                  "call_usermodehelper_exec() fails, \"pipe failed\"", f"the core_pattern helper {path} is missing", fix)
    if not h.get("executable"):
        return _r("fail", f"the pipe helper {path} is not an executable regular file: \"pipe failed\"",
                  f"the core_pattern helper {path} is not executable", fix)
    if h.get("interpreter") and not h.get("interpreter_exists"):
        return _r("fail", f"the pipe helper {path} is a script for {h['interpreter']}, which is missing",
                  f"the interpreter of the core_pattern helper {path} is missing", fix)
    return _r("pass", f"the pipe helper {path} exists and is executable (runs as root in the initial "
              f"namespaces){note}")


def _g_socket_handler(w):
    if w["kind"] != "socket":
        return None
    parsed = w["parsed"]
    h = w["snap"].get("handler") or {}
    path = parsed["path"]
    fix = {"summary": f"Start the server that listens on {path}", "commands": [
        "systemctl start systemd-coredump.socket" if path.startswith("/run/systemd/coredump") else f"# start the listener of {path}"],
        "needs_restart": False}
    if not h.get("exists"):
        return _r("fail", f"the core socket {path} does not exist: \"Coredump socket connection failed -2\"",
                  f"nothing listens on the core socket {path} (it does not exist)", fix)
    if h.get("listening") is None and h.get("listening_known") is False:
        return _r("unknown", f"{path} exists, but /proc/1/net/unix could not be read to see whether a server "
                  "listens there")
    if h.get("listening") is None:
        return _r("fail", f"{path} exists but no socket listens there (in the initial network namespace): "
                  "\"connection refused\"", f"nothing listens on the core socket {path}", fix)
    return _r("pass", f"a {h['listening']} socket listens on {path} (resolved from the host root, init_net; "
              f"{parsed['protocol']} protocol)")


def _g_handler_policy(w):
    if w["kind"] not in ("pipe", "socket"):
        return None
    parsed = w["parsed"]
    h = w["snap"].get("handler") or {}
    if w["kind"] == "pipe":
        name = handlers.identify(parsed["helper"])
        tokens = parsed["tokens"][1:]
    else:
        name = handlers.identify(parsed["path"])
        name = name if name == "systemd-coredump" else "socket-unknown"
        tokens = []
        if name == "systemd-coredump":
            h = dict(h, systemd_coredump={"conf": (h.get("systemd_coredump") or {}).get("conf", {}),
                                          "socket": h.get("listening")})
    soft = ((w["proc"].get("limits") or {}).get("core") or [None])[0]
    status, ev, fix = handlers.policy(name, h, tokens, soft, w["kernel"].get("page_size", 4096),
                                      estimate_core_size(w["proc"]), exe=w["proc"].get("exe"))
    return _r(status, ev, ev if status == "fail" else None, fix)


def _g_rlimit_fsize(w):
    if w["kind"] != "file":
        return None
    soft = ((w["proc"].get("limits") or {}).get("fsize") or [None])[0]
    if soft is None:
        return _r("pass", "RLIMIT_FSIZE unlimited")
    if soft == 0:
        return _r("fail", "RLIMIT_FSIZE is 0: the first write of the core fails with EFBIG (the SIGXFSZ is "
                  "dropped) and an empty file is left", "its RLIMIT_FSIZE is 0, so the core file stays empty",
                  {"summary": "Raise RLIMIT_FSIZE", "commands": [f"prlimit --pid {w['proc']['pid']} --fsize=unlimited"],
                   "needs_restart": False})
    est = estimate_core_size(w["proc"])
    if est and soft < est:
        return _r("warn", f"RLIMIT_FSIZE soft {soft} is less than the core (~{est} bytes): the core is truncated "
                  "at that size", fix={"summary": "Raise RLIMIT_FSIZE",
                                       "commands": [f"prlimit --pid {w['proc']['pid']} --fsize=unlimited"],
                                       "needs_restart": False})
    return _r("pass", f"RLIMIT_FSIZE soft {soft}")


def _g_coredump_filter(w):
    f = w["proc"].get("coredump_filter")
    if f is None:
        return None
    v = int(f, 16)
    if not v & 1:
        return _r("warn", f"coredump_filter {f} leaves out anonymous private memory (bit 0): the heap and "
                  "stacks will be missing from the core", fix={
                      "summary": "Include anonymous memory in the core",
                      "commands": [f"echo 0x33 > /proc/{w['proc']['pid']}/coredump_filter"], "needs_restart": False})
    return _r("pass", f"coredump_filter {f}")


GATES = (
    Gate("signal", 10, "signal", "the signal reaches its default action",
         "get_signal(), sig_kernel_coredump(), force_sig_info_to_task() -- kernel/signal.c (3.10-6.19)", _g_signal),
    Gate("kernel-config", 15, "common", "the kernel can dump at all",
         "vfs_coredump(): !binfmt->core_dump; CONFIG_COREDUMP -- fs/coredump.c (3.10-6.19)", _g_kernel_config),
    Gate("dumpable", 20, "common", "the process is dumpable",
         "vfs_coredump(): __get_dumpable(cprm.mm_flags) == 0 -- fs/coredump.c; set by commit_creds() "
         "kernel/cred.c, begin_new_exec() fs/exec.c, prctl(PR_SET_DUMPABLE) kernel/sys.c (3.10-6.19)", _g_dumpable),
    Gate("rlimit-core", 30, "branch", "RLIMIT_CORE allows a core",
         "file: cprm.limit < binfmt->min_coredump; pipe: cprm.limit == 1 -- do_coredump()/coredump_file(), "
         "coredump_pipe() fs/coredump.c (3.10-6.19; pipe message reworded in 6.12, c114e9948c2b)", _g_rlimit_core),
    Gate("suid-path", 40, "file", "dumpable=2 needs an absolute core name",
         "need_suid_safe && corename[0] != '/' -- fs/coredump.c (since 3.6)", _g_suid_path),
    Gate("pipe-handler", 50, "pipe", "the pipe helper can be started",
         "call_usermodehelper_exec(UMH_WAIT_EXEC) -- fs/coredump.c; \"Core dump to |%s pipe failed\"", _g_pipe_handler),
    Gate("socket-handler", 50, "socket", "a server listens on the core socket",
         "coredump_sock_connect() -- fs/coredump.c (6.16+; @@ protocol 6.17+)", _g_socket_handler),
    Gate("core-dir", 60, "file", "the core's directory can be written",
         "filp_open()/file_open_root(O_CREAT|O_EXCL|O_NOFOLLOW) -- fs/coredump.c; may_open(), "
         "generic_permission() fs/namei.c (3.10-6.19; init_task root for dumpable=2 since 4.x)", _g_core_dir),
    Gate("core-file", 70, "file", "the core file can be created and kept",
         "do_unlinkat() unless dumpable=2; i_nlink/S_ISREG/owner/\"(i_mode & 0677) != 0600\" checks -- "
         "fs/coredump.c (unlink and checks since ~4.3; absent in RHEL7's 3.10; messages 5.15+)", _g_core_file),
    Gate("space", 80, "file", "there is room for the core",
         "dump_emit() -> __kernel_write() ENOSPC -- fs/coredump.c", _g_space),
    Gate("handler-policy", 90, "handler", "the handler keeps the core",
         "user space: systemd-coredump (src/coredump/coredump.c), apport (data/apport)", _g_handler_policy),
    Gate("rlimit-fsize", 100, "file", "RLIMIT_FSIZE does not cut the core",
         "generic_write_check_limits() mm/filemap.c via dump_emit()", _g_rlimit_fsize),
    Gate("coredump-filter", 110, "content", "the core holds the memory that matters",
         "vma_dump_size(), MMF_DUMP_FILTER_* -- fs/coredump.c, include/linux/sched/coredump.h", _g_coredump_filter),
)

GATE_IDS = tuple(g.id for g in GATES)
BLOCKING_IDS = ("signal", "kernel-config", "dumpable", "rlimit-core", "suid-path", "pipe-handler",
                "socket-handler", "core-dir", "core-file", "space", "handler-policy")


# --------------------------------------------------------------------------- evaluator


def _world(snap, proc, parent, signal, how, dumpable_value, cause_info):
    parsed = _parsed(snap)
    k = snap["kernel"]
    signo = k["signals"].get(signal)
    exp = _expand(snap, proc, signo, dumpable_value)
    view = destination_views(snap, proc, signo, dumpable_value, exp) if parsed["kind"] == "file" else None
    return {"snap": snap, "proc": proc, "parent": parent, "kernel": k, "sysctl": snap["sysctl"],
            "signal": signal, "how": how, "dumpable": dumpable_value, "cause_info": cause_info,
            "parsed": parsed, "kind": parsed["kind"], "exp": exp, "view": view}


def _run(w, full=False):
    """Gate results in order. The kernel stops at the first blocking failure; with *full* the
    later gates are still evaluated (marked ``reached: False``) so that several possible worlds
    can be compared gate by gate."""
    results = []
    stopped = False
    for g in GATES:
        r = g.predicate(w)
        if r is None:
            continue
        r = dict(r, id=g.id, kernel_ref=g.kernel_ref, reached=not stopped)
        results.append(r)
        if r["status"] == "fail" and g.id in BLOCKING_IDS:
            if not full:
                break  # the kernel stops here; later gates are not reached
            stopped = True
    return results


def _outcome(results):
    for r in results:
        if r["status"] == "fail" and r["reached"]:
            return False, r["id"]
    if any(r["status"] == "unknown" and r["reached"] for r in results):
        return None, None
    return True, None


def _destination(snap, proc, dumpable_value, signo, exp=None):
    parsed = _parsed(snap)
    if exp is None:
        exp = _expand(snap, proc, signo, dumpable_value)
    if parsed["kind"] == "pipe":
        return {"kind": "pipe", "path": " ".join(core_pattern.render(a) for a in exp["argv"]),
                "handler": handlers.identify(parsed["helper"])}
    if parsed["kind"] == "socket":
        return {"kind": "socket", "path": parsed["path"], "handler": handlers.identify(parsed["path"])}
    path = core_pattern.render(exp["parts"])
    if not exp["absolute"]:
        cwd = proc.get("cwd") or "."
        path = (cwd.rstrip("/") + "/" + path) if cwd else path
    return {"kind": "file", "path": path, "handler": None}


def evaluate(snap, proc, parent=None, signal="SIGSEGV", how=None, by_pid=None):
    """Evaluate every gate for *proc* and return the target's verdict (the ``targets[]`` entry of
    the ``coredoctor.check/1`` contract). *by_pid* (pid -> process entry of *snap*) may be passed
    in when many targets of one snapshot are evaluated."""
    from coredoctor.kernel.signal import normalize_signal
    k = snap["kernel"]
    if signal not in SIG_KERNEL_COREDUMP:  # canonical names pass through (aliases: the CLI normalizes)
        signal = normalize_signal(signal, k["signals"])
    if how is None:
        how = "fault" if signal in FAULT_SIGNALS else "kill"
    d = proc.get("dumpable") or {}
    cands = d.get("candidates") or [0, 1, 2]
    sd_now = snap["sysctl"].get("fs.suid_dumpable")
    if by_pid is None:
        by_pid = {p["pid"]: p for p in snap["processes"]}

    def parent_of(p):
        return by_pid.get(p.get("ppid"))

    info = dmod.infer_cause(proc, parent_of, sd_now, d.get("value"))
    worlds = []
    for v in cands:
        w = _world(snap, proc, parent, signal, how, v, info)
        res = _run(w, full=len(cands) > 1)
        worlds.append((v, w, res, _outcome(res)))
    dumps_set = {o[0] for _, _, _, o in worlds}
    if len(dumps_set) == 1:
        dumps = dumps_set.pop()
    else:
        dumps = None
    gates = _merge([(v, [r for r in res if r["reached"]]) for v, _, res, _ in worlds])
    blocking = None
    if dumps is False:
        # a gate that fails whatever the unknown value is names the cause best; else the earliest
        failing = [{r["id"] for r in res if r["status"] == "fail"} for _, _, res, _ in worlds]
        common = [gid for gid in GATE_IDS if all(gid in f for f in failing)]
        blocking = common[0] if common else min((o[1] for _, _, _, o in worlds), key=GATE_IDS.index)
    # cause of non-dumpability (for the worlds where it is not dumpable)
    cause, cause_ev = info["cause"], info["evidence"]
    fixes = []
    seen = set()
    for _, _, res, _ in worlds:
        for r in res:
            if r["status"] in ("fail", "warn") or (r["status"] == "unknown" and dumps is None):
                for f in r.get("fix") or []:
                    if f and f["summary"] not in seen:
                        seen.add(f["summary"])
                        fixes.append(f)
    if blocking == "dumpable" and dmod.SUID_DUMP_ROOT not in cands:
        # what the process would meet once fs.suid_dumpable=2 is in force after a restart
        w2 = _world(snap, proc, parent, signal, how, dmod.SUID_DUMP_ROOT, info)
        for r in _run(w2):
            if r["status"] == "fail" and r["id"] not in ("dumpable", "suid-path"):
                for f in r.get("fix") or []:
                    if f["summary"] not in seen:
                        seen.add(f["summary"])
                        fixes.append(dict(f, summary=f"Then, for the restarted process (dumped as root): "
                                                     f"{f['summary']} ({r['id']}: {r['evidence']})"))
    signo = k["signals"].get(signal)
    dest_value = d.get("value") if d.get("value") is not None else max(cands)
    target = {
        "pid": proc["pid"], "comm": proc.get("comm"), "exe": proc.get("exe"), "unit": proc.get("unit"),
        "signal": signal, "how": how,
        "dumps": dumps, "blocking_gate": blocking,
        "core_destination": _destination(snap, proc, dest_value, signo,
                                         next((w["exp"] for v, w, _, _ in worlds if v == dest_value), None)),
        "dumpable": {"value": d.get("value"), "source": d.get("source", "unknown"), "cause": cause,
                     "evidence": d.get("evidence", "") + (f"; {cause_ev}" if cause_ev and cause else ""),
                     "candidates": cands},
        "gates": gates,
        "fixes": [{"summary": f["summary"], "commands": f["commands"], "needs_restart": f["needs_restart"]}
                  for f in fixes],
    }
    target["verdict"] = _sentence(target, worlds, dumps, blocking)
    if dumps is None:
        target["undecided_by"] = _undecided(gates)
    return target


def _undecided(gates):
    for g in gates:
        if g["status"] == "unknown":
            return g["id"]
    return None


def _merge(world_results):
    """One gate list for the target: identical results merge; differing ones become 'unknown'
    with each world's answer in the evidence."""
    if len(world_results) == 1:
        return [_public(r) for r in world_results[0][1]]
    order = []
    by_id = {}
    for v, res in world_results:
        for r in res:
            if r["id"] not in by_id:
                by_id[r["id"]] = {}
                order.append(r["id"])
            by_id[r["id"]][v] = r
    out = []
    for gid in sorted(order, key=GATE_IDS.index):
        rs = by_id[gid]
        vals = list(rs.values())
        if len(rs) == len(world_results) and len({(r["status"], r["evidence"]) for r in vals}) == 1:
            out.append(_public(vals[0]))
            continue
        statuses = {r["status"] for r in vals}
        status = statuses.pop() if len(statuses) == 1 else "unknown"
        ev = "; ".join(f"if dumpable={v}: {r['status']} -- {r['evidence']}" for v, r in sorted(rs.items()))
        missing = [v for v, _ in world_results if v not in rs]
        if missing:
            ev += "; " + "; ".join(f"if dumpable={v}: not reached" for v in missing)
        m = _public(vals[0])
        m.update(status=status, evidence=ev)
        out.append(m)
    return out


def _public(r):
    fix = r.get("fix") or []
    return {"id": r["id"], "status": r["status"], "evidence": r["evidence"], "kernel_ref": r["kernel_ref"],
            "fix": "; ".join(f["summary"] for f in fix) if fix else None}


def _sentence(t, worlds, dumps, blocking):
    who = f"{t['comm']} (pid {t['pid']})"
    sig = t["signal"]
    how = "" if t["how"] == "fault" or sig not in FAULT_SIGNALS else " sent with kill"
    if dumps is True:
        dest = t["core_destination"]
        where = dest["path"] if dest["kind"] == "file" else f"{dest['kind']} {dest['path']}"
        return f"{who}: a {sig}{how} now would leave a core ({where})"
    if dumps is False:
        summaries = []
        for _, _, res, o in worlds:
            for r in res:
                if r["id"] == blocking and r["status"] == "fail":
                    summaries.append(r.get("summary") or r["evidence"])
                    break
            else:
                summaries.extend(r.get("summary") or r["evidence"] for r in res if r["id"] == o[1])
        uniq = list(dict.fromkeys(summaries))
        reason = uniq[0] if len(uniq) == 1 else " -- or, ".join(uniq)
        return f"{who}: a {sig}{how} now would NOT leave a core -- {reason}"
    reasons = []
    for g in t["gates"]:
        if g["status"] == "unknown":
            reasons.append(g["evidence"])
            break
    if t["dumpable"]["value"] is None and len(t["dumpable"]["candidates"]) > 1:
        reasons.insert(0, f"its dumpable value could be {' or '.join(map(str, t['dumpable']['candidates']))} "
                          f"and the answer depends on it ({t['dumpable']['evidence']})")
    return f"{who}: a {sig}{how} now might or might not leave a core -- {reasons[0] if reasons else 'unknown'}"
