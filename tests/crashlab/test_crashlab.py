"""The crash lab: real processes put into a state, coredoctor's prediction, then a real crash.

Each scenario is run twice: with the exact pidfd dumpability query (where the kernel answers it,
6.16+) and with it switched off (COREDOCTOR_DISABLE=pidfd), as on older kernels. For each run
the test asserts (1) the prediction the scenario expects, and (2) that the kernel agrees: a
non-empty core exists exactly where check said, or nowhere.
"""
import glob
import grp
import json
import os
import pwd
import signal
import stat
import subprocess
from dataclasses import dataclass, field
from typing import Optional

import pytest

import lab as L
from coredoctor.kernel import remedies as R
from coredoctor.snapshot import pidfd as pidfd_mod

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid
DROP = {"setresgid": [NOGROUP] * 3, "setgroups": [], "setresuid": [NOBODY] * 3}
UNLIM = {"rlimit_core": [None, None]}
PIDFD = pidfd_mod.probe()
SOCKET = "socket" in (open("/proc/sys/kernel/core_modes").read().split()
                      if os.path.exists("/proc/sys/kernel/core_modes") else [])
SAME = "same"


@dataclass
class S:
    id: str
    pattern: str
    spec: dict
    expect: tuple                       # (dumps, blocking_gate) with the exact dumpability query
    fallback: object = SAME             # the same without it (kernels before 6.16)
    sysctl: dict = field(default_factory=dict)
    signal: str = "SIGSEGV"
    how: Optional[str] = None
    action: str = "fault"               # fault | kill | abort
    cwd: Optional[str] = None
    warn: tuple = ()                    # gates expected with status warn
    setup: Optional[str] = None
    needs_socket: bool = False
    cause: Optional[str] = None


SCENARIOS = [
    S("abs-root", "{LAB}/cores/core.%p", UNLIM, (True, None)),
    S("abs-root-core-uses-pid", "{LAB}/cores/core", UNLIM, (True, None), sysctl={"kernel.core_uses_pid": 1}),
    S("abs-root-exe-host-specifiers", "{LAB}/cores/core.%e.%u.%g.%s.%h.%f.%%", UNLIM, (True, None)),
    S("rlimit-core-0", "{LAB}/cores/core.%p", {"rlimit_core": [0, None]}, (False, "rlimit-core")),
    S("rlimit-core-4095", "{LAB}/cores/core.%p", {"rlimit_core": [4095, None]}, (False, "rlimit-core")),
    S("rlimit-core-4096-truncated", "{LAB}/cores/core.%p", {"rlimit_core": [4096, None]}, (True, None),
      warn=("rlimit-core",)),
    S("relative-cwd-writable", "core.%p", dict(UNLIM, cwd="{LAB}/cores"), (True, None)),
    S("relative-cwd-root-as-nobody", "core.%p", dict(UNLIM, cwd="/", prctl_dumpable=1, **DROP),
      (False, "core-dir")),
    S("drop-privileges-suid0", "{LAB}/cores/core.%p", dict(UNLIM, **DROP), (False, "dumpable"),
      fallback=(None, None), cause="privilege-change"),
    S("drop-privileges-suid2-absolute", "{LAB}/cores/core.%p", dict(UNLIM, **DROP), (True, None),
      fallback=(None, None), sysctl={"fs.suid_dumpable": 2}, setup="expect_root_owned"),
    S("drop-privileges-suid2-relative", "core.%p", dict(UNLIM, cwd="{LAB}/cores", **DROP),
      (False, "suid-path"), fallback=(False, "dumpable"), sysctl={"fs.suid_dumpable": 2}),
    S("setresgid-only-suid0", "{LAB}/cores/core.%p", dict(UNLIM, setresgid=[NOGROUP] * 3), (False, "dumpable"),
      fallback=(None, None), cause="privilege-change"),
    S("setfsuid-only-suid0", "{LAB}/cores/core.%p", dict(UNLIM, setfsuid=NOBODY), (False, "dumpable"),
      fallback=(None, None), cause="privilege-change"),
    S("prctl-0-root", "{LAB}/cores/core.%p", dict(UNLIM, prctl_dumpable=0), (False, "dumpable"),
      fallback=(None, None), cause="prctl"),
    S("prctl-0-relative-pattern-unwritable", "core.%p", dict(UNLIM, prctl_dumpable=0, cwd="{LAB}/locked", **DROP),
      (False, "dumpable"), fallback=(False, "dumpable")),
    S("drop-then-prctl-1", "{LAB}/cores/core.%p", dict(UNLIM, prctl_dumpable=1, **DROP), (True, None)),
    S("locked-dir-as-nobody", "{LAB}/locked/core.%p", dict(UNLIM, prctl_dumpable=1, **DROP), (False, "core-dir")),
    S("missing-dir", "{LAB}/nope/core.%p", UNLIM, (False, "core-dir")),
    S("read-only-dir", "{LAB}/ro/core.%p", UNLIM, (False, "core-dir"), setup="ro_mount"),
    S("umask-0277", "{LAB}/cores/core.%p", dict(UNLIM, umask=0o277), (False, "core-file")),
    S("existing-file-sticky-dir", "{LAB}/cores/core", dict(UNLIM, prctl_dumpable=1, **DROP), (False, "core-file"),
      setup="existing_core"),
    S("pipe-rlimit-0", "|{LAB}/helper.sh {LAB}/pipe/core.%p", {"rlimit_core": [0, None]}, (True, None)),
    S("pipe-rlimit-1", "|{LAB}/helper.sh {LAB}/pipe/core.%p", {"rlimit_core": [1, None]}, (False, "rlimit-core")),
    S("pipe-helper-missing", "|{LAB}/nohelper {LAB}/pipe/core.%p", UNLIM, (False, "pipe-handler")),
    S("pipe-helper-not-executable", "|{LAB}/noexec.sh {LAB}/pipe/core.%p", UNLIM, (False, "pipe-handler")),
    S("socket-listening", "@{LAB}/core.sock", {"rlimit_core": [0, None]}, (True, None), setup="socket",
      needs_socket=True),
    S("socket-missing", "@{LAB}/none.sock", UNLIM, (False, "socket-handler"), needs_socket=True),
    S("sigsegv-ignored-fault", "{LAB}/cores/core.%p", dict(UNLIM, sig={"SIGSEGV": "ignore"}), (True, None)),
    S("sigsegv-ignored-kill", "{LAB}/cores/core.%p", dict(UNLIM, sig={"SIGSEGV": "ignore"}), (False, "signal"),
      how="kill", action="kill"),
    S("sigsegv-blocked-fault", "{LAB}/cores/core.%p", dict(UNLIM, sig={"SIGSEGV": "block"}), (True, None)),
    S("sigsegv-blocked-kill", "{LAB}/cores/core.%p", dict(UNLIM, sig={"SIGSEGV": "block"}), (False, "signal"),
      how="kill", action="kill"),
    S("sigsegv-handler-kill", "{LAB}/cores/core.%p", dict(UNLIM, sig={"SIGSEGV": "handler"}), (None, None),
      how="kill", action="kill"),
    S("sigsegv-handler-blocked-fault", "{LAB}/cores/core.%p", dict(UNLIM, sig={"SIGSEGV": "handler+block"}),
      (True, None)),
    S("rlimit-fsize-8192", "{LAB}/cores/core.%p", dict(UNLIM, rlimit_fsize=[8192, None]), (True, None),
      warn=("rlimit-fsize",), setup="expect_8192"),
    S("rlimit-fsize-0", "{LAB}/cores/core.%p", dict(UNLIM, rlimit_fsize=[0, None]), (False, "rlimit-fsize")),
    S("sigterm", "{LAB}/cores/core.%p", UNLIM, (False, "signal"), signal="SIGTERM", action="kill"),
    S("sigabrt-kill", "{LAB}/cores/core.%p", UNLIM, (True, None), signal="SIGABRT", action="kill"),
    S("coredump-filter-0", "{LAB}/cores/core.%p", dict(UNLIM, coredump_filter="0x0"), (True, None),
      warn=("coredump-filter",)),
]


def _prepare(labroot, mounts, sc):
    for d, mode in (("cores", 0o1777), ("locked", 0o755), ("pipe", 0o755)):
        os.mkdir(os.path.join(labroot, d))
        os.chmod(os.path.join(labroot, d), mode)
    h = os.path.join(labroot, "helper.sh")
    with open(h, "w") as f:
        f.write('#!/bin/sh\nexec cat > "$1"\n')
    os.chmod(h, 0o755)
    n = os.path.join(labroot, "noexec.sh")
    with open(n, "w") as f:
        f.write('#!/bin/sh\nexec cat > "$1"\n')
    os.chmod(n, 0o644)
    extra = {}
    if sc.setup == "ro_mount":
        ro = os.path.join(labroot, "ro")
        os.mkdir(ro)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "cdlab-ro", ro], check=True)
        mounts.append(ro)
    if sc.setup == "existing_core":
        p = os.path.join(labroot, "cores", "core")
        with open(p, "w") as f:
            f.write("old")
        os.chmod(p, 0o600)
    if sc.setup == "socket":
        extra["sink"] = L.SocketSink(os.path.join(labroot, "core.sock"), labroot)
    return extra


def _fmt(obj, labroot):
    if isinstance(obj, str):
        return obj.replace("{LAB}", labroot)
    if isinstance(obj, dict):
        return {k: _fmt(v, labroot) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fmt(v, labroot) for v in obj]
    return obj


def _tree(labroot):
    out = {}
    for p in glob.glob(os.path.join(labroot, "**", "*"), recursive=True):
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out[p] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _new_file(path, before):
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return before.get(path) != (st.st_ino, st.st_size, st.st_mtime_ns)


def _kernel_outcome(sc, t, v, labroot, before):
    """(dumped, where): did a non-empty core land where check said (or anywhere)?"""
    kind = t["core_destination"]["kind"]
    if kind == "pipe":
        path, size = L.wait_stable(os.path.join(labroot, "pipe", f"core.{v.pid}"), timeout=5 if v.status else 1)
        return size > 0, path
    if kind == "socket":
        path, size = L.wait_stable(os.path.join(labroot, "sock-core.*"), timeout=5)
        return size > 0, path
    expected = t["core_destination"]["path"]
    path, size = L.wait_stable(expected.replace("*", "?*"), timeout=3 if v.status is not None else 0.3)
    if path and size > 0 and _new_file(path, before):
        return True, path
    # nothing where check said: make sure it did not land anywhere else either
    stray = [p for p in glob.glob(os.path.join(labroot, "**", "core*"), recursive=True)
             if os.path.isfile(p) and os.path.getsize(p) > 0 and _new_file(p, before)]
    assert not stray, f"a core landed where check did not say: {stray} (check said {expected})"
    return False, None


def _check_is_fix_plan(t, v, sc, env):
    """fix plans, for this state, exactly the records check's fixes carry (merged, in order)."""
    args = ["fix", "--pid", str(v.pid), "--json", "--signal", sc.signal] + (["--how", sc.how] if sc.how else [])
    r = L.coredoctor(*args, env_extra=env)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    records = [a for f in t["fixes"] for a in f["actions"]]
    planned = doc["actions"] + doc["reported"]
    if not doc["refused"]:
        assert planned == R.merge(records), (planned, records)
    else:
        assert all(a in records for a in planned)
    assert doc["targets"][0]["verdict"] == t["verdict"]


MODES = ["pidfd", "fallback"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_crashlab(sc, mode, labdir):
    if sc.needs_socket and not SOCKET:
        pytest.skip("this kernel has no socket core_pattern (kernel.core_modes lacks 'socket', 6.16+)")
    labroot, mounts = labdir
    extra = _prepare(labroot, mounts, sc)
    exact = PIDFD and mode == "pidfd"
    env = {} if mode == "pidfd" else {"COREDOCTOR_DISABLE": "pidfd"}
    L.set_sysctls(dict({"kernel.core_pattern": _fmt(sc.pattern, labroot), "fs.suid_dumpable": 0,
                        "kernel.core_uses_pid": 0, "kernel.core_pipe_limit": 0}, **sc.sysctl))
    v = L.Victim(_fmt(sc.spec, labroot))
    try:
        t = v.check(sc.signal, sc.how, env_extra=env)
        want = sc.expect if (exact or sc.fallback == SAME) else sc.fallback
        assert (t["dumps"], t["blocking_gate"]) == want, t["verdict"] + "\n" + repr(t["gates"])
        if exact:
            assert t["dumpable"]["source"] == "pidfd"
        if sc.cause and t["dumpable"]["value"] == 0:
            assert t["dumpable"]["cause"] == sc.cause, t["dumpable"]
        for gid in sc.warn:
            assert any(g["id"] == gid and g["status"] == "warn" for g in t["gates"]), t["gates"]
        if t["dumps"] is False:
            assert t["fixes"] or t["blocking_gate"] == "signal", "a blocked core must come with a fix"
        _check_is_fix_plan(t, v, sc, env)
        # now the real crash
        before = _tree(labroot)
        if sc.action == "fault":
            status = v.fault()
            assert status is not None, "a NULL read did not end the victim within 30 s"
        elif sc.action == "abort":
            v.send("abort")
            status = v.wait()
            assert status is not None, "abort() did not end the victim within 30 s"
        else:
            v.kill(getattr(signal, sc.signal))
            status = None if v.survives() else v.status  # answered after the signal, or its real status
        if status is None:
            dumped, where = False, None  # the signal did not end the process (it answered afterwards)
        else:
            assert os.WIFSIGNALED(status), f"victim exited normally: {status:#x}"
            dumped, where = _kernel_outcome(sc, t, v, labroot, before)
            if t["core_destination"]["kind"] == "file":
                # both ways: a core (non-empty) => WCOREDUMP, no file at all => no WCOREDUMP. An
                # empty file is neither: with RLIMIT_FSIZE 0 the kernel opened it, every write
                # failed, and 6.18 still reports WCOREDUMP (seen in rlimit-fsize-0)
                empty = [p for p in glob.glob(t["core_destination"]["path"].replace("*", "?*"))
                         if os.path.isfile(p) and os.path.getsize(p) == 0 and _new_file(p, before)]
                if dumped or not empty:
                    assert bool(os.WCOREDUMP(status)) == dumped, (
                        f"WCOREDUMP={bool(os.WCOREDUMP(status))} but "
                        f"{'a core at ' + str(where) if dumped else 'no core file at all'}")
            elif dumped:
                assert os.WCOREDUMP(status), "the handler got a core but the kernel did not report a dump"
        if t["dumps"] is not None:
            assert dumped == t["dumps"], (f"check predicted dumps={t['dumps']} ({t['verdict']}) but the kernel "
                                          f"{'wrote ' + str(where) if dumped else 'wrote no core'}")
        if sc.setup == "expect_root_owned" and dumped:
            st = os.stat(where)
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, NOGROUP, 0o600)
        if sc.setup == "expect_8192" and dumped:
            assert os.path.getsize(where) == 8192
    finally:
        v.close()
        if "sink" in extra:
            extra["sink"].close()
