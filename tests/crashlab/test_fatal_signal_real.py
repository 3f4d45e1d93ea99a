"""print-fatal-signals lines name the process by its comm, which may hold spaces and slashes
("my prog", "kworker/0:1"): a real fault with kernel.print-fatal-signals on must be classified with
the right comm (6.18: "%pD: %s: potentially ...", no pid; 3.x: "%s/%d: ...", see the unit tests).
Kernels in between (6.1 here) print a bare "potentially unexpected fatal signal 11." with the pid and
comm only on the next line ("CPU: 0 PID: 134 Comm: my prog ..."). history/kmsg joins that line to it
(kmsg.join_task_context), so on every kernel the event must name the victim's pid; a syslog file
holding both lines must give the same."""
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
        evs = [e for e in read_kmsg() if e["event"] == "fatal-signal" and e["pid"] == v.pid]
        time.sleep(0.1)
    assert evs, f"no fatal-signal line for pid {v.pid} ({comm!r}): " + " | ".join(
        r for r in _raw_kmsg() if "fatal signal" in r or "Comm:" in r)
    e = evs[-1]
    assert e["signo"] == 11 and e["comm"] == comm
    # the same lines as a syslog daemon files them (one or two lines: the task context follows)
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".log", dir="/tmp") as f:
        for part in e["line"].split(" / "):
            f.write(f"Nov 25 16:13:00 host kernel: [ 12.345678] {part}\n")
        f.flush()
        got = [g for g in syslog.read([f.name]) if g["event"] == "fatal-signal"]
    assert [(g["pid"], g["comm"], g["signo"]) for g in got] == [(v.pid, comm, 11)]
