"""fix and canary on the real ovs-vswitchd: the seed case cured and proven, then undone."""
import glob
import json
import os
import signal

import lab as L
from coredoctor.snapshot import pidfd

PIDFD = pidfd.probe()
SYSCTL_FILE = "/etc/sysctl.d/90-coredoctor.conf"


def cd(*args):
    r = L.coredoctor(*args)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_ovs_fix_canary_restart_rollback(ovs, fix_env):
    pattern = f"{ovs.cores}/core.%e.%p"
    L.set_sysctls({"kernel.core_pattern": pattern, "fs.suid_dumpable": 0})
    had_file = os.path.exists(SYSCTL_FILE)
    pid = ovs.start()

    # 1. no core, gate dumpable, cause privilege-change; kill -SEGV confirms, the monitor restarts it
    t = json.loads(cd("check", "--pid", str(pid), "--json").stdout)["targets"][0]
    assert t["dumpable"]["cause"] == "privilege-change"
    if PIDFD:
        assert (t["dumps"], t["blocking_gate"]) == (False, "dumpable")
    os.kill(pid, signal.SIGSEGV)
    ovs.wait_log(rf"pid {pid} died, killed \(Segmentation fault\), restarting")
    assert glob.glob(f"{ovs.cores}/*") == []
    pid = ovs.wait_worker(other_than=pid)

    # 2. fix --apply: fs.suid_dumpable=2 (the pattern is absolute already), persisted; restart needed
    r = cd("fix", "--pid", str(pid), "--apply", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["applied"] and doc["id"]
    assert [(a["kind"], a.get("key") or a.get("path")) for a in doc["actions"]] == \
        [("sysctl", "fs.suid_dumpable"), ("file", SYSCTL_FILE)]
    assert [x["pid"] for x in doc["needs_restart"]] == [pid]
    assert L.read_sysctl("fs.suid_dumpable") == "2" and L.read_sysctl("kernel.core_pattern") == pattern
    text = cd("fix", "--pid", str(pid)).stdout
    assert "RESTART NEEDED" in text  # the running daemon is still non-dumpable

    # the canary, through the same switch to openvswitch:hugetlbfs, now lands a core
    r = cd("canary", "--user", "openvswitch", "--group", "hugetlbfs", "--json")
    rep = json.loads(r.stdout)
    assert r.returncode == 0 and rep["dumped"] and rep["core"]["verified"], r.stdout
    assert rep["core"]["path"].startswith(f"{ovs.cores}/core.cd-canary.") and rep["core"]["removed"]
    if PIDFD:
        assert rep["agrees"] is True

    # 3. after restarting OVS, check says a core would be written and kill -SEGV leaves one
    ovs.stop()
    pid = ovs.start()
    t = json.loads(cd("check", "--pid", str(pid), "--json").stdout)["targets"][0]
    if PIDFD:
        assert (t["dumps"], t["dumpable"]["value"]) == (True, 2), t["verdict"]
    os.kill(pid, signal.SIGSEGV)
    ovs.wait_log(rf"pid {pid} died, killed \(Segmentation fault\), core dumped")
    core = f"{ovs.cores}/core.ovs-vswitchd.{pid}"
    assert os.path.getsize(core) > 0

    # 4. rollback restores fs.suid_dumpable and removes every file the fix wrote
    r = cd("fix", "--rollback", doc["id"], "--json")
    assert r.returncode == 0, r.stderr
    assert L.read_sysctl("fs.suid_dumpable") == "0" and L.read_sysctl("kernel.core_pattern") == pattern
    assert os.path.exists(SYSCTL_FILE) == had_file
