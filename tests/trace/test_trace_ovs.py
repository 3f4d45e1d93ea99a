"""The real Open vSwitch started under trace with --ovs-user (as on RHEL): the trace shows
ovs-vswitchd's own setresgid/setresuid and its 1 -> 0 transition under fs.suid_dumpable=0,
confirmed from the kernel, and check agrees with the trace about the running daemon."""
import json
import os
import subprocess

import pytest

import lab as L
import tracelab as T
from ovs import OVS, OVS_CTL


@pytest.fixture
def ovs(saved_sysctls):
    L.require_installed(OVS_CTL, "openvswitch-switch")
    o = OVS()
    try:
        yield o
    finally:
        o.cleanup()


def test_ovs_privilege_drop_under_trace(ovs, tmp_path):
    L.write_sysctl("fs.suid_dumpable", "0")
    out = tmp_path / "ovs-trace.jsonl"
    cmd = [T.PY, "-m", "coredoctor", "trace", "--json", "-o", str(out), "--",
           "unshare", "--net", "--fork", "--", OVS_CTL, "--system-id=random", "--no-record-hostname",
           f"--daemon-cwd={ovs.w}/cwd", "--ovs-user=openvswitch:hugetlbfs", "start"]
    env = dict(ovs.env, **{"PYTHONPATH": T.env()["PYTHONPATH"]})
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    worker = ovs.wait_worker()
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    mine = [x for x in recs if x.get("event") == "dumpable-change" and x.get("comm") == "ovs-vswitchd"
            and x["syscall"] in ("setresgid", "setresuid")]
    assert [x["syscall"] for x in mine][:2] == ["setresgid", "setresuid"], \
        [(x.get("comm"), x.get("pid"), x.get("syscall"), x.get("before"), x.get("after"))
         for x in recs if x.get("event") in ("dumpable-change", "cred-change", "attach")
         and x.get("comm") not in ("ovsdb-tool", "touch", "ovs-ctl", "sh", "unshare")] + \
        [x for x in recs if x.get("event") in ("summary", "notice")] + [r.stderr[-1500:]]
    gid_drop, uid_drop = mine[0], mine[1]
    assert (gid_drop["before"], gid_drop["after"], gid_drop["changed"]) == (1, 0, True), gid_drop
    assert gid_drop["suid_dumpable"] == 0 and gid_drop["cause"] == "privilege-change"
    assert uid_drop["after"] == 0 and uid_drop["pid"] == gid_drop["pid"]
    import pwd
    ovs_uid = pwd.getpwnam("openvswitch").pw_uid
    assert uid_drop["creds_after"]["uid"] == [ovs_uid] * 4
    # confirmed from the kernel (the quick setresgid -> setresuid pair may leave only the last
    # one readable in time: "not read", never a disagreement)
    for x in mine:
        assert x["confirmed"]["agrees"] in (True, None), x
        if x["confirmed"]["agrees"] is None:  # a race, said as such: never a silent pass
            assert "before" in x["confirmed"]["note"], x["confirmed"]
    # the worker the monitor forks inherits the flag: check says so about the live daemon
    rc = L.coredoctor("check", "--pid", str(worker), "--json")
    t = json.loads(rc.stdout)["targets"][0]
    if t["dumpable"]["source"] == "pidfd":
        assert t["dumpable"]["value"] == 0 and t["blocking_gate"] == "dumpable"
    else:  # no pidfd query (< 6.16): /proc ownership says "0 or 2"
        assert t["dumpable"]["candidates"] == [0, 2] and t["dumps"] is False
    assert T.of(recs, "summary")[0]["lost"] == 0
