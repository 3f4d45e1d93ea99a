"""Crash sources read from files the tests write themselves (a private root: apport's reports,
cores and log, rotated audit logs), and the correlation rules: one record per crash across places,
the same line or audit record once, pid reuse, the journal's time of imported kernel lines."""
import gzip
import os
import time

from coredoctor.history import apport, audit, crashes, journal, kmsg, report
from coredoctor.kernel import core_pattern, handlers

SIGNALS = {"SIGSEGV": 11, "SIGABRT": 6, "SIGBUS": 7}
APPORT = "|/usr/share/apport/apport -p%p -s%s -c%c -d%d -P%P -u%u -g%g -- %E"
T0 = time.mktime(time.strptime("Tue Nov 25 01:36:00 2026", "%a %b %d %H:%M:%S %Y"))


def _write(root, rel, text, mode="w"):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    if rel.endswith(".gz"):
        with gzip.open(p, "wt") as f:
            f.write(text)
    else:
        with open(p, mode) as f:
            f.write(text)
    return p


def _report(pid, exe, sig, date, core):
    text = (f"ProblemType: Crash\nArchitecture: amd64\nDate: {date}\nExecutablePath: {exe}\nSignal: {sig}\n"
            f"ProcStatus:\n Name:\t{os.path.basename(exe)[:15]}\n Umask:\t0022\n State:\tS (sleeping)\n Pid:\t{pid}\n"
            f" PPid:\t1\n")
    if core:
        text += "CoreDump: base64\n H4sICAAAAAAC/0NvcmVEdW1wAA==\n AAAA\n"
    return text + "Uname: Linux 6.18.0 x86_64\n"


def _env(pattern, root, **kw):
    parsed = core_pattern.parse(pattern)
    env = {"parsed": parsed, "signals": SIGNALS, "base_dirs": lambda c: ([], []), "instance": lambda c: None,
           "policy": None, "missing_dir": None}
    if parsed["kind"] == "pipe":
        env["policy"] = report.handler_policy(parsed, {"apport": {"enabled": apport.enabled(root)}})
    env.update(kw)
    return env


def test_apport_reports_cores_and_log(tmp_path):
    root = str(tmp_path)
    _write(root, "etc/default/apport", "# set this to 0 to disable apport\nenabled=1\n")
    kept = _write(root, "var/crash/_opt_cd_bin_kept.0.crash", _report(4101, "/opt/cd/bin/kept", 11,
                                                                      "Tue Nov 25 01:36:00 2026", core=True))
    _write(root, "var/crash/_opt_cd_bin_nocore.0.crash", _report(4102, "/opt/cd/bin/nocore", 6,
                                                                 "Tue Nov 25 01:37:00 2026", core=False))
    store = _write(root, "var/lib/apport/coredump/core._opt_cd_bin_stored.0.1b2c3d.4103.1795484280", "\x7fELF" * 64)
    _write(root, "var/log/apport.log.2.gz",
           "ERROR: apport (pid 9001) Tue Nov 25 01:38:00 2026: called for pid 4104, signal 11, core limit 0, dump mode 1\n"
           "ERROR: apport (pid 9001) Tue Nov 25 01:38:00 2026: executable: /opt/cd/bin/unpackaged (command line "
           "\"/opt/cd/bin/unpackaged\")\n"
           "ERROR: apport (pid 9001) Tue Nov 25 01:38:00 2026: executable does not belong to a package, ignoring\n")
    _write(root, "var/log/apport.log", "not an apport line\n")
    events, read = report.gather(root=root, only=["apport"])
    assert read["apport"].startswith("read")
    recs = {r["pid"]: r for r in report.records(events, _env(APPORT, root))}
    a = recs[4101]
    assert (a["core"]["status"], a["core"]["path"], a["exe"], a["signal"]) == ("present", kept, "/opt/cd/bin/kept", "SIGSEGV")
    assert a["time"] == T0 and a["sources"] == [f"apport:{kept}"]
    b = recs[4102]
    assert b["core"]["status"] == "missing" and b["signal"] == "SIGABRT" and b["likely_reason"]["gate"] is None
    c = recs[4103]
    assert (c["core"]["status"], c["core"]["path"], c["core"]["handler"]) == ("present", store, "apport")
    d = recs[4104]
    assert d["core"]["status"] == "missing" and d["exe"] == "/opt/cd/bin/unpackaged"
    assert d["likely_reason"]["gate"] == "handler-policy"
    assert "does not belong to a package" in d["likely_reason"]["evidence"]
    assert any(s.startswith("apport.log:") and s.endswith("apport.log.2.gz") for s in d["sources"])

    # a crash apport ignored for good: its executable is under /usr/local (known from the audit record)
    local = kmsg.parse_line('audit: type=1701 audit(1795484400.100:9): auid=0 uid=0 gid=0 ses=1 pid=4105 '
                            'comm="cd-local" exe="/usr/local/bin/cd-local" sig=11 res=1')
    r = {x["pid"]: x for x in report.records(events + [local], _env(APPORT, root))}[4105]
    assert r["core"]["status"] == "missing" and r["likely_reason"]["gate"] == "handler-policy"
    assert "does not belong to a package" in r["likely_reason"]["evidence"] and r["likely_reason"]["fix"]
    assert [handlers.apport_likely_packaged(x) for x in ("/usr/bin/x", "/usr/local/bin/x", "/home/u/a.out", None)] == \
        [True, False, False, None]

    # apport switched off: its policy now is the reason for a lost core
    _write(root, "etc/default/apport", "enabled=0\n")
    recs = {r["pid"]: r for r in report.records(events, _env(APPORT, root))}
    assert recs[4102]["likely_reason"]["gate"] == "handler-policy"
    assert "disabled" in recs[4102]["likely_reason"]["evidence"]


def test_audit_rotations_and_dedup_by_serial(tmp_path):
    root = str(tmp_path)
    rec = ('type=ANOM_ABEND msg=audit(1795484160.512:77): auid=4294967295 uid=0 gid=0 ses=4294967295 '
           'subj=unconfined pid={pid} comm={comm} exe="/usr/bin/cd-test" sig=11 res=1\x1dAUID="unset" UID="root"\n')
    _write(root, "etc/audit/auditd.conf", "log_file = /var/log/audit/audit.log\n")
    _write(root, "var/log/audit/audit.log.1", rec.format(pid=5001, comm='"cd-test"'))
    _write(root, "var/log/audit/audit.log", 'type=SYSCALL msg=audit(1.1:1): pid=1\n'
           + rec.format(pid=5002, comm="6364207465737420").replace(":77)", ":78)"))
    assert audit.log_files(root) == [f"{root}/var/log/audit/audit.log", f"{root}/var/log/audit/audit.log.1"]
    evs = list(audit.read(root=root))
    assert [(e["pid"], e["comm"], e["signo"], e["serial"]) for e in sorted(evs, key=lambda e: e["pid"])] == \
        [(5001, "cd-test", 11, "1795484160.512:77"), (5002, "cd test ", 11, "1795484160.512:78")]
    # the same record through the kernel log (no auditd then) is the same evidence
    k = kmsg.parse_line("audit: " + rec.format(pid=5001, comm='"cd-test"').split("\x1d")[0]
                        .replace("type=ANOM_ABEND msg=", "type=1701 "))
    fault = kmsg.parse_line("cd-test[5001]: segfault at 0 ip 00007f0000001000 sp 00007ffc00000000 error 4 in x[1000,2000]",
                            1795484160.4)
    recs = crashes.correlate(evs + [k, fault])
    one = [r for r in recs if r["pid"] == 5001]
    assert len(one) == 1 and set(one[0]["sources"]) == {"kmsg", f"audit:{root}/var/log/audit/audit.log.1"}
    assert [len(e["sources"]) for e in one[0]["events"] if e["event"] == "audit-abend"] == [2]
    assert one[0]["exe"] == "/usr/bin/cd-test" and one[0]["signo"] == 11


def test_pid_reuse_and_orphans():
    line = "cd-x[77]: segfault at 0 ip 0000000000401000 sp 00007ffc00000000 error 4 in cd-x[401000,1000]"
    a = kmsg.parse_line(line, 1000.0)
    b = kmsg.parse_line(line, 1100.0)           # pid 77 again, 100 s later: another crash
    refusal = kmsg.parse_line("Core dump to |/usr/lib/helper pipe failed", 1100.2)   # pre-6.12, no pid
    recs = crashes.correlate([b, a, refusal])
    assert [(r["pid"], r["time"]) for r in recs] == [(77, 1000.0), (77, 1100.0)]
    assert recs[0]["refusals"] == [] and recs[1]["refusals"][0]["gate"] == "pipe-handler"


def test_journal_entries():
    boot_rt = 1795484100_000000
    seg = "cd-j[321]: segfault at 0 ip 0000000000401000 sp 00007ffc00000000 error 4 in cd-j[401000,1000]"
    e = journal.parse_entry({"_TRANSPORT": "kernel", "MESSAGE": list(seg.encode()),
                             "__REALTIME_TIMESTAMP": str(boot_rt + 110_000000),
                             "__MONOTONIC_TIMESTAMP": "110000000", "_SOURCE_MONOTONIC_TIMESTAMP": "50000000"})
    assert (e["event"], e["pid"], e["source"]) == ("fault", 321, "journal")
    assert e["time"] == boot_rt / 1e6 + 50       # read at journald's start, a minute late: its own time
    cd = journal.parse_entry({"MESSAGE_ID": journal.COREDUMP_MESSAGE_ID, "MESSAGE": "Process 321 (cd-j) of user 0 dumped core.",
                              "COREDUMP_PID": "321", "COREDUMP_COMM": "cd-j", "COREDUMP_EXE": "/usr/bin/cd-j",
                              "COREDUMP_SIGNAL": "11", "COREDUMP_UNIT": "cd-j.service", "COREDUMP_TRUNCATED": "1",
                              "COREDUMP_TIMESTAMP": str(boot_rt + 50_000000),
                              "COREDUMP_FILENAME": "/nonexistent/core.cd-j.0.x.321.1.zst",
                              "__REALTIME_TIMESTAMP": str(boot_rt + 51_000000)})
    assert (cd["event"], cd["pid"], cd["unit"], cd["truncated"], cd["time"]) == \
        ("handler-coredump", 321, "cd-j.service", True, (boot_rt + 50_000000) / 1e6)
    assert journal.parse_entry({"_TRANSPORT": "audit", "_AUDIT_TYPE": "1300", "MESSAGE": "SYSCALL x"}) is None
    ab = journal.parse_entry({"_TRANSPORT": "audit", "_AUDIT_TYPE": "1701", "_AUDIT_ID": "9",
                              "_SOURCE_REALTIME_TIMESTAMP": "1795484150123456",
                              "MESSAGE": 'ANOM_ABEND auid=0 uid=0 gid=0 ses=1 pid=321 comm="cd-j" exe="/usr/bin/cd-j" sig=11 res=1'})
    assert (ab["event"], ab["serial"], ab["pid"]) == ("audit-abend", "1795484150.123:9", 321)
    recs = report.records([e, cd, ab], _env("/var/crash/core.%p", "/"))
    assert len(recs) == 1
    r = recs[0]
    # the handler kept it, cut, and the file is gone now
    assert r["core"]["status"] == "missing" and "removed" in r["core"]["why"] and r["unit"] == "cd-j.service"


def test_late_handler_and_unit_lines():
    from coredoctor.history import daemonlog
    seg = kmsg.parse_line("cd-late[600]: segfault at 0 ip 0000000000401000 sp 00007ffc00000000 error 4 in x[401000,1000]",
                          2000.0)
    other = kmsg.parse_line("cd-other[601]: segfault at 0 ip 0000000000401000 sp 00007ffc00000000 error 4 in x[1,2]",
                            2030.0)
    # a big core through the pipe: systemd-coredump and systemd speak 40 s after the fault
    stored = daemonlog.parse_message("systemd-coredump", 700, "Process 600 (cd-late) of user 0 dumped core.", 2040.0)
    unit = daemonlog.parse_message("systemd", 1, "cd-late.service: Main process exited, code=dumped, status=11/SEGV",
                                   2040.5)
    recs = crashes.correlate([seg, other, stored, unit])
    assert [(r["pid"], r["unit"], r["unit_result"]) for r in recs] == [(600, "cd-late.service", "dumped"), (601, None, None)]
    assert {e["event"] for e in recs[0]["events"]} == {"fault", "handler-stored", "unit-result"}
    # an unrelated unit's result stays its own crash
    lone = daemonlog.parse_message("systemd", 1, "cd-else.service: Main process exited, code=killed, status=6/ABRT", 2050.0)
    recs = crashes.correlate([seg, other, lone])
    assert [(r["pid"], r["unit"], r["unit_result"]) for r in recs][-1] == (None, "cd-else.service", "killed")


def test_handler_truncated_core(tmp_path):
    from coredoctor.history import daemonlog
    stored = tmp_path / "core.cd-t.0.b00t.900.1795484500000000.zst"
    stored.write_bytes(b"(zstd)" * 100)
    seg = kmsg.parse_line("cd-t[900]: segfault at 0 ip 0000000000401000 sp 00007ffc00000000 error 4 in x[401000,1000]",
                          1795484500.2)
    called = daemonlog.parse_message("systemd-coredump", 901, "Process 900 (cd-t) of user 0 terminated abnormally "
                                     "with signal 11/SEGV, processing...", 1795484500.3)
    cut = daemonlog.parse_message("systemd-coredump", 901, "Core file was truncated to 2147483648 bytes.", 1795484530.0)
    evs = daemonlog.link([called, cut]) + [seg, {"event": "stored-core", "pid": 900, "time": 1795484500.0,
                                                 "path": str(stored), "handler": "systemd-coredump",
                                                 "source": "systemd-coredump:/var/lib/systemd/coredump",
                                                 "line": f"stored core {stored}"}]
    r = report.records(evs, _env("|/lib/systemd/systemd-coredump %P %u %g %s %t %c %h", "/"))
    assert len(r) == 1
    assert (r[0]["core"]["status"], r[0]["core"]["path"], r[0]["core"]["size"]) == ("truncated", str(stored), 600)
    assert r[0]["likely_reason"]["gate"] == "handler-policy" and "2147483648" in r[0]["likely_reason"]["evidence"]


def test_a_crash_before_a_fix_is_looked_for_under_the_pattern_of_its_time(tmp_path):
    """kernel.core_pattern changed by a fix after the crash: its core is looked for where the
    pattern then put it (and found), and the record says which pattern and which fix."""
    from coredoctor.history import sysctl_history
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    seg = "cd-old[4242]: segfault at 0 ip 0000000000401000 sp 00007ffc00000000 error 4 in cd-old[401000,1000]"
    e = dict(kmsg.parse_line(seg, T0), source="kmsg")
    assert e["pid"] == 4242 and e["time"] == T0, e
    core = old_dir / "core.4242"
    core.write_bytes(b"\x7fELF" + b"\0" * 60)
    entries = [{"id": "20261125T013700-abc123", "created": T0 + 60, "state": "applied",
                "actions": [{"action": {"kind": "sysctl", "key": "kernel.core_pattern", "value": "/var/crash/core.%p"},
                             "prior": {"value": f"{old_dir}/core.%p"}, "done": True}]}]
    hist = sysctl_history.changes(entries, "kernel.core_pattern")
    seen = []

    def find(glob_, crash):
        seen.append(glob_)
        return {"status": "present", "path": str(core), "size": 64} if glob_.startswith(str(old_dir)) else None
    env = _env("/var/crash/core.%p", "/", find=find,
               then=lambda c: {"kernel.core_pattern": sysctl_history.value_at(hist, c["time"], "/var/crash/core.%p")},
               pattern_env=lambda p: {"parsed": core_pattern.parse(p), "policy": None, "missing_dir": None})
    r = report.records([e], env)[0]
    assert seen == [f"{old_dir}/core.4242"]
    assert r["core"]["status"] == "present" and r["core"]["core_pattern"] == f"{old_dir}/core.%p"
    assert "20261125T013700-abc123" in r["core"]["pattern_note"] and "/var/crash/core.%p" in r["core"]["pattern_note"]
    # a crash after the fix: today's pattern, no note
    later = dict(e, time=T0 + 120, pid=4343)
    r2 = report.records([later], env)[0]
    assert "core_pattern" not in r2["core"] and r2["core"]["path"] == "/var/crash/core.4343"


def test_crashes_text_hostile_names_and_skips():
    """A comm is anyone's (prctl PR_SET_NAME): a newline or an escape sequence in it must not start
    a line of its own in the report; skipped records are one notice line; every line fits 100 columns."""
    from coredoctor.render import text as rtext
    rec = {"time": 1795623180.0, "pid": 4242, "comm": "evil\n4243  FORGED\x1b[2J", "exe": None, "unit": None,
           "uid": None, "signal": "SIGSEGV", "signo": 11, "sources": ["syslog:/var/log/syslog"],
           "core": {"status": "missing", "path": "/cores/core.evil\n", "size": None, "why": "no core\r\nok"},
           "likely_reason": {"gate": None, "evidence": "nothing\x00", "fix": None}, "unit_result": None,
           "evidence": [], "untrusted": "a kernel line in syslog that kern.log does not hold: not the kernel's word"}
    doc = {"schema": "coredoctor.crashes/1", "core_pattern": "core", "read": {"log": "read (1 events)"},
           "crashes": [rec], "skipped": {"log": 2}, "skipped_why": {"log": ["pid has 4400 digits (at most 7)"]}}
    out = rtext.crashes_report(doc)
    lines = out.split("\n")
    assert not any(ln.startswith("4243") for ln in lines) and "\x1b" not in out and "\x00" not in out
    assert "evil\\x0a4243" in out and "\r" not in out
    assert [ln for ln in lines if ln.startswith("Skipped")] == [
        "Skipped as unreadable or untrusted: log 2 records (pid has 4400 digits (at most 7))"]
    assert any(ln.startswith("Not the kernel's word (1): evil") for ln in lines)
    assert all(len(ln) <= 100 for ln in lines), max(lines, key=len)
    assert rec["comm"] == "evil\n4243  FORGED\x1b[2J"  # the document itself is left as it was
    empty = rtext.crashes_report(dict(doc, crashes=[]))
    assert empty.startswith("No crashes found in log.") and "Skipped as unreadable or untrusted: log 2" in empty
