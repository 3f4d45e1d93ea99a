"""Kernel log lines as real kernels print them (6.18 lines copied from this machine's dmesg;
pre-6.12 lines from fs/coredump.c of those versions)."""
import pytest

from coredoctor.history.kmsg import parse_dmesg_line, parse_line

CASES = [
    ("python[15609]: segfault at 0 ip 00007f3499585ad8 sp 00007ffda54d0ab8 error 4 in libc.so.6[167ad8,"
     "7f3499444000+156000] likely on CPU 0 (core 0, socket 0)", "fault", 15609, "python", None, "SIGSEGV"),
    ("traps: a.out[311] general protection fault ip:401136 sp:7ffd1b8 error:0 in a.out[401000+1000]",
     "fault", 311, "a.out", None, "SIGSEGV"),
    ("traps: a.out[312] trap divide error ip:401136 sp:7ffd1b8 error:0 in a.out[401000+1000]",
     "fault", 312, "a.out", None, "SIGFPE"),
    ("python3.11: python3: potentially unexpected fatal signal 11.", "fatal-signal", None, "python3", None, None),
    ("python3/16655: potentially unexpected fatal signal 11.", "fatal-signal", 16655, "python3", None, None),
    ('audit: type=1701 audit(1732500000.123:45): auid=4294967295 uid=0 gid=0 ses=4294967295 subj=unconfined '
     'pid=123 comm="ovs-vswitchd" exe="/usr/sbin/ovs-vswitchd" sig=11 res=1', "audit-abend", 123, "ovs-vswitchd",
     None, None),
    ("coredump: 10562(python): this process can only dump core to a fully qualified path, skipping core dump",
     "coredump-refused", 10562, "python", "suid-path", None),
    ("coredump: 10749(python): RLIMIT_CORE is set to 1, aborting core", "coredump-refused", 10749, "python",
     "rlimit-core", None),
    ("coredump: 10754(python): |/tmp/cdlab-h74n61x1/nohelper pipe failed", "coredump-refused", 10754, "python",
     "pipe-handler", None),
    ("coredump: 10784(python): Coredump socket connection /tmp/x/none.sock failed -2", "coredump-refused", 10784,
     "python", "socket-handler", None),
    ("coredump: 10732(python): Core dump to /tmp/c/core.10732 aborted: cannot preserve file permissions",
     "coredump-refused", 10732, "python", "core-file", None),
    ("Pid 4242(nginx) can only dump core to fully qualified path!", "coredump-refused", 4242, "nginx", "suid-path",
     None),
    ("Process 4243(x) has RLIMIT_CORE set to 1", "coredump-refused", 4243, "x", "rlimit-core", None),
    ("Core dump to |/usr/share/apport/apport -p4244 pipe failed", "coredump-refused", None, None, "pipe-handler", None),
    ("systemd-coredump[16121]: Failed to connect to coredump service: No such file or directory", "handler", None,
     None, "handler-policy", None),
]


@pytest.mark.parametrize("line,event,pid,comm,gate,signal", CASES)
def test_classify(line, event, pid, comm, gate, signal):
    e = parse_line(line)
    assert e is not None, line
    assert (e["event"], e["pid"], e["comm"], e["gate"]) == (event, pid, comm, gate)
    if signal:
        assert e["signal"] == signal


def test_unrelated_lines_and_dmesg_prefix():
    assert parse_line("Code: e1 ff ff ff c3 66 2e 0f 1f 84 00") is None
    assert parse_line("coredump: 1(sysctl): Unsafe core_pattern used with fs.suid_dumpable=2: pipe handler "
                      "or fully qualified core dump path required.") is None
    e = parse_dmesg_line("[ 5307.616353] python[15609]: segfault at 0 ip 00007f3499585ad8 sp 00007ffda54d0ab8 "
                         "error 4 in libc.so.6[167ad8,7f3499444000+156000]", boot_time=1000.0)
    assert e["pid"] == 15609 and abs(e["time"] - 6307.616353) < 1e-6


# print_fatal_signal() and the show_regs() line after it, as 6.1 (Debian 12, qemu) and 6.18 print them
TASK_LINES = {
    "6.1": ["potentially unexpected fatal signal 11.",
            "CPU: 1 PID: 134 Comm: python3 Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2"],
    "6.18": ["python3.11: my prog: potentially unexpected fatal signal 11.",
             "CPU: 0 UID: 0 PID: 20252 Comm: my prog Not tainted 6.18.44-fc-v669 #1 PREEMPT(none) "],
}


@pytest.mark.parametrize("kernel,pid,comm", [("6.1", 134, "python3"), ("6.18", 20252, "my prog")])
def test_fatal_signal_takes_pid_from_the_task_context_line(kernel, pid, comm):
    from coredoctor.history.kmsg import join_task_context
    evs = list(join_task_context([parse_line(l, 100.0) for l in TASK_LINES[kernel]]))
    assert [(e["event"], e["pid"], e["comm"], e["signo"]) for e in evs] == [("fatal-signal", pid, comm, 11)]


def test_task_context_alone_or_late_names_no_crash():
    from coredoctor.history.kmsg import join_task_context
    oops = parse_line("CPU: 0 PID: 7 Comm: kworker/0:1 Tainted: G        W  6.1.0 #1", 50.0)
    assert oops["event"] == "task-context"
    assert list(join_task_context([oops])) == []
    bare = parse_line("potentially unexpected fatal signal 6.", 100.0)
    late = parse_line("CPU: 1 PID: 99 Comm: other Not tainted 6.1.0 #1", 105.0)
    fault = parse_line("a.out[5]: segfault at 0 ip 0000000000401136 sp 00007ffd1b8 error 4", 100.1)
    # a fault line between them, or a context line seconds later: the pid stays unknown
    out = list(join_task_context([bare, fault, parse_line("CPU: 1 PID: 5 Comm: a.out Not tainted x", 100.2)]))
    assert [(e["event"], e["pid"]) for e in out] == [("fatal-signal", None), ("fault", 5)]
    bare = parse_line("potentially unexpected fatal signal 6.", 100.0)
    out = list(join_task_context([bare, late]))
    assert [(e["event"], e["pid"]) for e in out] == [("fatal-signal", None)]
