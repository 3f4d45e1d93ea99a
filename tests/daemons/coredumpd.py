"""The real systemd-coredump behind /run/systemd/coredump, socket-activated by hand (no systemd as
PID 1 here) as ../shared/reference/real-components.md describes, and the cores it stores. service()
leaves the machine as it found it: our listeners ended by pid, the socket unlinked, the stored cores
of the pids in `ours` removed, /run/systemd removed if it made it."""
import contextlib
import glob
import os
import subprocess
import time

import pytest

import lab as L

HELPER = "/lib/systemd/systemd-coredump"
SOCKET = "/run/systemd/coredump"
STORE = "/var/lib/systemd/coredump"


class Service:
    def __init__(self):
        self.procs = []
        self.ours = []  # pids whose cores in STORE are removed afterwards

    def start(self, ns_pid=None):
        """Listen on SOCKET (seqpacket, a systemd-coredump per connection); with *ns_pid*, the
        accepting side runs in that process's mount namespace (the socket is still bound on the
        shared /run/systemd, where the kernel's helper connects)."""
        cmd = ["systemd-socket-activate", "--seqpacket", "--accept", "-l", SOCKET, HELPER]
        if ns_pid is not None:
            cmd = ["nsenter", "-t", str(ns_pid), "-m", *cmd]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        deadline = time.time() + 10
        while time.time() < deadline and SOCKET not in open("/proc/1/net/unix").read():
            time.sleep(0.05)
        return p

    def stop(self):
        """End the listeners we started (each by its pid)."""
        while self.procs:
            L.end(self.procs.pop(0))


@contextlib.contextmanager
def service():
    """Yield a Service with no listener yet (start() starts one); skip on a host whose SOCKET
    exists already (a systemd host: not ours to replace)."""
    L.require_installed(HELPER, "systemd-coredump")
    if os.path.exists(SOCKET):
        pytest.skip(f"{SOCKET} already exists (a systemd host): this test runs systemd-coredump by hand")
    made_run = not os.path.isdir("/run/systemd")
    os.makedirs("/run/systemd", exist_ok=True)
    s = Service()
    try:
        yield s
    finally:
        try:
            s.stop()
        finally:
            if os.path.exists(SOCKET):  # ours: it did not exist before
                os.unlink(SOCKET)
            for pid in s.ours:
                for f in glob.glob(f"{STORE}/core.*.{pid}.*"):
                    os.unlink(f)
            if made_run:
                os.rmdir("/run/systemd")


def stored(pid, timeout=10):
    """The path of *pid*'s core in STORE once it is there and not empty, or None after *timeout* s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = glob.glob(f"{STORE}/core.*.{pid}.*")
        if m and os.path.getsize(m[0]) > 0:
            return m[0]
        time.sleep(0.1)
    return None
