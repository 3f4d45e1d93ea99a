"""User-space crash lines as the programs print them. Strings are from the sources: systemd
src/core/service.c and src/coredump/coredump.c (v239..v257; the v252 formats also checked against
Debian 12's installed binaries with strings(1)), apport data/apport (2.20..2.33); apport.log lines as
users posted them."""
import time

import pytest

from coredoctor.history.daemonlog import IDENTS, PATTERNS, link, parse_apport_line, parse_message, parse_tagged

# ident, message, event, pid, comm, gate, signal, dumped
CASES = [
    ("systemd", "ovs-vswitchd.service: Main process exited, code=dumped, status=11/SEGV",
     "unit-result", None, None, None, "SIGSEGV", True),
    ("systemd", "nginx.service: Main process exited, code=killed, status=6/ABRT",
     "unit-result", None, None, None, "SIGABRT", False),
    ("systemd", "foo.service: main process exited, code=dumped, status=8/FPE",  # before v236
     "unit-result", None, None, None, "SIGFPE", True),
    ("systemd", "foo.service: Control process exited, code=dumped, status=7/BUS",
     "unit-result", None, None, None, "SIGBUS", True),
    ("systemd", "ovs-vswitchd.service: Failed with result 'core-dump'.", "unit-result", None, None, None, None, True),
    ("systemd-coredump", "Process 24950 (ovs-vswitchd) of user 0 terminated abnormally with signal 11/SEGV, "
     "processing...", "handler-called", 24950, "ovs-vswitchd", None, "SIGSEGV", None),
    ("systemd-coredump", "Process 24950 (ovs-vswitchd) of user 0 dumped core.", "handler-stored", 24950,
     "ovs-vswitchd", None, None, None),
    ("systemd-coredump", "Process 77 (my (odd) prog) of user 1000 terminated abnormally without generating a "
     "coredump.", "handler-refused", 77, "my (odd) prog", "handler-policy", None, None),
    ("systemd-coredump", "Resource limits disable core dumping for process 4242 (python3).", "handler-refused",
     4242, "python3", "rlimit-core", None, None),
    ("systemd-coredump", "Core file was truncated to 2147483648 bytes.", "handler-truncated", None, None, None,
     None, None),
    ("systemd-coredump", "The core will not be stored: size 9000000 is greater than 1000 (the configured maximum)",
     "handler-refused", None, None, "handler-policy", None, None),
    ("systemd-coredump", "Cannot store coredump of 4243 (x): No space left on device", "handler-refused", 4243, "x",
     "space", None, None),
    ("systemd-coredump", "Failed to connect to coredump service: No such file or directory", "handler-refused",
     None, None, "handler-policy", None, None),
    ("apport", "called for pid 17767, signal 11, core limit 0, dump mode 1", "handler-called", 17767, None, None,
     "SIGSEGV", None),
    ("apport", "called for global pid 9, signal 6, core limit -1, dump mode 2", "handler-called", 9, None, None,
     "SIGABRT", None),
    ("apport", "executable does not belong to a package, ignoring", "handler-refused", None, None, "handler-policy",
     None, None),
    ("apport", "this executable already crashed 2 times, ignoring", "handler-refused", None, None, "handler-policy",
     None, None),
    ("apport", "not creating core for pid with dump mode of 2", "handler-refused", None, None, "handler-policy", None,
     None),
    ("apport", "Ignoring signal 25 (caused by exceeding soft RLIMIT)", "handler-refused", None, None,
     "handler-policy", "SIGXFSZ", None),
    ("apport", "core dump exceeded 1500 MiB, dropped to avoid memory overflow", "handler-refused", None, None,
     "handler-policy", None, None),
    ("apport", "/proc/4711 not found. Cannot collect crash information for process 4711 any more.",
     "handler-refused", 4711, None, "handler-policy", None, None),
    ("apport", "The process 4712 has already been replaced by a new process with the same ID. Ignoring crash.",
     "handler-refused", 4712, None, "handler-policy", None, None),
    ("apport", "host pid 4713 crashed in a container without apport support", "handler-refused", 4713, None,
     "handler-policy", None, None),
    ("apport", "Ignoring systemd watchdog restart", "handler-refused", None, None, "handler-policy", None, None),
    ("apport", 'executable: /usr/bin/crashy (command line "crashy --now")', "handler-exe", None, None, None, None,
     None),
    ("apport", "aborting core dump writing, size exceeds current limit 4096", "handler-refused", None, None,
     "rlimit-core", None, None),
    ("apport", "writing core dump to core._a_out.1000.f51f0527-4e10-4be1-b463-4f8019c6299a.64871.30416479 "
     "(limit: -1)", "handler-stored", None, None, None, None, None),
    ("apport", "wrote report /var/crash/_usr_bin_crashy.1000.crash", "handler-stored", None, None, None, None, None),
    # supervisors (daemonlog.SUPERVISORS): the parent's word on a child's death, "core dumped" = WCOREDUMP
    ("ovs-vswitchd", "ovs|00007|daemon_unix(monitor)|ERR|1 crashes: pid 2875 died, killed (Segmentation fault), "
     "core dumped, restarting", "supervisor-exit", 2875, None, None, "SIGSEGV", True),
    ("ovsdb-server", "ovs|00003|daemon_unix(monitor)|ERR|1 crashes: pid 2870 died, killed (Aborted), restarting",
     "supervisor-exit", 2870, None, None, "SIGABRT", False),
    ("nginx", "[alert] 1234#1234: worker process 1235 exited on signal 11", "supervisor-exit", 1235, None, None,
     "SIGSEGV", False),
    ("httpd", "[core:notice] [pid 9:tid 9] AH00051: child pid 901 exit signal Segmentation fault (11), possible "
     "coredump in /etc/apache2", "supervisor-exit", 901, None, None, "SIGSEGV", True),
    ("postgres", "[99] LOG:  server process (PID 1300) was terminated by signal 11: Segmentation fault",
     "supervisor-exit", 1300, None, None, "SIGSEGV", None),
    ("php-fpm", "WARNING: [pool www] child 1400 exited on signal 11 (SIGSEGV - core dumped) after 1.5 seconds from "
     "start", "supervisor-exit", 1400, None, None, "SIGSEGV", True),
    ("supervisord", "INFO exited: worker (terminated by SIGSEGV (core dumped); not expected)", "supervisor-exit",
     None, "worker", None, "SIGSEGV", True),
    ("supervisord", "INFO spawned: 'worker' with pid 4321", "supervisor-spawned", 4321, "worker", None, None, None),
]


@pytest.mark.parametrize("ident,msg,event,pid,comm,gate,signal,dumped", CASES)
def test_classify(ident, msg, event, pid, comm, gate, signal, dumped):
    e = parse_message(ident, 555, msg, when=1000.0)
    assert e is not None, msg
    assert (e["event"], e["pid"], e["comm"], e["gate"], e["signal"], e["dumped"]) == \
        (event, pid, comm, gate, signal, dumped)
    assert e["time"] == 1000.0 and e["line"] == msg and e["ref"]
    assert e["hpid"] == (None if ident == "systemd" else 555)


def test_every_pattern_has_a_case():
    used = set()
    for ident, msg, *_ in CASES:
        for p in PATTERNS:
            if p.ident == ident and p.regex.search(msg):
                used.add(id(p))
                break
    assert [p.regex.pattern for p in PATTERNS if id(p) not in used] == []


@pytest.mark.parametrize("ident,msg", [
    ("systemd", "nginx.service: Main process exited, code=killed, status=15/TERM"),   # a stop
    ("systemd", "nginx.service: Main process exited, code=exited, status=1/FAILURE"),
    ("systemd", "nginx.service: Failed with result 'exit-code'."),
    ("systemd", "nginx.service: Failed with result 'signal'."),  # also a kill -9 by hand
    ("systemd-coredump", "Stack trace of thread 24950:"),
    ("systemd-coredump", "#0  0x00007f3499585ad8 n/a (libc.so.6 + 0x167ad8)"),
    ("sshd", "Process 1 (x) of user 0 dumped core."),  # the right words from the wrong program
    ("apport", "executable: /usr/bin/true (command line \"true\") ignoring nothing"),
    (None, "Process 1 (x) of user 0 dumped core."),
])
def test_not_a_crash(ident, msg):
    e = parse_message(ident, 1, msg)
    assert e is None or e["event"] == "handler-exe", e


def test_coredump_stack_follows_in_the_message():
    # the journal's MESSAGE holds "\n\n" + the stack; rsyslog writes newlines as #012
    for sep in ("\n", "#012"):
        msg = sep.join(["Process 24950 (ovs-vswitchd) of user 0 dumped core.", "",
                        "Stack trace of thread 24950:", "#0  0x00007f3499585ad8 raise (libc.so.6 + 0x3cad8)",
                        "#1  0x000055d1 main (ovs-vswitchd + 0x1234)"])
        e = parse_message("systemd-coredump", 3000, msg)
        assert e["line"] == "Process 24950 (ovs-vswitchd) of user 0 dumped core."
        assert e["stack"][0] == "Stack trace of thread 24950:" and len(e["stack"]) == 3


def test_ident_from_a_path_or_unit_name():
    assert parse_message("/lib/systemd/systemd-coredump", 1, "Core file was truncated to 4096 bytes.")["size"] == 4096
    assert parse_message("systemd-coredump@0-1234-0.service", 1,
                         "Process 5 (x) of user 0 dumped core.")["pid"] == 5
    assert set(IDENTS) == {"systemd", "systemd-coredump", "apport"}


def test_apport_log_lines_and_link():
    lines = [
        # apport 2.20 (Ubuntu 20.04), as posted by users
        "ERROR: apport (pid 17768) Thu Apr 27 03:08:58 2023: called for pid 17767, signal 11, core limit 0, "
        "dump mode 1",
        "ERROR: apport (pid 17768) Thu Apr 27 03:08:58 2023: executable: /a.out (command line \"./a.out\")",
        "ERROR: apport (pid 17768) Thu Apr 27 03:08:58 2023: executable does not belong to a package, ignoring",
        # a different apport process, logging's default asctime (apport 2.27+)
        "INFO: apport (pid 64872) 2024-08-18 17:28:39,500: called for pid 64871, signal 6, core limit -1, "
        "dump mode 1",
        "ERROR: apport (pid 64872) 2024-08-18 17:28:39,501: executable does not belong to a package, ignoring",
        "INFO: apport (pid 64872) 2024-08-18 17:28:39,502: writing core dump to core._a_out.1000.x.64871.30416479 "
        "(limit: -1)",
        "some unrelated line",
    ]
    evs = link([e for e in map(parse_apport_line, lines) if e is not None])
    assert [(e["event"], e["pid"], e["hpid"]) for e in evs] == [
        ("handler-called", 17767, 17768), ("handler-exe", 17767, 17768), ("handler-refused", 17767, 17768),
        ("handler-called", 64871, 64872), ("handler-refused", 64871, 64872), ("handler-stored", 64871, 64872)]
    assert evs[1]["exe"] == "/a.out" and evs[2]["signal"] == "SIGSEGV" and evs[4]["signal"] == "SIGABRT"
    assert evs[0]["time"] == time.mktime((2023, 4, 27, 3, 8, 58, 0, 0, -1))
    assert abs(evs[3]["time"] - time.mktime((2024, 8, 18, 17, 28, 39, 0, 0, -1)) - 0.5) < 1e-6
    assert evs[5]["limit"] == -1 and evs[5]["path"].startswith("core._a_out")


def test_link_systemd_coredump_by_handler_pid():
    evs = link([parse_message("systemd-coredump", 3000, "Process 24950 (ovs-vswitchd) of user 0 terminated abnormally "
                              "with signal 11/SEGV, processing..."),
                parse_message("systemd-coredump", 3001, "Core file was truncated to 4096 bytes."),  # other handler
                parse_message("systemd-coredump", 3000, "Core file was truncated to 8192 bytes."),
                parse_message("systemd-coredump", 3000, "Process 24950 (ovs-vswitchd) of user 0 dumped core.")])
    assert [(e["pid"], e["comm"], e["signal"]) for e in evs] == [
        (24950, "ovs-vswitchd", "SIGSEGV"), (None, None, None), (24950, "ovs-vswitchd", "SIGSEGV"),
        (24950, "ovs-vswitchd", "SIGSEGV")]


def test_tagged_records_from_the_kernel_log():
    # /dev/kmsg records written by the real systemd-coredump 252 on this machine (no journald)
    e = parse_tagged("systemd-coredump[30461]: Resource limits disable core dumping for process 30459 (python3).",
                     when=5.0)
    assert (e["event"], e["pid"], e["comm"], e["gate"], e["hpid"], e["source"], e["time"]) == \
        ("handler-refused", 30459, "python3", "rlimit-core", 30461, "kmsg", 5.0)
    assert e["line"].startswith("systemd-coredump[30461]: Resource limits")
    e = parse_tagged("systemd-coredump[23341]: Failed to connect to coredump service: No such file or directory")
    assert (e["event"], e["gate"], e["detail"]) == ("handler-refused", "handler-policy", "No such file or directory")
    assert parse_tagged("systemd[1]: nginx.service: Main process exited, code=dumped, status=6/ABRT")["dumped"] is True
    # the kernel's own lines look tagged too, and are not ours
    assert parse_tagged("python3[30454]: segfault at 0 ip 00007faca8785ad8 sp 00007ffca2c646c8 error 4") is None
    assert parse_tagged("systemd[1]: segfault at 0 ip 00007faca8785ad8 sp 00007ffca2c646c8 error 4") is None
    assert parse_tagged("no tag here") is None
