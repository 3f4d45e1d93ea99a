"""The real systemd-journald, started by hand in its own mount namespace (tmpfs over
/run/systemd/journal, /run/log and /var/log/journal, as ../shared/reference/real-components.md
describes), with the real systemd-coredump socket-activated inside it: crashes reads the journal
(kernel lines imported from /dev/kmsg, systemd-coredump's structured entry, a unit result) and
coredumpctl, and ties them to the crash -- the same kernel line from kmsg and from the journal
being one piece of evidence. Everything is removed afterwards."""
import json
import os
import subprocess
import sys
import time

import pytest

import coredumpd as CD
import lab as L

JOURNALD = "/lib/systemd/systemd-journald"
PATTERN = f"|{CD.HELPER} %P %u %g %s %t 9223372036854775808 %h"
MOUNTS = ("/run/systemd/journal", "/run/log", "/var/log/journal")


def _in_ns(pid, *cmd, **kw):
    return subprocess.run(["nsenter", "-t", str(pid), "-m", *cmd], capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture
def journal(saved_sysctls):
    L.require_installed(JOURNALD, "systemd")
    if os.path.exists("/run/systemd/journal/socket"):
        pytest.skip("a journald socket already exists (a systemd host)")
    with CD.service() as cd:  # skips where systemd-coredump's socket exists; /run/systemd is there now
        made, jd = [], None
        try:
            for d in ("/run/systemd/journal", "/run/log"):
                if not os.path.isdir(d):
                    os.makedirs(d)
                    made.append(d)
            # journald wants a cgroup hierarchy (the 6.1 guest has none mounted): only in its namespace
            script = "(mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup) && " + \
                " && ".join(f"mount -t tmpfs -o mode=0755 tmpfs {m}" for m in MOUNTS) + f" && exec {JOURNALD}"
            jd = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 10
            while time.time() < deadline and _in_ns(jd.pid, "test", "-S", "/run/systemd/journal/socket").returncode:
                time.sleep(0.1)
            assert _in_ns(jd.pid, "test", "-S", "/run/systemd/journal/socket").returncode == 0, "journald did not start"
            # systemd-coredump's accepting side lives in journald's namespace, so that it logs there;
            # its socket is bound on the shared /run/systemd, where the kernel's helper connects
            cd.start(ns_pid=jd.pid)
            yield jd.pid, cd.ours
        finally:
            cd.stop()  # the listener before journald, whose namespace it is in
            if jd is not None:
                L.end(jd)
            for d in reversed(made):
                os.rmdir(d)


def _kmsg_has(needle, timeout=3.0):
    """Whether the kernel's ring buffer holds a record containing *needle* (read from its start)."""
    deadline = time.time() + timeout
    while True:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        try:
            while True:
                try:
                    rec = os.read(fd, 8192)
                except BlockingIOError:
                    break
                except OSError:  # EPIPE: overwritten records
                    continue
                if not rec:
                    break
                if needle.encode() in rec:
                    return True
        finally:
            os.close(fd)
        if time.time() > deadline:
            return False
        time.sleep(0.2)


def test_journal_and_coredumpctl(journal, loud_kernel_log):
    jpid, ours = journal
    L.set_sysctls({"kernel.core_pattern": PATTERN, "fs.suid_dumpable": 2, "kernel.core_pipe_limit": 16})
    # the kernel's fault line is rate-limited machine-wide (show_signal_msg()'s own state: 10 per
    # 5 s), so a crash elsewhere on the machine at the same moment can keep it out of the ring
    # buffer; that is not the journal's doing: fault again (at most 3 times) until the kernel
    # printed the line, then hold journald and the reader to it
    for attempt in range(3):
        v = L.Victim({"rlimit_core": [None, None], "comm": "cdlab-journal"})
        ours.append(v.pid)
        L.kernel_log_room(1)
        v.fault()
        if _kmsg_has(f"cdlab-journal[{v.pid}]: segfault at "):
            break
        CD.stored(v.pid)
        v.close()
    else:
        pytest.fail("the kernel printed no fault line in 3 crashes (rate-limited by other crashes?)")
    try:
        stored = CD.stored(v.pid)
        assert stored
        # what systemd would log for a service whose main process dumped (systemd is not PID 1
        # here, so the line is handed to the real journald by systemd-cat, with systemd's tag)
        subprocess.run(["nsenter", "-t", str(jpid), "-m", "systemd-cat", "-t", "systemd", "echo",
                        "cdlab-journal.service: Main process exited, code=dumped, status=11/SEGV"], check=True)
        # journald imports /dev/kmsg and its sockets on its own schedule: wait for each of the three
        # entries the reader is to tie together, and say which one never came
        queries = {"systemd-coredump's entry": [f"COREDUMP_PID={v.pid}"],
                   "the kernel's fault line": ["_TRANSPORT=kernel", "--grep", rf"\[{v.pid}\]"],
                   "the unit result": ["SYSLOG_IDENTIFIER=systemd", "--grep", "cdlab-journal.service"]}
        missing = dict(queries)
        deadline = time.time() + 15
        while missing and time.time() < deadline:
            for what, q in list(missing.items()):
                if _in_ns(jpid, "journalctl", "-q", "-o", "json", *q).stdout.strip():
                    del missing[what]
            time.sleep(0.2)
        assert not missing, f"not in the journal: {sorted(missing)}"
        env = dict(os.environ, PYTHONPATH=L.SRC)
        r = _in_ns(jpid, sys.executable, "-m", "coredoctor", "crashes", "--json", "--since", "10 minutes ago", env=env)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        doc = json.loads(r.stdout)
        assert doc["read"]["journal"].startswith("read") and "coredumpctl" in doc["read"]["systemd-coredump"]
        c = {x["pid"]: x for x in doc["crashes"]}[v.pid]
        assert {"kmsg", "journal", "coredumpctl"} <= set(c["sources"]), c["sources"]
        assert (c["core"]["status"], c["core"]["path"], c["core"]["handler"]) == ("present", stored, "systemd-coredump")
        assert c["unit"] == "cdlab-journal.service", ([(x["pid"], x["unit"], x["time"]) for x in doc["crashes"]], c["time"], c["evidence"])
        assert c["exe"] == os.path.realpath(sys.executable)
        seg = [e for e in c["evidence"] if e["event"] == "fault"]
        assert len(seg) == 1 and set(seg[0]["sources"]) == {"kmsg", "journal"}, seg   # one line, two places
        assert any(e["event"] == "handler-coredump" for e in c["evidence"])
        assert sum(1 for x in doc["crashes"] if x["pid"] == v.pid) == 1
    finally:
        v.close()
