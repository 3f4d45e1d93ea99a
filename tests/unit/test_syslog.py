"""Syslog files written by the tests themselves: plain, numbered and dated rotations, gzipped ones,
RFC 3164 lines across a year boundary, RFC 3339 lines, and every chunk size that cuts a line."""
import gzip
import os
import time

import pytest

import test_daemonlog
import test_kmsg
from coredoctor.history import daemonlog, kmsg, syslog

SEGV = "python[15609]: segfault at 0 ip 00007f3499585ad8 sp 00007ffda54d0ab8 error 4 in libc.so.6[167ad8,7f3499444000+156000]"
NOISE = "kernel: [ 5300.000001] EXT4-fs (vda1): re-mounted. Quota mode: none."


def local(*ymdhms):
    return time.mktime(tuple(ymdhms) + (0, 0, -1))


def write(path, lines, mtime, gz=False):
    data = "".join(ln + "\n" for ln in lines).encode()
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)
    os.utime(path, (mtime, mtime))
    return path


# -- anchors ----------------------------------------------------------------------------------------

def test_required_literals():
    rl = syslog.required_literals
    assert rl(r"^abc(?P<x>def)?ghi\d+jkl(?:mn|op)qr") == [("abc",), ("ghi",), ("jklmnqr", "jklopqr")]
    assert rl(r"^a(?P<g>bc)d") == [("abcd",)]
    assert rl(r"(?i)abc") == [] and rl(r"x(?i:abc)yz") == [("x",), ("yz",)]
    # small classes and alternations go on the run; an open-ended alternative ends it
    assert rl(r": (?:[Mm]ain|Control) process") == [(": Control process", ": Main process", ": main process")]
    assert rl(r"\] (?:general protection fault|trap int3|trap [a-z]+)x") == [("] general protection fault", "] trap "), ("x",)]
    assert rl(r"type=(?:1701|ANOM_ABEND) (?:msg=)?audit\(") == [("type=1701 ", "type=ANOM_ABEND "), ("audit(",)]


def test_choose_anchors_prefers_few_long_literals():
    class P:
        def __init__(self, rx, ident=None):
            self.regex, self.ident = syslog.re.compile(rx), ident
    got, none = syslog.choose_anchors([P(r"^coredump: \d+: RLIMIT_CORE is set to 1"), P(r"^coredump: \d+: pipe failed"),
                                       P(r": (?:[Mm]ain|Control) process exited, code="), P(r"^\w+$")])
    assert got == (" process exited, code=", "coredump: ") and [p.regex.pattern for p in none] == [r"^\w+$"]
    # with their ident, daemon patterns can share one anchor
    got, _ = syslog.choose_anchors([P(r"^Core file was truncated", "systemd-coredump"),
                                    P(r"^Resource limits disable core", "systemd-coredump")])
    assert got == ("systemd-coredump",)


def test_every_pattern_is_guarded_by_an_anchor():
    assert syslog._UNANCHORED == []
    anchors = [a.decode() for a in syslog.ANCHORS]
    for p in tuple(kmsg.PATTERNS) + tuple(daemonlog.PATTERNS):
        musts = syslog.required_literals(p.regex) + ([(p.ident,)] if getattr(p, "ident", None) else [])
        # some required tuple of alternatives has an anchor in each alternative
        assert any(all(any(a in alt for a in anchors) for alt in m) for m in musts), p.regex.pattern


def _as_syslog(ident, msg, pid=None):
    return f"Nov 25 16:13:00 host {ident}{f'[{pid}]' if pid else ''}: {msg}"


def test_every_real_example_line_holds_an_anchor_and_is_found(tmp_path):
    lines = [_as_syslog("kernel", "[ 5307.616353] " + c[0]) for c in test_kmsg.CASES]
    lines += [_as_syslog(c[0], c[1], 4242) for c in test_daemonlog.CASES]
    for ln in lines:
        assert any(a.decode() in ln for a in syslog.ANCHORS), ln
    p = write(tmp_path / "kern.log", [NOISE] * 3 + [x for ln in lines for x in (ln, NOISE)], local(2026, 11, 25, 17, 0, 0))
    evs = list(syslog.read([str(p)]))
    assert len(evs) == len(lines)
    assert [e["line"] for e in evs] == [c[0] for c in test_kmsg.CASES] + [c[1] for c in test_daemonlog.CASES]


# -- files ------------------------------------------------------------------------------------------

def test_log_files_oldest_first(tmp_path):
    d = tmp_path / "var" / "log"
    d.mkdir(parents=True)
    names = ["kern.log", "kern.log.1", "kern.log.2.gz", "kern.log.10.gz", "syslog", "syslog-20261120.gz",
             "syslog-20261121", "messages", "daemon.log.1", "kern.log.gz", "kern.logger", "auth.log", "syslog.bak"]
    for n in names:
        (d / n).write_bytes(b"")
    assert [os.path.basename(p) for p in syslog.log_files(str(tmp_path))] == [
        "kern.log.10.gz", "kern.log.2.gz", "kern.log.1", "kern.log", "syslog-20261120.gz", "syslog-20261121",
        "syslog", "messages", "daemon.log.1"]
    assert syslog.log_files(str(tmp_path / "nothing")) == []


@pytest.fixture
def rotated(tmp_path):
    """kern.log.2.gz (oldest) -> kern.log.1 -> kern.log, one crash each, the year boundary inside kern.log.1."""
    d = tmp_path / "var" / "log"
    d.mkdir(parents=True)
    write(d / "kern.log.2.gz", [
        "Dec 30 10:00:00 web1 kernel: [  100.000001] " + SEGV.replace("15609", "101"),
        "Dec 30 10:00:01 web1 kernel: [  100.000002] Code: e1 ff ff ff c3 66 2e 0f 1f 84 00",
    ], local(2026, 12, 30, 10, 5, 0), gz=True)
    write(d / "kern.log.1", [
        "Dec 31 23:59:58 web1 kernel: [ 5000.000000] coredump: 202(nginx): RLIMIT_CORE is set to 1, aborting core",
        "Jan  1 00:00:03 web1 kernel: traps: a.out[203] general protection fault ip:401136 sp:7ffd1b8 error:0 in a.out",
    ], local(2027, 1, 1, 0, 0, 10))
    write(d / "kern.log", [
        "2027-01-02T08:30:00.250000+00:00 web1 kernel: [ 9000.1] " + SEGV.replace("15609", "304"),
        "2027-01-02T08:30:01.000000+00:00 web1 systemd[1]: ovs-vswitchd.service: Main process exited, code=dumped, "
        "status=11/SEGV",
        "2027-01-02T08:30:02+00:00 web1 systemd-coredump[777]: Process 305 (ovs-vswitchd) of user 0 dumped core."
        "#012#012Stack trace of thread 305:#012#0  0x00007f0000000001 raise (libc.so.6 + 0x3cad8)",
    ], local(2027, 1, 2, 9, 0, 0))
    return tmp_path


def test_rotated_gzipped_year_boundary_and_rfc3339(rotated):
    evs = list(syslog.read(root=str(rotated)))
    assert [(e["event"], e["pid"]) for e in evs] == [
        ("fault", 101), ("coredump-refused", 202), ("fault", 203), ("fault", 304), ("unit-result", None),
        ("handler-stored", 305)]
    log = os.path.join(str(rotated), "var", "log")
    assert [e["source"] for e in evs] == ["syslog:" + os.path.join(log, n) for n in
                                         ("kern.log.2.gz", "kern.log.1", "kern.log.1", "kern.log", "kern.log",
                                          "kern.log")]
    assert evs[0]["time"] == local(2026, 12, 30, 10, 0, 0)
    assert evs[1]["time"] == local(2026, 12, 31, 23, 59, 58)  # the year before the file's mtime
    assert evs[2]["time"] == local(2027, 1, 1, 0, 0, 3)
    assert evs[3]["time"] == 1798878600.25  # 2027-01-02T08:30:00.25Z
    assert evs[1]["gate"] == "rlimit-core" and evs[0]["signal"] == "SIGSEGV" and evs[0]["host"] == "web1"
    assert evs[4]["unit"] == "ovs-vswitchd.service" and evs[4]["dumped"] is True
    assert evs[5]["stack"][0] == "Stack trace of thread 305:" and evs[5]["hpid"] == 777


def test_since_skips_old_rotations_whole(rotated):
    log = os.path.join(str(rotated), "var", "log")
    # kern.log.2.gz was last written on Dec 30, 10:05: skipped without being read, even though we
    # tell it apart by giving it a line dated later than `since`
    with gzip.open(os.path.join(log, "kern.log.2.gz"), "ab") as f:
        f.write(b"Dec 31 12:00:00 web1 kernel: " + SEGV.replace("15609", "999").encode() + b"\n")
    os.utime(os.path.join(log, "kern.log.2.gz"), (local(2026, 12, 30, 10, 5, 0),) * 2)
    since = local(2026, 12, 31, 0, 0, 0)
    assert [e["pid"] for e in syslog.read(root=str(rotated), since=since)] == [202, 203, 304, None, 305]
    # and single events before `since` in files that are read are left out
    assert [e["pid"] for e in syslog.read(root=str(rotated), since=local(2027, 1, 1, 0, 0, 0))] == [
        203, 304, None, 305]
    assert list(syslog.read(root=str(rotated), since=local(2027, 2, 1, 0, 0, 0))) == []


def test_a_line_in_two_logs_is_given_once(tmp_path):
    line = "Nov 25 16:13:00 host kernel: [ 5307.616353] " + SEGV
    a = write(tmp_path / "kern.log", [line], local(2026, 11, 25, 17, 0, 0))
    b = write(tmp_path / "syslog", [NOISE, line, "Nov 25 16:13:05 host kernel: " + SEGV.replace("15609", "2")],
              local(2026, 11, 25, 17, 0, 0))
    evs = list(syslog.read([str(a), str(b)]))
    assert [(e["pid"], e["source"]) for e in evs] == [(15609, "syslog:" + str(a)), (2, "syslog:" + str(b))]
    # pid 2's line is in syslog only: kern.log gets facility kern only, so a process logged it as
    # "kernel" (at facility user); it is given, marked as not the kernel's word
    assert evs[0].get("untrusted") is None and "not the kernel's word" in evs[1]["untrusted"]
    assert list(syslog.read([str(b), str(a)]))[0].get("untrusted") is None  # kern.log is read first
    # within one log, two equal lines are two crashes
    assert len(list(syslog.read([str(a), str(a)]))) == 2


def test_gzip_by_content_and_a_truncated_rotation(tmp_path):
    p = write(tmp_path / "messages.1", ["Nov 25 16:13:00 host kernel: " + SEGV], local(2026, 11, 25, 17, 0, 0), gz=True)
    assert [e["pid"] for e in syslog.read([str(p)])] == [15609]  # gzip without the .gz name
    lines = [f"Nov 25 16:13:{i % 60:02d} host kernel: " + SEGV.replace("15609", str(i)) for i in range(1, 3001)]
    q = write(tmp_path / "messages.2.gz", lines, local(2026, 11, 25, 17, 0, 0), gz=True)
    data = open(q, "rb").read()
    open(q, "wb").write(data[:len(data) // 2])  # cut: logrotate killed mid-compress
    got = [e["pid"] for e in syslog.read([str(q)], chunk_size=4096)]
    assert 0 < len(got) < 3000 and got == list(range(1, len(got) + 1))
    assert list(syslog.read([str(tmp_path / "missing")])) == []


# -- chunk boundaries -------------------------------------------------------------------------------

def _chunk_fixture(tmp_path):
    lines = []
    for i in range(40):
        lines.append(NOISE if i % 3 else "Nov 25 16:13:00 host kernel: x" * 30)  # a line longer than small chunks
        lines.append(f"Nov 25 16:{i:02d}:00 host kernel: [ 12.000001] " + SEGV.replace("15609", str(1000 + i)))
        lines.append(f"Nov 25 16:{i:02d}:01 host systemd-coredump[5]: Resource limits disable core dumping for "
                     f"process {2000 + i} (x y).")
    p = tmp_path / "kern.log"
    p.write_bytes(("\n".join(lines)).encode())  # and no newline at the end
    os.utime(p, (local(2026, 11, 25, 17, 0, 0),) * 2)
    return str(p)


@pytest.mark.parametrize("memmem", [True, False])
def test_every_chunk_size_gives_the_same_events(tmp_path, memmem):
    p = _chunk_fixture(tmp_path)
    size = os.path.getsize(p)
    want = [(e["pid"], e["time"], e["line"]) for e in syslog.read([p], chunk_size=1 << 20)]
    assert [w[0] for w in want] == [x for i in range(40) for x in (1000 + i, 2000 + i)]
    assert want[-1][0] == 2039  # the last line, without its newline
    # every size from tiny to a bit over the file, so that each crash line is cut somewhere
    for chunk in list(range(7, 260, 7)) + [1021, 4096, size - 1, size, size + 1]:
        with open(p, "rb") as f:
            got = [syslog.parse_line(ln.decode(), os.path.getmtime(p)) for ln in
                   syslog.candidate_lines(f, chunk, memmem=memmem)]
        assert [(e["pid"], e["time"], e["line"]) for e in got if e] == want, chunk


@pytest.mark.parametrize("memmem", [True, False])
def test_a_huge_line_is_cut_and_memory_stays_bounded(tmp_path, memmem, monkeypatch):
    monkeypatch.setattr(syslog, "MAX_LINE", 64 << 10)
    p = tmp_path / "kern.log"
    crash = "Nov 25 16:13:00 host kernel: " + SEGV
    p.write_bytes(b"x" * (300 << 10) + b"\n" + crash.encode() + b"\n" + b"y" * (200 << 10) + b" ]: segfault at tail")
    with open(p, "rb") as f:
        got = list(syslog.candidate_lines(f, 4096, memmem=memmem))
    assert got[0] == crash.encode() and all(len(g) <= 64 << 10 for g in got)
    assert got[-1].endswith(b"]: segfault at tail")


def test_memmem_is_there_and_can_be_switched_off(monkeypatch):
    assert syslog._MEMMEM is not None  # glibc: on every machine this runs on
    monkeypatch.setenv("COREDOCTOR_DISABLE", "memmem")
    assert syslog._libc_memmem() is None


def test_user_space_records_relayed_as_kernel_lines():
    # rsyslog's imkmsg/imklog tag every /dev/kmsg record "kernel", also those user space wrote there
    mt = local(2026, 11, 25, 17, 0, 0)
    e = syslog.parse_line("Nov 25 16:13:00 host kernel: [ 1737.219776] systemd-coredump[30461]: Resource limits "
                          "disable core dumping for process 30459 (python3).", mt)
    assert (e["event"], e["pid"], e["gate"], e["hpid"]) == ("handler-refused", 30459, "rlimit-core", 30461)
    # a process named like a daemon that segfaults is still the kernel's fault line
    e = syslog.parse_line("Nov 25 16:13:00 host kernel: systemd[1]: segfault at 0 ip 00007faca8785ad8 sp "
                          "00007ffca2c646c8 error 4 in libc.so.6[167ad8,7faca8644000+156000]", mt)
    assert (e["event"], e["pid"], e["comm"]) == ("fault", 1, "systemd")


@pytest.mark.parametrize("comm,pid", [("my prog", 2115), ("kworker/0:1", 77), ("a: b/c", 5)])
def test_fatal_signal_of_a_comm_with_spaces_and_slashes(comm, pid):
    # found by bench/crashlog_scan.py: "%s/%d: potentially ..." prints the comm as it is
    e = syslog.parse_line(f"Nov 20 00:00:00 host kernel: [ 1234.750000] {comm}/{pid}: potentially unexpected "
                          "fatal signal 11.", local(2026, 11, 25, 17, 0, 0))
    assert (e["event"], e["pid"], e["comm"], e["signo"]) == ("fatal-signal", pid, comm, 11)


def test_unparseable_and_unrelated_lines():
    assert syslog.parse_line("random text with segfault at in it") is None
    assert syslog.parse_line("Foo 25 16:13:00 host kernel: " + SEGV)["time"] is None  # a crash, date unknown
    assert syslog.parse_line("Nov 25 16:13:00 host sshd[1]: " + SEGV) is None  # the kernel's words from sshd
    e = syslog.parse_line("Nov 25 16:13:00 host kernel: " + SEGV, mtime=local(2026, 11, 25, 17, 0, 0))
    assert e["pid"] == 15609 and e["time"] == local(2026, 11, 25, 16, 13, 0)
