"""
Planning a fix
--------------
Pure: from a snapshot, the target's check verdict and the conflicts found, the smallest set of
actions that makes the target's next crash leave a core. Actions are desired states; an action
whose state is already in place is left out, so planning again after an apply gives nothing to
do (apply is idempotent).
"""

from coredoctor import programs
from coredoctor.kernel import core_pattern

__all__ = ["plan", "SYSCTL_FILE", "DEFAULT_PATTERN", "DEFAULT_DIR"]

SYSCTL_FILE = "/etc/sysctl.d/90-coredoctor.conf"   # sorts after 50-coredump.conf (systemd)
DEFAULT_DIR = "/var/crash"
DEFAULT_PATTERN = DEFAULT_DIR + "/core.%e.%p.%t"
ORDER = {"mkdir": 0, "sysctl:kernel.core_pattern": 1, "sysctl:fs.suid_dumpable": 2, "file": 3, "prlimit": 4}


def _gate(t, gid):
    return next((g for g in t["gates"] if g["id"] == gid), None)


def _fails(t, gid):
    g = _gate(t, gid)
    return g is not None and g["status"] == "fail"


def plan(snap, target, conflicts=(), existing_files=None, running=()):
    """Return ``{"actions", "needs_restart", "security", "warnings", "manual", "refused"}``.

    *existing_files* maps a path to its current text (for idempotence of file actions);
    *running* lists the command names running on the host (for programs that keep their
    memory out of cores on purpose).
    """
    existing_files = existing_files or {}
    sysctl = snap["sysctl"]
    pattern = sysctl.get("kernel.core_pattern") or ""
    parsed = core_pattern.parse(pattern, snap["kernel"]["features"].get("socket_pattern", False))
    proc = next(p for p in snap["processes"] if p["pid"] == target["pid"])
    d = target["dumpable"]
    actions, restart, security, warnings, manual, refused = [], [], [], [], [], []
    persist = {}
    new_pattern = None

    def want_sysctl(key, value, why):
        persist[key] = str(value)
        if str(sysctl.get(key)) != str(value):
            actions.append({"kind": "sysctl", "key": key, "value": str(value), "why": why})

    def need_absolute_pattern(why):
        nonlocal new_pattern
        if new_pattern is None:
            new_pattern = DEFAULT_PATTERN
            actions.append({"kind": "mkdir", "path": DEFAULT_DIR, "mode": "1777",
                            "why": "where the cores go (sticky like /tmp: each core is a 0600 file of its owner)"})
            want_sysctl("kernel.core_pattern", DEFAULT_PATTERN, why)

    dumpable_gate = _gate(target, "dumpable")
    maybe_zero = 0 in (d.get("candidates") or []) and dumpable_gate is not None and \
        dumpable_gate["status"] in ("fail", "unknown")
    if maybe_zero and d.get("cause") == "prctl":
        manual.append("the program turned dumping off itself (prctl(PR_SET_DUMPABLE, 0)); no sysctl changes "
                      "that: enable dumps in its own configuration, or take a live core with gcore")
        if proc.get("comm") in programs.DELIBERATELY_UNDUMPABLE:
            warnings.append(f"{proc.get('comm')} makes itself non-dumpable on purpose: its memory holds secrets")
    elif maybe_zero:
        if parsed["kind"] == "file" and not parsed["absolute"]:
            need_absolute_pattern("fs.suid_dumpable=2 dumps only to an absolute path (or a pipe/socket): set it "
                                  "first, or the kernel refuses relative names")
        elif parsed["kind"] == "file":
            dirpath, _ = core_pattern.split_dir(core_pattern.expand(parsed, {})["parts"])
            if dirpath and dirpath.startswith("/") and _dir_missing(snap, dirpath):
                actions.append({"kind": "mkdir", "path": dirpath, "mode": "1777", "why": "the pattern's directory"})
        switch = programs.own_switch(proc.get("exe"))
        if switch:
            manual.append(f"alternative with a smaller blast radius: {switch}")
        want_sysctl("fs.suid_dumpable", 2, "processes that changed credentials dump again, as root")
        security.append("fs.suid_dumpable=2 is host-wide: every process that changed credentials (set-id "
                        "programs, privilege-dropping daemons) will dump too, as root-owned 0600 files; cores "
                        "can hold secrets (keys, passwords, session data)")
        sensitive = sorted(set(running) & set(programs.DELIBERATELY_UNDUMPABLE))
        if sensitive:
            warnings.append(f"{', '.join(sensitive)} run here and keep secrets out of cores on purpose: those that "
                            "only drop privileges (sshd's privilege-separated children) will dump with "
                            "fs.suid_dumpable=2; those that call prctl(PR_SET_DUMPABLE, 0) stay undumpable")
        restart.append({"pid": proc["pid"], "comm": proc.get("comm"), "unit": proc.get("unit"),
                        "why": "its dumpable flag was copied at its privilege change; only a restart re-reads "
                               "fs.suid_dumpable",
                        "command": f"systemctl restart {proc['unit']}" if proc.get("unit") else
                        f"restart {proc.get('comm')} (pid {proc['pid']}) the way it is normally started"})
    if _fails(target, "suid-path") or (_fails(target, "core-dir") and parsed["kind"] == "file"
                                         and not parsed["absolute"]):
        need_absolute_pattern("the current core name is relative: it cannot be used in dump mode 2 and "
                              "resolves against each process's cwd")
    elif _fails(target, "core-dir") and parsed["kind"] == "file":
        dirpath, _ = core_pattern.split_dir(core_pattern.expand(parsed, {})["parts"])
        if dirpath and _dir_missing(snap, dirpath):
            actions.append({"kind": "mkdir", "path": dirpath, "mode": "1777", "why": "the pattern's directory"})
        else:
            need_absolute_pattern("the current core directory is not writable by the process")
    if _fails(target, "rlimit-core"):
        actions.append({"kind": "prlimit", "pid": proc["pid"], "resource": "core", "value": [None, None],
                        "why": "RLIMIT_CORE of the running process (takes effect at once)"})
        if proc.get("unit"):
            _dropin(actions, existing_files, proc["unit"], "core", ["[Service]", "LimitCORE=infinity"],
                    "LimitCORE= for the next start of the unit")
        else:
            manual.append("make RLIMIT_CORE persistent where the program is started ('ulimit -c unlimited' "
                          "in its start script, or /etc/security/limits.d for login sessions)")
    if _fails(target, "core-file") and (proc.get("umask") or 0) & 0o600:  # the mode check refused it
        if proc.get("unit"):
            _dropin(actions, existing_files, proc["unit"], "umask", ["[Service]", "UMask=0022"],
                    "a umask that keeps the core's 0600 mode")
            restart.append({"pid": proc["pid"], "comm": proc.get("comm"), "unit": proc["unit"],
                            "why": "a umask applies from the next start",
                            "command": f"systemctl restart {proc['unit']}"})
        else:
            manual.append("start the program with a umask that keeps owner read/write (e.g. umask 022)")
    for gid in ("pipe-handler", "socket-handler", "handler-policy", "space", "signal", "rlimit-fsize"):
        if _fails(target, gid):
            g = _gate(target, gid)
            manual.append(f"{gid}: {g['fix'] or g['evidence']}")
    if persist:
        # keep what an earlier fix already persisted there (planning again must find nothing to do)
        prior = {}
        for line in (existing_files.get(SYSCTL_FILE) or "").splitlines():
            k, sep, v = line.partition("=")
            if sep and not line.lstrip().startswith(("#", ";")) and str(sysctl.get(k.strip())) == v.strip():
                prior[k.strip()] = v.strip()  # only what is still in force
        persist = {**prior, **persist}
        lines = ["# written by coredoctor fix; 'coredoctor fix --rollback ID' restores what was here",
                 *[f"{k} = {v}" for k, v in sorted(persist.items(), key=lambda kv: kv[0] != "kernel.core_pattern")]]
        content = "\n".join(lines) + "\n"
        if existing_files.get(SYSCTL_FILE) != content:
            actions.append({"kind": "file", "path": SYSCTL_FILE, "content": content, "mode": "0644",
                            "why": "persist across reboots (applied after distribution files such as 50-coredump.conf)"})
    # the one combination the kernel refuses: mode 2 with a relative name
    final_pattern = new_pattern or pattern
    final_sd = persist.get("fs.suid_dumpable", str(sysctl.get("fs.suid_dumpable")))
    if final_sd == "2" and core_pattern.parse(final_pattern)["kind"] == "file" and not final_pattern.startswith("/"):
        refused.append("fs.suid_dumpable=2 with a relative core_pattern")
        actions = [a for a in actions if not (a["kind"] == "sysctl" and a["key"] == "fs.suid_dumpable")]
    for c in conflicts:
        if c.get("wins"):
            warnings.append(f"{c['path']}: {c['effect']}" + (f" ({c['key']} = {c['value']})" if c.get("key") else ""))
    actions.sort(key=lambda a: ORDER.get(a["kind"] if a["kind"] != "sysctl" else f"sysctl:{a['key']}", 5))
    return {"actions": actions, "needs_restart": restart, "security": security, "warnings": warnings,
            "manual": manual, "refused": refused}


def _dir_missing(snap, dirpath):
    """Did the snapshot's walk to *dirpath* (from any root) find it missing?"""
    views = [v for k, v in (snap.get("paths") or {}).items() if k.endswith(":" + dirpath)]
    return any(not v.get("exists") and v.get("error") in ("ENOENT", "ENOTDIR") for v in views)


def _dropin(actions, existing_files, unit, name, lines, why):
    path = f"/etc/systemd/system/{unit}.d/90-coredoctor-{name}.conf"
    content = "\n".join(lines) + "\n"
    if existing_files.get(path) != content:
        actions.append({"kind": "file", "path": path, "content": content, "mode": "0644", "why": why,
                        "after": "systemctl daemon-reload"})
