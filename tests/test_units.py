"""Targets named by systemd unit, resolved through the process's real cgroup."""
import json
import os

import pytest

import lab as L

CGROUP_ROOTS = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")
UNIT = "coredoctor-test.service"


def _cgroup_root():
    for r in CGROUP_ROOTS:
        if os.path.exists(os.path.join(r, "cgroup.procs")) and os.access(r, os.W_OK):
            return r
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a cgroup: run as root")
def test_check_by_unit(saved_sysctls):
    root = _cgroup_root()
    if root is None:
        pytest.skip("no writable cgroup hierarchy is mounted")
    cg = os.path.join(root, "system.slice", UNIT)
    made_slice = not os.path.exists(os.path.dirname(cg))
    os.makedirs(cg)
    v = L.Victim({"rlimit_core": [0, None]})
    try:
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(v.pid))
        r = L.coredoctor("check", UNIT, "--json")
        assert r.returncode == 1, r.stderr
        t = json.loads(r.stdout)["targets"]
        assert [x["pid"] for x in t] == [v.pid]
        assert t[0]["unit"] == UNIT and t[0]["blocking_gate"] == "rlimit-core"
        cmds = [c for f in t[0]["fixes"] for c in f["commands"]]
        assert f"prlimit --pid {v.pid} --core=unlimited:unlimited" in cmds
        assert any(f"/etc/systemd/system/{UNIT}.d" in c and "LimitCORE=infinity" in c for c in cmds)
    finally:
        v.close()
        os.rmdir(cg)
        if made_slice:
            os.rmdir(os.path.dirname(cg))
