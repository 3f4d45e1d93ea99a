"""canary: a throwaway process through the same credential change, a real fault, and the core
found, verified as an ELF core of that pid, and removed -- compared with check's prediction."""
import json
import os

import lab as L
from coredoctor.snapshot import pidfd

PIDFD = pidfd.probe()


def canary(*args):
    r = L.coredoctor("canary", *args, "--json")
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr


def _cores(lab):
    return L.make_cores(lab)


def test_canary_privilege_drop_suid0_no_core(labdir):
    lab, _ = labdir
    cores = _cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    rc, rep, _ = canary("--user", "nobody", "--group", "nogroup")
    assert rep["dumped"] is False and rep["signal"] == 11 and not rep["wcoredump"]
    assert os.listdir(cores) == []
    if PIDFD:
        assert (rep["predicted"]["dumps"], rep["predicted"]["blocking_gate"]) == (False, "dumpable")
        assert rep["agrees"] is True and rc == 1
    else:
        assert rep["predicted"]["dumps"] is None and rep["agrees"] is None


def test_canary_privilege_drop_suid2_core_verified_and_removed(labdir):
    lab, _ = labdir
    cores = _cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 2})
    rc, rep, _ = canary("--user", "nobody", "--group", "nogroup")
    assert rc == 0 and rep["dumped"] is True and rep["wcoredump"]
    core = rep["core"]
    assert core["path"] == f"{cores}/core.cd-canary.{rep['pid']}"
    assert core["elf"] and core["verified"] and core["elf_pid"] == rep["pid"] and core["elf_signal"] == 11
    assert (core["uid"], core["mode"]) == (0, "0600")  # dumpable=2: written as root
    assert core["removed"] and not os.path.exists(core["path"])
    if PIDFD:
        assert rep["predicted"]["dumps"] is True and rep["agrees"] is True


def test_canary_like_a_process_and_keep(labdir):
    lab, _ = labdir
    cores = _cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    v = L.Victim({"rlimit_core": [0, None]})
    try:
        rc, rep, _ = canary("--like", str(v.pid))
        assert rc == 1 and rep["like"] == v.pid and rep["dumped"] is False
        assert (rep["predicted"]["dumps"], rep["predicted"]["blocking_gate"]) == (False, "rlimit-core")
        assert rep["agrees"] is True
    finally:
        v.close()
    v = L.Victim({"rlimit_core": [None, None], "umask": 0o027, "cwd": cores})
    try:
        rc, rep, _ = canary("--like", str(v.pid), "--keep")
        assert rc == 0 and rep["agrees"] is True and rep["core"]["verified"]
        assert os.path.exists(rep["core"]["path"]) and not rep["core"].get("removed")
    finally:
        v.close()


def test_canary_bad_input():
    for args in (["--like", "999999999"], [], ["--user", "no-such-user-xyz"], ["--like", "1", "--user", "x"]):
        r = L.coredoctor("canary", *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_canary_enters_the_targets_mount_namespace(labdir):
    """A unit's ProtectSystem=/ReadOnlyPaths= or a container: the target sees its core directory
    read-only in its own mount namespace. check must say so, and the canary must crash in that same
    view (a canary on the host's view would dump and contradict the kernel)."""
    lab, _ = labdir
    cores = _cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%p", "fs.suid_dumpable": 0})
    wrap = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            f'mount --bind {cores} {cores} && mount -o remount,bind,ro {cores} && exec "$0" "$@"']
    v = L.Victim({"rlimit_core": [None, None]}, wrap=wrap)
    try:
        t = json.loads(L.coredoctor("check", "--pid", str(v.pid), "--json").stdout)["targets"][0]
        assert (t["dumps"], t["blocking_gate"]) == (False, "core-dir") and "read-only" in t["verdict"]
        rc, rep, _ = canary("--like", str(v.pid))
        assert rep["predicted"]["blocking_gate"] == "core-dir"
        assert rc == 1 and rep["dumped"] is False and rep["agrees"] is True
        assert os.listdir(cores) == []          # the host's view was writable: nothing landed there
        status = v.fault()                      # and the target itself: no core either
        assert os.WIFSIGNALED(status) and not os.WCOREDUMP(status) and os.listdir(cores) == []
    finally:
        v.close()
