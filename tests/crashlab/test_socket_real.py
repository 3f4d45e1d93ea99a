"""The socket branch (``@/path``, ``@@/path``; 6.16+) against real listeners on this kernel.

For each rule of coredoctor.kernel.handlers.SOCKET_RULES: a real AF_UNIX server in that state
(sockserver.py: listening and reading, bound but closed, SOCK_SEQPACKET, accepting but not
reading, an ``@@`` server that acks KERNEL / USERSPACE / REJECT, one that never answers; a
symlinked directory; a listener in another network namespace; one in a mount namespace the
kernel's root does not see), coredoctor's prediction, then a real fault and the kernel's real
outcome: the wait status (WCOREDUMP), what the server received, and the kernel's log line.
"""
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

import lab as L

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "sockserver.py")
SOCKET = "socket" in (open("/proc/sys/kernel/core_modes").read().split()
                      if os.path.exists("/proc/sys/kernel/core_modes") else [])
pytestmark = pytest.mark.skipif(not SOCKET, reason="this kernel has no socket core_pattern (kernel.core_modes "
                                "lacks 'socket', 6.16+)")

KERNEL, USERSPACE, REJECT, WAIT = 1, 2, 4, 8  # COREDUMP_* of include/uapi/linux/coredump.h


class Server:
    def __init__(self, mode, path, wrap=()):
        self.p = subprocess.Popen([*wrap, sys.executable, SERVER, mode, path], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.fd, self.buf = self.p.stdout.fileno(), b""
        ev = self.event(10)
        assert ev and ev["event"] == "listening", (ev, self.p.stderr.read() if self.p.poll() is not None else "")

    def event(self, timeout=10.0):
        """The next JSON line of the server; its own buffer, so that select() never waits for a
        line that an earlier read already took from the pipe."""
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            r, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.time()))
            if not r:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def events_until(self, name, timeout=20.0):
        deadline, seen = time.time() + timeout, []
        while time.time() < deadline:
            ev = self.event(max(0.0, deadline - time.time()))
            if ev is None:
                break
            seen.append(ev)
            if ev["event"] == name:
                break
        return seen

    def close(self):
        L.end(self.p, 5)
        for f in (self.p.stdout, self.p.stderr):
            f.close()


class Kmsg:
    """The kernel's coredump lines written after this point."""

    def __init__(self):
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def lines(self):
        out = []
        while True:
            try:
                rec = os.read(self.fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break
            msg = rec.split(";", 1)[-1].strip()
            if "oredump" in msg:
                out.append(msg)
        os.close(self.fd)
        return out


def gate(t, gid):
    return next(g for g in t["gates"] if g["id"] == gid)


def _crash(v):
    """Fault the victim; (status or None while it hangs in the dump, kernel lines)."""
    k = Kmsg()
    v.send("fault")
    status = v.wait(15)
    time.sleep(0.2)
    return status, k.lines()


@pytest.fixture
def sock_lab(labdir):
    labroot, mounts = labdir
    made = []
    yield labroot, made
    for s in made:
        s.close()


def _victim_check(labroot, pattern):
    L.set_sysctls({"kernel.core_pattern": pattern, "fs.suid_dumpable": 0, "kernel.core_uses_pid": 0,
                   "kernel.core_pipe_limit": 0})
    v = L.Victim({})
    return v, v.check("SIGSEGV")


# ------------------------------------------------------------------ refusals before any byte is sent

REFUSED = [
    # id, server mode (None: no server), path maker, expected errno in the kernel's line, evidence word
    ("missing", None, lambda r: f"{r}/nothing.sock", "failed -2", "does not exist"),
    ("bound-but-closed", "closed", lambda r: f"{r}/closed.sock", "failed -111", "no server listens"),
    ("seqpacket", "seqpacket", lambda r: f"{r}/seq.sock", "failed -91", "SOCK_STREAM"),
]


@pytest.mark.parametrize("sid,mode,mkpath,line,word", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_before_the_dump(sid, mode, mkpath, line, word, sock_lab):
    labroot, made = sock_lab
    path = mkpath(labroot)
    if mode:
        made.append(Server(mode, path))
    v, t = _victim_check(labroot, "@" + path)
    try:
        g = gate(t, "socket-handler")
        assert (t["dumps"], t["blocking_gate"], g["status"]) == (False, "socket-handler", "fail"), g
        assert word in g["evidence"] and line.split()[-1] in g["evidence"], g["evidence"]
        assert t["fixes"], "a blocked core must come with a fix"
        status, lines = _crash(v)
        assert status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV
        assert not os.WCOREDUMP(status)
        assert any(f"Coredump socket connection {path} {line}" in ln for ln in lines), lines
    finally:
        v.close()


def test_symlinked_directory_is_not_followed(sock_lab):
    labroot, made = sock_lab
    real = os.path.join(labroot, "real")
    os.mkdir(real)
    os.symlink("real", os.path.join(labroot, "via"))
    made.append(Server("read", os.path.join(real, "core.sock")))
    path = os.path.join(labroot, "via", "core.sock")
    v, t = _victim_check(labroot, "@" + path)
    try:
        g = gate(t, "socket-handler")
        assert (t["dumps"], t["blocking_gate"]) == (False, "socket-handler"), g
        assert "LOOKUP_NO_SYMLINKS" in g["evidence"] and "-40" in g["evidence"]
        # the fix names the real path, and that path is one the kernel accepts
        acts = [a for f in t["fixes"] for a in f["actions"] if a.get("kind") == "sysctl"
                and a.get("key") == "kernel.core_pattern"]
        assert acts and acts[0]["value"] == "@" + os.path.join(real, "core.sock"), t["fixes"]
        status, lines = _crash(v)
        assert status is not None and not os.WCOREDUMP(status)
        assert any(f"Coredump socket connection {path} failed -40" in ln for ln in lines), lines
        ev = made[0].event(0.5)
        assert ev is None, f"the server was reached through a symlink: {ev}"
    finally:
        v.close()


def test_last_component_symlink_is_refused(sock_lab):
    labroot, made = sock_lab
    sock = os.path.join(labroot, "core.sock")
    made.append(Server("read", sock))
    path = os.path.join(labroot, "link.sock")
    os.symlink(sock, path)
    v, t = _victim_check(labroot, "@" + path)
    try:
        g = gate(t, "socket-handler")
        assert (t["dumps"], g["status"]) == (False, "fail") and "-111" in g["evidence"], g
        status, lines = _crash(v)
        assert status is not None and not os.WCOREDUMP(status)
        assert any(f"Coredump socket connection {path} failed -111" in ln for ln in lines), lines
    finally:
        v.close()


def test_space_in_path_fails_at_crash_time(sock_lab):
    labroot, made = sock_lab
    path = os.path.join(labroot, "a b.sock")
    made.append(Server("read", path))
    v, t = _victim_check(labroot, "@" + path)  # check_coredump_socket() lets the write through
    try:
        g = gate(t, "socket-handler")
        assert (t["dumps"], g["status"]) == (False, "fail") and "space" in g["evidence"], g
        status, lines = _crash(v)
        assert status is not None and not os.WCOREDUMP(status)
        assert any("may not" in ln and "contain spaces" in ln for ln in lines), lines
        assert made[0].event(0.5) is None
    finally:
        v.close()


@pytest.mark.parametrize("bad", ["@rel.sock", "@/x/../y.sock", "@/" + "x" * 107, "@@rel"])
def test_sysctl_refuses_what_the_model_refuses(bad, saved_sysctls):
    from coredoctor.kernel import handlers
    with pytest.raises(OSError):
        L.write_sysctl("kernel.core_pattern", bad)
    assert handlers.socket_path_problem(bad.lstrip("@"))[0] == "path-written"
    ok = "@/" + "x" * 106  # 107 bytes: the longest path the kernel takes
    L.write_sysctl("kernel.core_pattern", ok)
    assert L.read_sysctl("kernel.core_pattern") == ok and handlers.socket_path_problem(ok[1:]) is None


def test_listener_in_a_private_mount_namespace(sock_lab):
    labroot, made = sock_lab
    d = os.path.join(labroot, "private")
    os.mkdir(d)
    path = os.path.join(d, "core.sock")
    made.append(Server("read", path, wrap=("unshare", "-m", "--propagation", "private", "sh", "-c",
                                           f'mount -t tmpfs lab "{d}" && exec "$0" "$@"')))
    assert not os.path.exists(path)
    v, t = _victim_check(labroot, "@" + path)
    try:
        g = gate(t, "socket-handler")
        assert (t["dumps"], g["status"]) == (False, "fail") and "another mount namespace" in g["evidence"], g
        status, lines = _crash(v)
        assert status is not None and not os.WCOREDUMP(status)
        assert any(f"Coredump socket connection {path} failed -2" in ln for ln in lines), lines
        assert made[0].event(0.5) is None
    finally:
        v.close()


# ------------------------------------------------------------------ the kernel connects


def _full_dump(v, srv):
    status, lines = _crash(v)
    evs = srv.events_until("done")
    done = [e for e in evs if e["event"] == "done"]
    return status, lines, evs, (done[0] if done else None)


@pytest.mark.parametrize("wrap", [(), ("unshare", "-n")], ids=["init_net", "other-netns"])
def test_listening_server_gets_the_core(wrap, sock_lab):
    labroot, made = sock_lab
    path = os.path.join(labroot, "core.sock")
    srv = Server("read", path, wrap=wrap)
    made.append(srv)
    v, t = _victim_check(labroot, "@" + path)
    try:
        g = gate(t, "socket-handler")
        assert (t["dumps"], g["status"]) == (True, "pass"), t["verdict"] + repr(g)
        assert ("init_net" in g["evidence"]) == (not wrap), g["evidence"]
        status, lines, evs, done = _full_dump(v, srv)
        assert status is not None and os.WCOREDUMP(status), (status, lines)
        assert done and done["bytes"] > 4096 and done["head"] == "7f454c46", evs  # an ELF core
    finally:
        v.close()


ACKS = [
    # ack mask, core expected at the server, WCOREDUMP
    (KERNEL, True, True),
    (USERSPACE, False, True),
    (REJECT, False, False),
]


@pytest.mark.parametrize("mask,core,wcore", ACKS, ids=["KERNEL", "USERSPACE", "REJECT"])
def test_request_protocol(mask, core, wcore, sock_lab):
    labroot, made = sock_lab
    path = os.path.join(labroot, "req.sock")
    srv = Server(f"ack:{mask}", path)
    made.append(srv)
    v, t = _victim_check(labroot, "@@" + path)
    try:
        g = gate(t, "socket-handler")
        assert g["status"] == "pass" and "coredump_ack" in g["evidence"], g
        assert gate(t, "handler-policy")["status"] == "warn"  # the server's answer decides, per crash
        status, lines, evs, done = _full_dump(v, srv)
        req = next(e for e in evs if e["event"] == "req")
        assert req["size"] >= 16 and req["mask"] == KERNEL | USERSPACE | REJECT | WAIT, req
        assert next(e for e in evs if e["event"] == "mark")["mark"] == 0  # COREDUMP_MARK_REQACK
        assert status is not None and bool(os.WCOREDUMP(status)) == wcore, hex(status or 0)
        assert done is not None and (done["bytes"] > 4096) == core, done
        if core:
            assert done["head"] == "7f454c46"
    finally:
        v.close()


@pytest.mark.parametrize("mode,pattern", [("noread", "@"), ("silent", "@@")], ids=["accepts-not-reads",
                                                                                    "never-acks"])
def test_server_that_stops_stalls_the_dump(mode, pattern, sock_lab):
    labroot, made = sock_lab
    path = os.path.join(labroot, "stall.sock")
    srv = Server(mode, path)
    made.append(srv)
    v, t = _victim_check(labroot, pattern + path)
    try:
        g = gate(t, "socket-handler")
        assert g["status"] == "pass" and "stalls the crashing process" in g["evidence"], g
        v.send("fault")
        assert srv.events_until("req" if mode == "silent" else "accepted", 10), "the kernel never connected"
        assert v.wait(1.5) is None, "the dump did not stall"
        with open(f"/proc/{v.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        assert fields[0] == "S" and int(fields[6]) & 0x200, fields[:7]  # sleeping, PF_DUMPCORE
        os.kill(v.pid, signal.SIGKILL)  # dump_interrupted()
        status = v.wait(10)
        assert status is not None and os.WTERMSIG(status) == signal.SIGKILL and not os.WCOREDUMP(status)
    finally:
        v.close()
