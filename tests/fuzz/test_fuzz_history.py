"""Property-based tests of the crash history parsers against hostile input (issue 12).

The contract of every parser: for any input it returns records (or None, "not a crash line") or
raises the one domain error, :class:`coredoctor.history.BadRecord`; nothing else escapes. The
records hold numbers within the kernel's limits and finite times. A reader that meets a bad
record skips and counts it and still returns the good records around it.

Hostile values are built from what an unprivileged user controls (logger lines, process names,
planted files): digit runs past the kernel's limits, Unicode digits (str.isdigit() takes '²'),
NUL bytes, lone surrogates, invalid UTF-8, long runs, and the literal fragments of real crash
lines, put into the templates of those lines. Pure: files go to temporary directories only.
"""
import gzip
import json
import math
import os
import tempfile
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from coredoctor.history import MAX_TIME, BadRecord, Skips, apport, audit, daemonlog, journal, kmsg, syslog
from coredoctor.history.crashes import parse_since

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GOOD_KERNEL = ("victim[4242]: segfault at 0 ip 00007f3499585ad8 sp 00007ffda54d0ab8 error 4 in "
               "libc.so.6[167ad8,7f3499444000+156000]")
GOOD_SYSLOG = "Nov 25 16:13:00 host kernel: [ 12.3] " + GOOD_KERNEL

# -- hostile values -------------------------------------------------------------------------------

UNICODE_DIGITS = "\u00b2\u0663\u0967\uff11\U0001d7d9"  # '²' '٣' '१' '１' '𝟙': isdigit(), not ASCII
numbers = st.one_of(
    st.integers(0, 10 ** 30).map(str),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.text(alphabet="0123456789" + UNICODE_DIGITS, min_size=1, max_size=12),
    st.sampled_from(["-1", "", "1.5", "1e400", "0x10", " 7", "4194304", "4194305", "99999999", "18446744073709551616"]),
)
words = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7f), max_size=60),
    st.sampled_from(["", "\x00", "\udcff", "a\x00b", "x" * 5000, "(", ")", "[1]", ": ", "\n", "#012", "\"",
                     "segfault at ", "potentially unexpected fatal signal ", "type=1701 ", "coredump: "]),
)


def fill(template):
    """*template* with each ``{n}`` a hostile number and each ``{w}`` a hostile word."""
    parts = template.split("{")
    strat = [st.just(parts[0])]
    for p in parts[1:]:
        key, rest = p[0], p[2:]
        strat += [numbers if key == "n" else words, st.just(rest)]
    return st.tuples(*strat).map("".join)


KERNEL_TEMPLATES = [
    "{w}[{n}]: segfault at {w} ip {w} sp {w} error {w}",
    "{w}[{n}]: segfault at 0 ip 00007f3499585ad8 sp 00007ffda54d0ab8 error 4",
    "traps: {w}[{n}] general protection fault ip:{w}",
    "{w}/{n}: potentially unexpected fatal signal {n}.",
    "{w}: {w}: potentially unexpected fatal signal {n}.",
    "potentially unexpected fatal signal {n}.",
    "CPU: {n} PID: {n} Comm: {w} Not tainted {w}",
    "audit: type=1701 audit({n}.{n}:{n}): auid={n} uid={n} gid=0 ses=1 pid={n} comm=\"{w}\" exe=\"{w}\" sig={n} res=1",
    "audit: type=1701 audit({w}:{n}): pid={n} comm={w} exe={w} sig={n}",
    "coredump: {n}({w}): over core_pipe_limit, skipping core dump",
    "Pid {n}({w}) can only dump core to fully qualified path!",
    "Process {n}({w}) has RLIMIT_CORE set to 1",
    "Core dump to |{w} pipe failed",
    "systemd-coredump[{n}]: Failed to connect to coredump service: {w}",
    # arm64 (4.19+ and before), riscv64, powerpc, s390x user faults
    "{w}[{n}]: unhandled exception: {w}, ESR 0x{n}, {w} in {w}[{n}+{n}]",
    "{w}[{n}]: unhandled exception: DABT (lower EL), ESR 0x{n}, level {n} translation fault",
    "{w}[{n}]: unhandled level {n} translation fault ({n}) at 0x{n}, esr 0x{n}, in {w}",
    "{w}[{n}]: unhandled signal {n} code 0x{n} at 0x{n} in {w}",
    "{w}[{n}]: segfault ({n}) at {n} nip {n} lr {n} code {n} in {w}",
    "User process fault: interruption code {n} ilc:{n} in {w}",
]
DAEMON_TEMPLATES = [
    ("systemd", "{w}: Main process exited, code=dumped, status={n}/SEGV"),
    ("systemd", "{w}: Failed with result 'core-dump'."),
    ("systemd-coredump", "Process {n} ({w}) of user {n} terminated abnormally with signal {n}/SEGV, processing..."),
    ("systemd-coredump", "Process {n} ({w}) of user {n} dumped core.{w}"),
    ("systemd-coredump", "Core file was truncated to {n} bytes."),
    ("systemd-coredump", "The core will not be stored: size {n} is greater than {n} (the configured maximum)"),
    ("systemd-coredump", "Resource limits disable core dumping for process {n} ({w})."),
    ("apport", "called for pid {n}, signal {n}, core limit {n}, dump mode {n}"),
    ("apport", "executable: {w} (command line \"{w}\")"),
    ("apport", "writing core dump to {w} (limit: {n})"),
    ("apport", "{w}, ignoring"),
]
kernel_lines = st.one_of(st.sampled_from(KERNEL_TEMPLATES).flatmap(fill), words)
daemon_msgs = st.sampled_from(DAEMON_TEMPLATES).flatmap(lambda it: st.tuples(st.just(it[0]), fill(it[1])))


def check_event(e):
    """What a record may hold: bounded numbers, a finite time in range, text fields as text."""
    if e is None:
        return
    for k, digits in (("pid", 7), ("hpid", 7), ("signo", 2), ("uid", 10), ("mode", 1)):
        v = e.get(k)
        assert v is None or (type(v) is int and 0 <= v < 10 ** digits), (k, v)
    t = e.get("time")
    assert t is None or (math.isfinite(t) and 0 <= t < MAX_TIME), t
    for k in ("comm", "line", "exe", "path"):
        assert e.get(k) is None or isinstance(e[k], str), k
    if e.get("esr") is not None:  # arm64: a 64-bit syndrome, decoded into bounded fields
        d = e["esr"]
        assert len(d["esr"]) == 18 and 0 <= d["ec"] < 64 and d.get("level") in (None, -1, 0, 1, 2, 3), d


def contract(fn, *args):
    """Call a parser: its record, or None when it raised BadRecord (the one allowed error)."""
    try:
        e = fn(*args)
    except BadRecord as err:
        assert err.why and isinstance(err.why, str)
        return None
    check_event(e)
    return e


# -- kmsg -----------------------------------------------------------------------------------------

@FAST
@given(kernel_lines, st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, min_value=0,
                                                     max_value=2e9)))
def test_kmsg_parse_line(line, when):
    contract(kmsg.parse_line, line, when)
    contract(kmsg.parse_dmesg_line, "[ " + line[:12] + "] " + line, when)


def test_kmsg_numbers_no_kernel_prints_are_bad_records():
    """The reproducers themselves, each against the exact outcome."""
    for line in ("evil[" + "9" * 4400 + "]: segfault at 0 ip 1 sp 1 error 4",
                 "evil[12345678]: segfault at 0 ip 1 sp 1 error 4",
                 'type=1701 audit(1.2.3:4): pid=1 comm="x" sig=11',
                 "x/1: potentially unexpected fatal signal 123."):
        try:
            kmsg.parse_line(line)
        except BadRecord as err:
            assert "digits" in err.why or "audit time" in err.why
        else:
            raise AssertionError(f"no BadRecord for {line[:40]!r}")
    # Unicode digits are no digits: the line is no crash line at all (was pid 33)
    assert kmsg.parse_line("evil[\u0663\u0663]: segfault at 0 ip 1 sp 1 error 4") is None
    assert kmsg.parse_line("evil[4194304]: segfault at 0 ip 1 sp 1 error 4")["pid"] == 4194304


# -- syslog files: a good record beside bad ones is kept ------------------------------------------

def _write(d, name, data, mtime=None):
    p = os.path.join(d, name)
    with open(p, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(p, (mtime, mtime))
    return p


syslog_lines = st.one_of(
    kernel_lines.map(lambda m: "Nov 25 16:13:01 host kernel: " + m),
    kernel_lines.map(lambda m: "Nov 25 16:13:01 host kernel[99]: " + m),  # forged: a process's tag
    kernel_lines.map(lambda m: "2026-11-25T16:13:01.123+00:00 host kernel: " + m),
    daemon_msgs.map(lambda dm: f"Nov 25 16:13:02 host {dm[0]}[77]: {dm[1]}"),
    fill("{w} {n} {n}:{n}:{n} {w} kernel: " + GOOD_KERNEL),
    fill("{n}-{n}-{n}T{n}:{n}:{n}.{n}+{n}:00 host kernel: " + GOOD_KERNEL),
    words,
)


@FEW
@given(st.lists(syslog_lines, min_size=1, max_size=6), st.booleans())
def test_syslog_file_keeps_good_records(bad, gz):
    with tempfile.TemporaryDirectory() as d:
        body = "\n".join([GOOD_SYSLOG] + bad + [GOOD_SYSLOG.replace("4242", "4343")]) + "\n"
        data = body.encode("utf-8", "surrogateescape")
        p = _write(d, "messages.1.gz" if gz else "messages", gzip.compress(data) if gz else data,
                   mtime=time.mktime((2026, 11, 30, 0, 0, 0, 0, 0, -1)))
        sk = Skips()
        got = list(syslog.read([p], skipped=sk.bind("log")))
        for e in got:
            check_event(e)
        pids = [e["pid"] for e in got]
        assert 4242 in pids and 4343 in pids
        assert all(n >= 1 for n in sk.counts.values())


@FAST
@given(st.one_of(st.floats(), st.integers(-2 ** 70, 2 ** 70).map(float), st.sampled_from([1e300, -1e18, 0.0])))
def test_syslog_any_mtime(mtime):
    """The year of an RFC 3164 line comes from the file's mtime: any mtime (os.utime can set huge or
    negative ones) gives a record or a BadRecord."""
    e = contract(syslog.parse_line, GOOD_SYSLOG, mtime)
    assert e is not None and e["pid"] == 4242


def test_syslog_impossible_mtime_on_a_real_file():
    """os.utime() to 2^62 (tmpfs keeps it; ext4 clamps to 2^31 - 1) or before 1901: the year of an
    RFC 3164 line is then this year's; the record was lost (time.localtime() overflowed) or dated 1901."""
    tried = 0
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        p = _write(d, "messages", (GOOD_SYSLOG + "\n").encode())
        for mtime in (2 ** 62, -2 ** 40):
            try:
                os.utime(p, (mtime, mtime))
            except (OverflowError, OSError):
                continue
            tried += not 0 <= os.stat(p).st_mtime < MAX_TIME
            got = list(syslog.read([p]))
            assert [(e["pid"], time.localtime(e["time"]).tm_year) for e in got] == [
                (4242, time.localtime().tm_year)]
    assert tried, "no impossible mtime could be set here"


def test_syslog_long_line_is_skipped_and_counted():
    with tempfile.TemporaryDirectory() as d:
        long = "Nov 25 16:13:01 host kernel: " + "x[1]: segfault at " * 5000
        p = _write(d, "messages", "\n".join([GOOD_SYSLOG, long, GOOD_SYSLOG.replace("4242", "4343")]).encode())
        sk = Skips()
        assert [e["pid"] for e in syslog.read([p], skipped=sk.bind("log"))] == [4242, 4343]
        assert sk.counts == {"log": 1}


def test_syslog_forged_kernel_tag_not_the_kernels():
    forged = "Nov 25 16:13:01 host kernel[999]: forged[4243]: segfault at 0 ip 1 sp 1 error 4"
    try:
        syslog.parse_line(forged)
    except BadRecord as err:
        assert "not the kernel" in err.why
    else:
        raise AssertionError("a kernel[PID] line was taken as the kernel's")


# -- daemon logs ----------------------------------------------------------------------------------

@FAST
@given(daemon_msgs, st.one_of(st.none(), numbers))
def test_daemonlog_parse_message(dm, pid):
    ident, msg = dm
    contract(daemonlog.parse_message, ident, pid, msg, 1795623180.0)
    contract(daemonlog.parse_tagged, f"{ident}[{pid or ''}]: {msg}", 1795623180.0)


@FAST
@given(st.sampled_from(["ERROR: apport (pid {n}) Tue Nov 25 01:38:00 2026: ",
                        "INFO: apport (pid {n}) 2026-11-25 01:38:00,{n}: ",
                        "ERROR: apport (pid {n}) {w}: "]).flatmap(fill),
       st.sampled_from(DAEMON_TEMPLATES[7:]).flatmap(lambda it: fill(it[1])))
def test_daemonlog_apport_line(head, msg):
    contract(daemonlog.parse_apport_line, head + msg)


# -- journal: the -o json form as parsed ----------------------------------------------------------

json_values = st.one_of(st.none(), words, numbers, st.integers(-2 ** 80, 2 ** 80), st.floats(),
                        st.lists(st.integers(-5, 300), max_size=6), st.lists(words, max_size=3),
                        st.booleans(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
FIELDS = ["MESSAGE", "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "_SOURCE_MONOTONIC_TIMESTAMP",
          "_TRANSPORT", "MESSAGE_ID", "COREDUMP_PID", "COREDUMP_SIGNAL", "COREDUMP_TIMESTAMP", "COREDUMP_COMM",
          "_AUDIT_TYPE", "_AUDIT_ID", "_SOURCE_REALTIME_TIMESTAMP", "SYSLOG_IDENTIFIER", "SYSLOG_PID", "_PID"]
entries = st.fixed_dictionaries({}, optional={
    "MESSAGE": st.one_of(kernel_lines, daemon_msgs.map(lambda dm: dm[1]), json_values),
    "_TRANSPORT": st.sampled_from(["kernel", "audit", "syslog", "journal"]),
    "MESSAGE_ID": st.sampled_from([journal.COREDUMP_MESSAGE_ID, "x"]),
    "_AUDIT_TYPE": st.just("1701"),
    "SYSLOG_IDENTIFIER": st.sampled_from(["systemd", "systemd-coredump", "apport", "x"]),
    **{k: st.one_of(numbers, json_values) for k in FIELDS if k not in ("MESSAGE", "_TRANSPORT", "MESSAGE_ID",
                                                                      "_AUDIT_TYPE", "SYSLOG_IDENTIFIER")}})


def _classify(ident, pid, message, when):
    return daemonlog.parse_message(ident, pid, message, when)


@FAST
@given(entries)
def test_journal_parse_entry(entry):
    contract(journal.parse_entry, entry, _classify)
    raw = json.dumps(entry, allow_nan=True).encode("utf-8", "surrogatepass")
    contract(journal.parse_json_line, raw, _classify)


@FAST
@given(st.one_of(st.binary(max_size=60), st.sampled_from([b"[" * 100000 + b"]" * 100000, b"1e999", b"[]", b"null",
                                                          b'{"MESSAGE": "x", "__REALTIME_TIMESTAMP": 1e999}',
                                                          b'{"MESSAGE": "x", "__REALTIME_TIMESTAMP": "' + b"9" * 400
                                                          + b'"}'])))
def test_journal_json_line(raw):
    contract(journal.parse_json_line, raw, _classify)


def test_journal_timestamp_too_large_for_a_float():
    entry = {"MESSAGE": GOOD_KERNEL, "_TRANSPORT": "kernel", "__REALTIME_TIMESTAMP": "9" * 400}
    try:
        journal.parse_entry(entry)
    except BadRecord as err:
        assert "digits" in err.why
    else:
        raise AssertionError("a 400-digit timestamp was taken")
    ok = journal.parse_entry(dict(entry, __REALTIME_TIMESTAMP="1795623180000000"))
    assert ok["pid"] == 4242 and ok["time"] == 1795623180.0


# -- audit.log ------------------------------------------------------------------------------------

audit_lines = st.one_of(
    fill("type=ANOM_ABEND msg=audit({n}.{n}:{n}): auid={n} uid={n} gid=0 ses=1 pid={n} comm=\"{w}\" "
         "exe=\"{w}\" sig={n} res=1"),
    fill("type=ANOM_ABEND msg=audit({w}:{n}): pid={n} comm={w} sig={n}"),
    fill("type=1701 {w}"), words)
GOOD_AUDIT = ('type=ANOM_ABEND msg=audit(1795623180.100:9): auid=0 uid=0 gid=0 ses=1 pid=4242 comm="victim" '
              'exe="/usr/bin/victim" sig=11 res=1')


@FEW
@given(st.lists(audit_lines, min_size=1, max_size=5))
def test_audit_log_keeps_good_records(bad):
    with tempfile.TemporaryDirectory() as d:
        p = _write(d, "audit.log", "\n".join([GOOD_AUDIT] + bad + [GOOD_AUDIT.replace(":9)", ":10)")])
                   .encode("utf-8", "surrogateescape"))
        got = list(audit.read([p], skipped=Skips().bind("audit")))
        for e in got:
            check_event(e)
        assert {"1795623180.100:9", "1795623180.100:10"} <= {e["serial"] for e in got}
        assert all(e["uid"] == 0 for e in got if e["serial"].startswith("1795623180.100:"))


# -- apport ---------------------------------------------------------------------------------------

def _crash(pid, sig, uid="0", extra=""):
    return (f"ProblemType: Crash\nDate: Tue Nov 25 01:36:00 2026\nExecutablePath: /opt/x\nSignal: {sig}\n"
            f"ProcStatus:\n Name:\tx\n Pid:\t{pid}\n Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n{extra}")


reports = st.one_of(
    st.tuples(numbers, numbers, numbers).map(lambda t: _crash(*t)),
    st.tuples(numbers, numbers).map(lambda t: _crash(t[0], t[1], extra="_PID: " + t[0] + "\n")),
    st.text(max_size=200), words)


@FEW
@given(st.lists(reports, min_size=1, max_size=4))
def test_apport_reports_keep_good_ones(bad):
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "var/crash"))
        _write(root, "var/crash/a_good.crash", _crash(4242, 11).encode())
        for i, text in enumerate(bad):
            _write(root, f"var/crash/b_{i}.crash", text.encode("utf-8", "surrogateescape"))
        _write(root, "var/crash/z_good.crash", _crash(4343, 6).encode())
        sk = Skips()
        got = list(apport.read_reports(root, skipped=sk.bind("apport")))
        for e in got:
            check_event(e)
        assert {4242, 4343} <= {e["pid"] for e in got}


@FEW
@given(st.lists(st.one_of(fill("ERROR: apport (pid {n}) Tue Nov 25 01:38:00 2026: called for pid {n}, signal {n}, "
                               "core limit {n}, dump mode {n}"), words), min_size=1, max_size=5), st.booleans())
def test_apport_log_keeps_good_lines(bad, gz):
    good = "ERROR: apport (pid 9001) Tue Nov 25 01:38:00 2026: called for pid 4242, signal 11, core limit 0, dump mode 1"
    with tempfile.TemporaryDirectory() as d:
        data = "\n".join([good] + bad + [good.replace("4242", "4343")]).encode("utf-8", "surrogateescape")
        p = _write(d, "apport.log.1.gz" if gz else "apport.log", gzip.compress(data) if gz else data)
        got = apport.read_log([p], skipped=Skips().bind("apport"))
        for e in got:
            check_event(e)
        assert {4242, 4343} <= {e["pid"] for e in got}


# -- --since --------------------------------------------------------------------------------------

@FAST
@given(st.one_of(
    fill("{n} {w} ago"), fill("{n} days ago"), fill("{n}.{n} hours ago"),
    fill("{n}-{n}-{n}T{n}:{n}:{n}Z"), fill("{n}-{n}-{n}"), words,
    st.sampled_from(["99999999 days ago", "0001-01-01", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59",
                     "-1 days ago", "1e400 days ago", "nan days ago", "inf days ago", "\u0663 days ago"])))
def test_parse_since(text):
    try:
        t = parse_since(text, now=1795623180.0)
    except ValueError as err:
        assert "\n" not in str(err)
        return
    assert type(t) is float and 0 <= t <= MAX_TIME


def test_journal_entry_of_another_uid_in_a_handlers_name_is_untrusted():
    """Any user can send MESSAGE_ID=fc2e22bc... with COREDUMP_PID= and COREDUMP_FILENAME= (logger
    --journald); journald's _UID says who did. Such an entry is marked, and decides nothing."""
    from coredoctor.history import crashes
    forged = {"MESSAGE": "Process 4242 (victim) of user 0 dumped core.", "MESSAGE_ID": journal.COREDUMP_MESSAGE_ID,
              "COREDUMP_PID": "4242", "COREDUMP_FILENAME": "/etc/shadow", "_UID": "1000", "_TRANSPORT": "journal",
              "__REALTIME_TIMESTAMP": "1795623180000000"}
    e = journal.parse_entry(forged, _classify, {0})
    assert "uid 1000" in e["untrusted"]
    assert journal.parse_entry(dict(forged, _UID="0"), _classify, {0}).get("untrusted") is None
    unit = {"MESSAGE": "x.service: Main process exited, code=killed, status=11/SEGV", "SYSLOG_IDENTIFIER": "systemd",
            "_UID": "1000", "_TRANSPORT": "journal", "__REALTIME_TIMESTAMP": "1795623180000000"}
    u = journal.parse_entry(unit, _classify, {0})
    assert u["untrusted"]
    real = kmsg.parse_line(GOOD_KERNEL, 1795623180.0)
    [c] = crashes.correlate([real, e, dict(u, pid=4242)])
    assert c["stored"] == [] and c["unit_result"] is None and len(c["events"]) == 3


def test_apport_hard_links_and_the_read_budget():
    """A hard link into /var/crash is no report apport wrote; and however many reports are planted,
    at most *total* bytes of all are read (the rest are counted, not read)."""
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "var/crash"))
        big = _crash(4101, 11).replace("ProcStatus:", "CoreDump: base64\n" + " QUFB\n" * 20000 + "ProcStatus:")
        for i in range(4):
            _write(root, f"var/crash/a{i}.crash", big.replace("4101", str(4101 + i)).encode())
        os.link(os.path.join(root, "var/crash/a0.crash"), os.path.join(root, "var/crash/b_link.crash"))
        sk = Skips()
        got = list(apport.read_reports(root, skipped=sk.bind("apport"), total=3 * len(big) // 2))
        assert [e["pid"] for e in got] == [4102]  # a0 and its link have 2 links; a1 is read; a2 cut
        why = " | ".join(sk.reasons["apport"])
        assert sk.counts["apport"] == 4 and "hard links" in why and "not read to its end" in why, why
        assert "took the 4 GiB read for all" in why
