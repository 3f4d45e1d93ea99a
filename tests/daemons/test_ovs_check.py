"""check against the real ovs-vswitchd: the seed case, end to end."""
import glob
import json
import os
import signal

import lab as L
from coredoctor.snapshot import pidfd

PIDFD = pidfd.probe()


def check(pid):
    r = L.coredoctor("check", "--pid", str(pid), "--json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["targets"][0]


def test_ovs_privilege_drop_then_fix_and_restart(ovs):
    L.set_sysctls({"kernel.core_pattern": f"{ovs.cores}/core.%e.%p", "fs.suid_dumpable": 0})
    pid = ovs.start()

    # 1. the seed: non-dumpable since the switch to openvswitch:hugetlbfs under fs.suid_dumpable=0
    t = check(pid)
    assert t["dumpable"]["cause"] == "privilege-change"
    if PIDFD:
        assert (t["dumps"], t["blocking_gate"]) == (False, "dumpable")
        assert "openvswitch:hugetlbfs while fs.suid_dumpable was 0" in t["verdict"]
    else:  # before 6.16 /proc ownership cannot tell 0 from 2, and with an absolute pattern it matters
        assert (t["dumps"], t["dumpable"]["candidates"]) == (None, [0, 2])
        assert "could be 0 or 2" in t["verdict"]
    assert any(f["needs_restart"] and "sysctl -w fs.suid_dumpable=2" in f["commands"] for f in t["fixes"])
    # what made it switch: its own --user option, as ovs-ctl's --ovs-user passed it on (issue 10)
    o = t["dumpable"]["origin"]
    assert (o["kind"], o["program"], o["argv"]) == ("argv", "ovs-vswitchd", ["--user", "openvswitch:hugetlbfs"])
    w = o["via"][0]
    assert (w["program"], w["argv"]) == ("ovs-ctl", ["--ovs-user=openvswitch:hugetlbfs"])
    assert w["file"] == "/usr/share/openvswitch/scripts/ovs-ctl" and '--user "$OVS_USER"' in w["text"]
    with open(w["file"]) as f:
        assert '--user "$OVS_USER"' in f.read().splitlines()[w["line"] - 1]
    assert any(a.get("risk") and "root:root" in a.get("text", "") for f in t["fixes"] for a in f["actions"])
    signal_gate = next(g for g in t["gates"] if g["id"] == "signal")
    assert signal_gate["status"] == "pass" and "re-raise" in signal_gate["evidence"]

    # the kernel agrees: no core, the monitor restarts the daemon
    os.kill(pid, signal.SIGSEGV)
    ovs.wait_log(rf"pid {pid} died, killed \(Segmentation fault\), restarting")
    assert "core dumped" not in ovs.log()
    assert glob.glob(f"{ovs.cores}/*") == []
    pid2 = ovs.wait_worker(other_than=pid)

    # 2. fs.suid_dumpable=2 now changes nothing for the running daemon: the flag was copied at
    #    the privilege change
    L.write_sysctl("fs.suid_dumpable", 2)
    t = check(pid2)
    assert t["dumps"] is False if PIDFD else t["dumps"] in (False, None)
    if PIDFD:
        assert t["dumpable"]["value"] == 0

    # 3. after a restart the daemon is dumpable=2 and a SIGSEGV leaves a root-owned core
    ovs.stop()
    pid3 = ovs.start()
    t = check(pid3)
    if PIDFD:
        assert t["dumpable"]["value"] == 2
        assert (t["dumps"], t["blocking_gate"]) == (True, None), t["verdict"]
    os.kill(pid3, signal.SIGSEGV)
    ovs.wait_log(rf"pid {pid3} died, killed \(Segmentation fault\), core dumped")
    core = t["core_destination"]["path"]
    assert os.path.getsize(core) > 0
    st = os.stat(core)
    assert st.st_uid == 0 and oct(st.st_mode & 0o777) == "0o600"

    # 4. and the OVS monitor then disables further cores (RLIMIT_CORE 0) -- check sees that too
    pid4 = ovs.wait_worker(other_than=pid3)
    t = check(pid4)
    assert (t["dumps"], t["blocking_gate"]) == (False, "rlimit-core")
    o = next(g for g in t["gates"] if g["id"] == "rlimit-core")["origin"]
    assert o["kind"] == "inherited" and "--monitor parent" in o["summary"] and "monitor_daemon" in o["source"]
