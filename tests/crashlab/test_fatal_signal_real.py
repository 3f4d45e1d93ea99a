"""print-fatal-signals lines name the process by its comm, which may hold spaces and slashes
("my prog", "kworker/0:1"): a real fault with kernel.print-fatal-signals on must be classified with
the right comm (6.18: "%pD: %s: potentially ...", no pid; 3.x: "%s/%d: ...", see the unit tests).
Kernels in between (6.1 here) print a bare "potentially unexpected fatal signal 11." with the pid and
comm only on the next line ("CPU: 0 PID: 134 Comm: my prog ..."), which history/kmsg does not join
yet: the test says so and skips there."""
import errno
import os
import time

import pytest

import lab as L
from coredoctor.history import syslog
from coredoctor.history.kmsg import read_kmsg

PFS = "/proc/sys/kernel/print-fatal-signals"


def _raw_kmsg():
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    out = []
    try:
        while True:
            try:
                out.append(os.read(fd, 8192).decode("utf-8", "replace").split("\n", 1)[0])
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno != errno.EPIPE:
                    raise
    finally:
        os.close(fd)


@pytest.fixture
def print_fatal_signals(saved_sysctls):
    before = open(PFS).read().strip()
    try:
        with open(PFS, "w") as f:
            f.write("1")
        yield
    finally:
        with open(PFS, "w") as f:
            f.write(before)
        assert open(PFS).read().strip() == before


@pytest.mark.parametrize("comm", ["my prog", "w/slash 1"])
def test_fatal_signal_line_of_a_comm_with_spaces(print_fatal_signals, comm):
    L.set_sysctls({"kernel.core_pattern": "core", "fs.suid_dumpable": 0})
    v = L.Victim({"rlimit_core": [0, None], "comm": comm})
    try:
        v.fault()
    finally:
        v.close()
    deadline = time.time() + 5
    evs = []
    while time.time() < deadline and not evs:
        evs = [e for e in read_kmsg() if e["event"] == "fatal-signal" and e["comm"] == comm
               and e["pid"] in (v.pid, None) and e["time"] > time.time() - 30]
        time.sleep(0.1)
    if not evs and any(r.endswith(";potentially unexpected fatal signal 11.") for r in _raw_kmsg()):
        pytest.skip("this kernel prints the fatal-signal line without comm or pid (pr_info, 4.x-6.x): "
                    "not classified by history/kmsg")
    assert evs, f"no fatal-signal line for {comm!r}"
    e = evs[-1]
    assert e["signo"] == 11
    if e["pid"] is not None:  # the "%s/%d:" format names the pid
        assert e["pid"] == v.pid
    # the same line as a syslog daemon files it
    line = f"Nov 25 16:13:00 host kernel: [ 12.345678] {e['line']}"
    got = syslog.parse_line(line, time.time())
    assert (got["event"], got["pid"], got["comm"]) == ("fatal-signal", e["pid"], comm)
