"""The kernel's own words: make a process hit a gate for real, then find the kernel log line that
names it, classified with the same gate id that check predicted (both log formats: 6.12+ here,
pre-6.12 under the 6.1 guest)."""
import platform
import time

import pytest

import lab as L
from coredoctor.history.kmsg import read_kmsg
from coredoctor.snapshot import pidfd

PIDFD = pidfd.probe()

DROP = {"setresgid": [65534] * 3, "setgroups": [], "setresuid": [65534] * 3}


def _events_for(pid, timeout=3.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        evs = [e for e in read_kmsg() if e["pid"] == pid]
        if evs:
            return evs
        time.sleep(0.1)
    return []


@pytest.mark.parametrize("name,sysctl,spec,gate", [
    ("suid-path", {"kernel.core_pattern": "core.%p", "fs.suid_dumpable": 2},
     dict({"rlimit_core": [None, None], "cwd": "/tmp"}, **DROP), "suid-path"),
    ("rlimit-core-1-pipe", {"kernel.core_pattern": "|/nonexistent/helper %p", "fs.suid_dumpable": 0},
     {"rlimit_core": [1, None]}, "rlimit-core"),
    ("pipe-helper-missing", {"kernel.core_pattern": "|/nonexistent/helper %p", "fs.suid_dumpable": 0},
     {"rlimit_core": [None, None]}, "pipe-handler"),
])
def test_kernel_names_the_gate_check_predicted(saved_sysctls, name, sysctl, spec, gate, loud_kernel_log):
    L.set_sysctls(sysctl)
    v = L.Victim(spec)
    try:
        t = v.check()
        if PIDFD or "setresuid" not in spec:
            assert (t["dumps"], t["blocking_gate"]) == (False, gate), t["verdict"]
        else:  # dumpable "0 or 2": both refuse, the first in order is named
            assert (t["dumps"], t["blocking_gate"]) == (False, "dumpable"), t["verdict"]
        started = time.time()
        v.fault()
        refusals = [e for e in _events_for(v.pid) if e["event"] == "coredump-refused"]
        if not refusals and gate == "pipe-handler":
            # before 6.12 "Core dump to |%s pipe failed" names only the helper, no pid: the time
            # of the record is what ties it to the crash
            refusals = [e for e in read_kmsg() if e["gate"] == "pipe-handler" and e["pid"] is None
                        and e["time"] >= started - 1.0 and "/nonexistent/helper" in e["line"]]
        assert [e["gate"] for e in refusals] == [gate], refusals
    finally:
        v.close()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the segfault line is x86's show_signal_msg()")
def test_segfault_line_found(saved_sysctls, loud_kernel_log):
    L.set_sysctls({"kernel.core_pattern": "core", "fs.suid_dumpable": 0})
    v = L.Victim({"rlimit_core": [0, None]})
    try:
        L.kernel_log_room(1)
        v.fault()
        evs = [e for e in _events_for(v.pid) if e["event"] == "fault"]
        assert evs and evs[0]["signal"] == "SIGSEGV" and evs[0]["comm"].startswith("python")
        assert abs(evs[0]["time"] - time.time()) < 60
    finally:
        v.close()
