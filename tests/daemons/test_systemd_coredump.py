"""The real systemd-coredump (Debian's pattern from its own 50-coredump.conf), socket-activated by
hand as ../shared/reference/real-components.md describes: check's handler-policy gate and the
canary's search of its store, against what the handler really keeps."""
import json
import os
import re

import pytest

import coredumpd as CD
import lab as L


def _debian_pattern():
    for p in ("/usr/lib/sysctl.d/50-coredump.conf", "/lib/sysctl.d/50-coredump.conf"):
        if os.path.exists(p):
            m = re.search(r"^kernel\.core_pattern\s*=\s*(.+)$", open(p).read(), re.M)
            if m:
                return m.group(1).strip()
    return f"|{CD.HELPER} %P %u %g %s %t 9223372036854775808 %h"


@pytest.fixture
def coredump_service(saved_sysctls):
    with CD.service() as cd:
        yield cd.start, cd.ours


def test_systemd_coredump_listener_decides(coredump_service, loud_kernel_log):
    start, ours = coredump_service
    L.set_sysctls({"kernel.core_pattern": _debian_pattern(), "fs.suid_dumpable": 2, "kernel.core_pipe_limit": 16})

    # no listener on /run/systemd/coredump: the kernel still pipes the core ("core dumped"), the
    # helper cannot hand it over, and nothing is stored
    v = L.Victim({"rlimit_core": [0, None]})
    ours.append(v.pid)
    try:
        t = v.check()
        assert (t["dumps"], t["blocking_gate"]) == (False, "handler-policy"), t["verdict"]
        assert t["core_destination"]["handler"] == "systemd-coredump"
        L.kernel_log_room(2)
        status = v.fault()
        assert os.WCOREDUMP(status)                 # what the shell would call "(core dumped)"
        assert CD.stored(v.pid, 3) is None          # ...and yet no core
    finally:
        v.close()

    lost = v.pid

    # with the socket listening: stored, RLIMIT_CORE 0 notwithstanding (Debian passes a literal for %c)
    start()
    v = L.Victim({"rlimit_core": [0, None]})
    ours.append(v.pid)
    try:
        t = v.check()
        assert (t["dumps"], t["blocking_gate"]) == (True, None), t["verdict"]
        v.fault()
        stored = CD.stored(v.pid, 10)
        assert stored
    finally:
        v.close()

    # crashes: both found again; the stored core matched to its crash by pid and time, the lost
    # one missing with the handler's own complaint as the reason
    r = L.coredoctor("crashes", "--json", "--since", "10 minutes ago")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    found = {c["pid"]: c for c in doc["crashes"]}
    c = found[v.pid]
    assert (c["core"]["status"], c["core"]["path"]) == ("present", stored), c["core"]
    assert c["core"]["size"] == os.path.getsize(stored) and c["core"]["handler"] == "systemd-coredump"
    assert any(s.startswith("systemd-coredump:") or s == "coredumpctl" for s in c["sources"]), c["sources"]
    c = found[lost]
    assert c["core"]["status"] == "missing" and c["likely_reason"]["gate"] == "handler-policy", c
    assert "Failed to connect to coredump service" in c["likely_reason"]["evidence"], c["likely_reason"]

    # the canary finds its core in systemd-coredump's store, and removes it
    r = L.coredoctor("canary", "--user", "nobody", "--group", "nogroup", "--json")
    rep = json.loads(r.stdout)
    ours.append(rep["pid"])
    assert r.returncode == 0 and rep["dumped"], r.stdout + r.stderr
    assert rep["core"]["path"].startswith(f"{CD.STORE}/core.cd-canary.") and rep["core"]["removed"]
