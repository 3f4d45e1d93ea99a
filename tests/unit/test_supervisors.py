"""The other witnesses of a crash: supervisors' lines about a child's death (one row per program,
format strings from each program's source, see daemonlog.SUPERVISORS), in syslog and in their own
log files, and what the kernel log can witness (history.witness)."""
import pytest

from coredoctor.history import BadRecord, daemonlog, supervisors, witness
from coredoctor.history.crashes import correlate

# ident, message, pid, signal, dumped
MESSAGES = [
    ("ovs-vswitchd", "ovs|00007|daemon_unix(monitor)|ERR|1 crashes: pid 2875 died, killed (Segmentation fault), "
     "core dumped, restarting", 2875, "SIGSEGV", True),
    ("ovs-vswitchd", "ovs|00009|daemon_unix(monitor)|ERR|2 crashes: pid 2876 died, killed (Aborted), restarting",
     2876, "SIGABRT", False),
    ("nginx", "[alert] 1234#1234: worker process 1235 exited on signal 11 (core dumped)", 1235, "SIGSEGV", True),
    ("nginx", "[alert] 1234#1234: cache manager process 1236 exited on signal 6", 1236, "SIGABRT", False),
    ("apache2", "[core:notice] [pid 900:tid 900] AH00051: child pid 901 exit signal Segmentation fault (11), "
     "possible coredump in /etc/apache2", 901, "SIGSEGV", True),
    ("httpd", "[core:notice] [pid 900:tid 900] AH00052: child pid 902 exit signal Bus error (7)", 902, "SIGBUS",
     False),
    ("postgres", "[99] LOG:  server process (PID 1300) was terminated by signal 11: Segmentation fault", 1300,
     "SIGSEGV", None),
    ("php-fpm8.2", "WARNING: [pool www] child 1400 exited on signal 11 (SIGSEGV - core dumped) after 10.500000 "
     "seconds from start", 1400, "SIGSEGV", True),
    ("php-fpm", "WARNING: [pool www] child 1401 exited on signal 6 (SIGABRT) after 1.0 seconds from start", 1401,
     "SIGABRT", False),
    ("supervisord", "INFO exited: worker (terminated by SIGSEGV (core dumped); not expected)", None, "SIGSEGV",
     True),
]


@pytest.mark.parametrize("ident,msg,pid,sig,dumped", MESSAGES)
def test_supervisor_rows(ident, msg, pid, sig, dumped):
    e = daemonlog.parse_message(ident, "77", msg, 1000.0)
    assert e is not None and e["event"] == "supervisor-exit", msg
    assert (e["pid"], e["signal"], e["dumped"]) == (pid, sig, dumped)


@pytest.mark.parametrize("ident,msg", [
    ("ovs-vswitchd", "ovs|00007|daemon_unix(monitor)|ERR|1 crashes: pid 2875 died, killed (Terminated), restarting"),
    ("nginx", "[alert] 1#1: worker process 2 exited on signal 15"),   # a stop, not a crash
    ("postgres", "[9] LOG:  server process (PID 10) was terminated by signal 9: Killed"),
    ("someprog", "[alert] 1#1: worker process 2 exited on signal 11 (core dumped)"),   # not nginx's ident
])
def test_not_a_crash(ident, msg):
    assert daemonlog.parse_message(ident, None, msg) is None


def test_supervisord_spawned_line_names_the_pid():
    evs = [daemonlog.parse_message("supervisord", None, "INFO spawned: 'worker' with pid 4321", 1.0),
           daemonlog.parse_message("supervisord", None, "INFO exited: worker (terminated by SIGSEGV; not expected)",
                                   2.0)]
    out = daemonlog.link(evs)
    assert [e["event"] for e in out] == ["supervisor-spawned", "supervisor-exit"]
    assert out[1]["pid"] == 4321 and out[1]["dumped"] is False
    (c,) = correlate(out)  # the start is no crash
    assert c["pid"] == 4321 and c["supervisor"]["program"] == "supervisord"


FILE_LINES = [
    ("2026/12/01 12:00:05 [alert] 1234#1234: worker process 1235 exited on signal 11 (core dumped)", 1235, True),
    ("2026-12-01T12:00:05.123Z|00007|daemon_unix(monitor)|ERR|1 crashes: pid 2875 died, killed (Segmentation fault), "
     "restarting", 2875, False),
    ("[Tue Dec 01 12:00:05.123456 2026] [core:notice] [pid 900:tid 900] AH00052: child pid 902 exit signal "
     "Segmentation fault (11)", 902, False),
    ("2026-12-01 12:00:05.123 UTC [99] LOG:  server process (PID 1300) was terminated by signal 11: Segmentation "
     "fault", 1300, None),
    ("[01-Dec-2026 12:00:05] WARNING: [pool www] child 1400 exited on signal 11 (SIGSEGV - core dumped) after 1.5 "
     "seconds from start", 1400, True),
    ("2026-12-01 12:00:05,123 INFO exited: w (terminated by SIGSEGV (core dumped); not expected)", None, True),
]


@pytest.mark.parametrize("line,pid,dumped", FILE_LINES)
def test_own_log_file_lines(line, pid, dumped):
    e = supervisors.parse_file_line(line)
    assert e is not None and (e["pid"], e["dumped"]) == (pid, dumped)
    assert e["time"] is not None and abs(e["time"] - 1796126405) < 14 * 3600 + 1  # 2026-12-01 12:00:05 +-tz


def test_own_log_file_hostile(tmp_path):
    with pytest.raises(BadRecord):
        supervisors.parse_file_line("2026/12/01 12:00:05 [alert] 1#1: worker process " + "9" * 5000
                                    + " exited on signal 11")
    p = tmp_path / "error.log"
    p.write_bytes(b"2026/12/01 12:00:05 [alert] 1#1: worker process 7 exited on signal 11 (core dumped)\n"
                  + b"x" * 20000 + b"\n\xff\xfe\n"
                  + b"2026/12/01 12:00:06 [alert] 1#1: worker process 99999999999 exited on signal 11\n")
    bad = []
    got = list(supervisors.read([str(p)], skipped=bad.append))
    assert [e["pid"] for e in got] == [7] and len(bad) == 2
    link = tmp_path / "link.log"
    link.symlink_to(p)
    assert list(supervisors.read([str(link)])) == []  # never through a symlink


def test_supervisor_core_dumped_reaches_the_crash_record():
    e = daemonlog.parse_message("nginx", None, "[alert] 1#1: worker process 5 exited on signal 11 (core dumped)",
                                100.0)
    (c,) = correlate([e])
    assert c["pid"] == 5 and c["supervisor"]["dumped"] is True and c["supervisor"]["program"] == "nginx"


def test_witness_exception_trace():
    off = witness.kernel_log({"debug.exception-trace": 0}, "aarch64")
    assert off["faults_logged"] is False and "no kernel log line" in off["note"]
    assert [s["command"] for s in off["switches"]] == ["sysctl -w debug.exception-trace=1", "auditctl -e 1"]
    on = witness.kernel_log({"debug.exception-trace": 1, "kernel.printk_ratelimit": 5,
                             "kernel.printk_ratelimit_burst": 10}, "x86_64")
    assert on["faults_logged"] is True and on["switches"] == [] and on["ratelimit"]["burst"] == 10
    unk = witness.kernel_log({}, "s390x")
    assert unk["faults_logged"] is None and unk["switches"]


def test_crashes_text_names_the_switches():
    from coredoctor.render.text import crashes_report
    doc = {"crashes": [], "read": {"kmsg": "read (0 events)"},
           "kernel_log": witness.kernel_log({"debug.exception-trace": 0}, "aarch64")}
    out = crashes_report(doc).splitlines()
    blind = [ln for ln in out if "debug.exception-trace=0" in ln]
    assert len(blind) == 1 and "sysctl -w debug.exception-trace=1" in blind[0] and "auditctl -e 1" in blind[0]
    assert all(len(ln) <= 100 for ln in out)
    doc["kernel_log"] = witness.kernel_log({"debug.exception-trace": 1}, "aarch64")
    assert "debug.exception-trace" not in crashes_report(doc)
