"""coredoctor watch, the pure parts: event kinds and their frozen MESSAGE_IDs, the catalog file,
the journal's native framing and the syslog line (hostile names included), which records are
losses, the configuration file, and the tracefs host mode's filters."""

import os
import re
import struct

import pytest

from coredoctor.errors import UsageError
from coredoctor.trace import tracefs
from coredoctor.watch import entries as EN
from coredoctor.watch import run as WR

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CATALOG = os.path.join(ROOT, "contrib", "systemd", "coredoctor.catalog")

#: the ids as first published: never to change (journalctl MESSAGE_ID=... queries depend on them)
FROZEN = {
    "dumpability-lost": "f1fb545531a841f89301dd2fac44b6cf",
    "crash-core": "3fbf5352ddbb4bb4bb39f7a9c4c8782e",
    "crash-no-core": "1933e3de10074e6994a1818ec49a6add",
    "crash-outcome-unknown": "a33e74cef78140bab8356929cd16dc71",
    "killed": "bf439e64b1874ac09f2dbee0cb9e40c7",
    "watch-started": "d45ab48c86d240dda4dba0f53d8866d3",
    "watch-stopped": "37c0befb9fb74ec6a1e94375c1fde3b4",
    "watch-notice": "4274684a7abb47cea3ab5277494e83bf",
}

HOSTILE = "evil\nMESSAGE_ID=00000000000000000000000000000000\x1b[2J"


def parse_native(data):
    """The journal's native protocol, read back (systemd docs/JOURNAL_NATIVE_PROTOCOL.md)."""
    out, i = [], 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, _, v = line.partition(b"=")
            out.append((k.decode(), v))
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            v = data[nl + 9:nl + 9 + n]
            assert data[nl + 9 + n:nl + 10 + n] == b"\n"
            out.append((line.decode(), v))
            i = nl + 10 + n
    return out


def loss(**kw):
    r = {"event": "dumpable-change", "pid": 4242, "tid": 4242, "comm": "dnsmasq", "syscall": "setresuid",
         "args": [65534, 65534, 65534], "before": 1, "before_candidates": [1], "after": 0, "changed": True,
         "cause": "privilege-change", "rule": {"id": "setresuid", "file": "kernel/sys.c"},
         "why": "euid changed and fs.suid_dumpable is 0", "suid_dumpable": 0,
         "creds_before": {"uid": [0, 0, 0, 0], "gid": [0, 0, 0, 0]},
         "creds_after": {"uid": [65534] * 4, "gid": [65534] * 4},
         "confirmed": {"agrees": True, "source": "pidfd PIDFD_INFO_COREDUMP", "value": 0}, "time": 1.5}
    r.update(kw)
    return r


def fatal(**kw):
    r = {"event": "fatal-signal", "pid": 77, "tid": 77, "comm": "crashy", "signal": "SIGSEGV", "signo": 11,
         "how": "fault", "dumps_by_default": True, "dumpable": 1, "predicted": False,
         "prediction": {"blocking_gate": "rlimit-core", "verdict": "RLIMIT_CORE is 0"},
         "dumped": False, "exit_status": 11, "outcome_source": "pidfd PIDFD_INFO_EXIT", "agrees": True,
         "destination": None, "time": 2.0}
    r.update(kw)
    return r


def test_message_ids_are_frozen_and_unique():
    assert {k: v[0] for k, v in EN.KINDS.items()} == FROZEN
    ids = [v[0] for v in EN.KINDS.values()]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_catalog_file_is_the_generated_one_and_has_every_kind():
    with open(CATALOG) as f:
        text = f.read()
    assert text == EN.catalog(), "contrib/systemd/coredoctor.catalog is stale: regenerate from entries.catalog()"
    blocks = re.findall(r"^-- ([0-9a-f]{32})\nSubject: (.+)$", text, re.M)
    assert {b[0] for b in blocks} == set(FROZEN.values())
    # journalctl substitutes @FIELD@ from the entry: each one named must be a field the kind sets
    for kind, (mid, _p, subject, body) in EN.KINDS.items():
        for name in re.findall(r"@([A-Z_]+)@", subject + body):
            assert name.startswith("COREDOCTOR_"), (kind, name)


def test_native_framing_round_trips_a_hostile_name():
    e = EN.classify(loss(comm=HOSTILE), "evil.service", "")
    data = EN.native(e)
    fields = parse_native(data)
    d = dict(fields)
    assert d["COREDOCTOR_COMM"] == HOSTILE.encode()          # exact, in the length-prefixed form
    assert d["MESSAGE_ID"] == FROZEN["dumpability-lost"].encode()
    assert [k for k, _ in fields].count("MESSAGE_ID") == 1   # the name forged no second id
    assert b"\n" not in d["MESSAGE"] and b"\x1b" not in d["MESSAGE"]
    assert d["PRIORITY"] == b"4" and d["SYSLOG_IDENTIFIER"] == b"coredoctor"
    assert all(re.fullmatch(r"[A-Z0-9_]+", k) and not k.startswith("_") for k, _ in fields)


def test_syslog_line_is_one_escaped_rfc3164_line():
    e = EN.classify(fatal(comm=HOSTILE), "crashy.service", "")
    line = EN.syslog_line(e, 123, now=0.0).decode()
    assert "\n" not in line and "\x1b" not in line
    m = re.fullmatch(r"<(\d+)>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) coredoctor\[123\]: (.*)", line)
    assert m, line
    assert int(m.group(1)) == 3 * 8 + 3  # daemon.err: a crash without a core
    assert m.group(3).startswith(f"MESSAGE_ID={FROZEN['crash-no-core']} event=crash-no-core pid=77 ")
    head, _, msg = m.group(3).partition(" -- ")
    assert "gate=rlimit-core" in head and "unit=crashy.service" in head
    assert head.count("MESSAGE_ID=") == 1 and "\\n" in msg   # the forged id only in the quoted message


def test_losses():
    assert EN.is_loss(loss())
    assert EN.is_loss(loss(after=2))
    assert not EN.is_loss(loss(before=0, before_candidates=[0], after=0))      # already lost
    assert not EN.is_loss(loss(after=1))
    assert EN.is_loss(loss(before=None, before_candidates=[0, 1, 2]))         # unknown before: may be
    assert not EN.is_loss(loss(before=None, before_candidates=[0, 2]))
    # the kernel's confirmation disagrees: its value counts
    assert not EN.is_loss(loss(confirmed={"agrees": False, "value": 1}))
    assert EN.is_loss(loss(after=1, confirmed={"agrees": False, "value": 0}))
    assert not EN.is_loss(fatal())


def test_only_service_and_container_losses_are_entries():
    assert EN.classify(loss(), "dnsmasq.service", "")["kind"] == "dumpability-lost"
    assert EN.classify(loss(), "docker-abc.scope", "0123456789ab")["kind"] == "dumpability-lost"
    assert EN.classify(loss(), "session-3.scope", "") is None
    assert EN.classify(loss(), None, "") is None
    assert EN.classify(loss(), None, "", all_processes=True)["kind"] == "dumpability-lost"
    e = EN.classify(loss(), "dnsmasq.service", "")
    f = e["fields"]
    assert (f["COREDOCTOR_UNIT"], f["COREDOCTOR_PID"], f["COREDOCTOR_DUMPABLE_BEFORE"],
            f["COREDOCTOR_DUMPABLE_AFTER"], f["COREDOCTOR_CAUSE"], f["COREDOCTOR_CONFIRMED"]) == \
        ("dnsmasq.service", "4242", "1", "0", "privilege-change", "yes")
    assert f["COREDOCTOR_UID_AFTER"] == "65534 65534 65534 65534"


def test_fatal_signal_kinds():
    assert EN.classify(fatal(), None, "")["kind"] == "crash-no-core"
    core = EN.classify(fatal(dumped=True, predicted=True, prediction={"blocking_gate": None}), "a.service", "")
    assert core["kind"] == "crash-core" and core["fields"]["COREDOCTOR_GATE"] == "none"
    assert core["fields"]["COREDOCTOR_PREDICTED"] == "core"
    assert EN.classify(fatal(dumped=None), None, "")["kind"] == "crash-outcome-unknown"
    killed = fatal(signal="SIGKILL", signo=9, dumps_by_default=False, dumped=False)
    assert EN.classify(killed, "a.service", "")["kind"] == "killed"
    assert EN.classify(killed, None, "") is None                      # any process's kill -9: not logged
    assert EN.classify(killed, None, "", all_processes=True)["kind"] == "killed"
    wrong = EN.classify(fatal(predicted=True, dumped=False, agrees=False), None, "")
    assert "prediction was wrong" in wrong["message"] and wrong["fields"]["COREDOCTOR_AGREES"] == "no"
    assert EN.classify({"event": "cred-change", "pid": 1}, "a.service", "") is None


def test_config():
    c = WR.parse_config("# comment\nignore-unit = noisy.service\nignore-unit=other.service\n"
                        "all-processes = yes\ninterval = 30\n")
    assert c["ignore_units"] == {"noisy.service", "other.service"}
    assert c["all_processes"] is True and c["interval"] == 30.0
    assert WR.parse_config("")["all_processes"] is None
    for bad, what in (("bogus = 1", "unknown key"), ("interval = 0", "interval"), ("interval = x", "interval"),
                      ("ignore-unit", "KEY = VALUE"), ("all-processes = maybe", "yes or no")):
        with pytest.raises(UsageError, match=what):
            WR.parse_config("\n" + bad, "watch.conf")
    with pytest.raises(UsageError, match="watch.conf:2"):
        WR.parse_config("\nbogus = 1", "watch.conf")


def test_host_mode_filters_only_exclude_the_watcher():
    inst = object.__new__(tracefs.Instance)
    inst.mode, inst.names, inst.pids, inst.exclude = "host", [], [], [999]
    assert inst._filter_for("syscalls/sys_enter_setresuid") == "(common_pid != 999)"
    assert inst._filter_for("signal/signal_generate") == "(common_pid != 999) && (sig == 9)"
    inst.exclude = []
    assert inst._filter_for("syscalls/sys_enter_setresuid") == ""


def test_journal_sink_frames_and_reconnects_over_a_real_socket(tmp_path):
    """The sink on a datagram socket of the test's own (a journald stand-in): an ordinary entry in
    one datagram, a large one in a memfd passed with SCM_RIGHTS, and after the listener is
    replaced (journald restarting) the next entry reaches the new one."""
    import array
    import socket
    from coredoctor.watch import sinks
    path = str(tmp_path / "socket")

    def listen():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.settimeout(5)
        return s
    srv = listen()
    j = sinks.Journal(path)
    e = EN.classify(loss(), "a.service", "")
    j.send(e)
    assert dict(parse_native(srv.recv(1 << 20)))["MESSAGE_ID"] == FROZEN["dumpability-lost"].encode()
    # a send buffer smaller than the entry: the kernel says EMSGSIZE, as for an entry over
    # journald's datagram size
    j.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2048)
    big = EN.classify(loss(why="x" * 300000, comm="y" * 9000), "a.service", "")
    assert len(EN.native(big)) > j.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    j.send(big)
    msg, anc, _f, _a = srv.recvmsg(1 << 16, socket.CMSG_SPACE(4))
    assert msg == b"" and anc, "a large entry comes as a passed file descriptor"
    fds = array.array("i")
    fds.frombytes(anc[0][2][:4])
    with os.fdopen(fds[0], "rb") as f:
        f.seek(0)  # the sender's offset (the file description is shared); journald maps it from 0
        assert len(dict(parse_native(f.read()))["COREDOCTOR_WHY"]) == EN.MAX_VALUE
    srv.close()
    os.unlink(path)
    srv = listen()
    j.send(e)
    assert dict(parse_native(srv.recv(1 << 20)))["COREDOCTOR_PID"] == b"4242"
    j.close()
    srv.close()
