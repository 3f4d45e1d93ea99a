"""trace's Predictor never answers from a reading taken after the fatal signal: the tracer reads
events in batches, so it may re-read a process that is already dying -- while the kernel writes
its core, the core file already exists and the reading would say "a file core.N is in the way"
(seen in the 6.1 guest, where the dump is slow). A real process is held mid-dump by a pipe
helper that does not read yet; the reading of it must be refused."""
import os
import subprocess
import sys
import time

import lab as L
from coredoctor.trace.run import Predictor
from coredoctor.trace.transitions import Proc, Task

VICTIM = ("import ctypes, resource, sys, time\n"
          "resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)\n"
          "print('ready', flush=True)\n"
          "sys.stdin.read(1)\n"
          "ctypes.string_at(0)\n")


def _core_dumping(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.split() == ["CoreDumping:", "1"] for line in f)
    except OSError:
        return False


def test_a_process_read_while_dumping_keeps_its_earlier_reading(labdir):
    d, _ = labdir
    go, out = os.path.join(d, "go"), os.path.join(d, "core.out")
    helper = os.path.join(d, "slow-helper")
    with open(helper, "w") as f:  # the kernel's write blocks once the pipe is full, until "go"
        f.write(f"#!/bin/sh\nwhile [ ! -e {go} ]; do sleep 0.05; done\nexec cat > {out}\n")
    os.chmod(helper, 0o755)
    L.write_sysctl("kernel.core_pattern", f"|{helper}")
    victim = subprocess.Popen([sys.executable, "-c", VICTIM], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert victim.stdout.readline() == b"ready\n"
        pred = Predictor()
        p = Proc(victim.pid, "python")
        p.dumpable = {"value": 1, "candidates": [1], "source": "model"}  # as the tracker follows it
        assert pred.refresh(p) is True
        before, window = p.snap, p.snap_window
        assert window[0] <= window[1] <= time.monotonic()
        victim.stdin.write(b"x")
        victim.stdin.flush()
        deadline = time.monotonic() + 10
        while not _core_dumping(victim.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _core_dumping(victim.pid), "the victim never started dumping"
        t_signal = time.monotonic()  # after the signal: it is dumping now
        assert pred.refresh(p) is False and p.dying is True
        assert p.snap is before and p.snap_window == window
        res = pred(p, Task(victim.pid, victim.pid, {"uid": [0] * 4, "gid": [0] * 4}), "SIGSEGV", "fault",
                   ts=t_signal)
        assert (res["dumps"], res["read_at"]) == (True, before["taken_at"]), res["verdict"]
    finally:
        open(go, "w").close()
        if not _core_dumping(victim.pid):  # the test failed before the fault: end it, no core
            victim.kill()
        victim.wait(timeout=30)
    assert os.WCOREDUMP(victim.returncode & 0xFFFF) or victim.returncode == -11
    deadline = time.monotonic() + 10
    while not (os.path.exists(out) and os.path.getsize(out) > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(out, "rb") as f:
        assert f.read(4) == b"\x7fELF"


def _snap(n):
    return {"taken_at": n, "processes": [], "targets": []}


def test_the_latest_reading_made_wholly_before_the_signal_counts():
    pred = Predictor()
    p = Proc(1, "x")
    p.prev_snap, p.prev_window = _snap(1), (1.0, 1.5)
    p.snap, p.snap_window = _snap(2), (2.0, 2.5)
    assert pred._before(p, 3.0) == (p.snap, (2.0, 2.5))
    assert pred._before(p, 2.2) == (p.prev_snap, (1.0, 1.5))  # the newer one was still being read
    assert pred._before(p, 1.2) == (None, None)
    assert Predictor(mono=False)._before(p, 1.2) == (p.snap, None)  # no comparable clock: the latest


DROPPER = ("import ctypes, os, resource, sys\n"
           "resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)\n"
           "print('ready', flush=True)\n"
           "sys.stdin.read(1)\n"
           "os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n"
           "print('dropped', flush=True)\n"
           "sys.stdin.read(1)\n"
           "ctypes.string_at(0)\n")


def test_a_reading_made_before_a_drop_under_suid_dumpable_2_still_predicts(cores):
    """Read while still root and dumpable=1; then it drops to nobody under fs.suid_dumpable=2 and
    faults before it is read again (the 6.1 guest is that slow). The flag the trace followed (2)
    sends the core to the host's root as fsuid 0: the reading must already hold the facts of
    that view, or the prediction is "no facts"."""
    L.write_sysctl("fs.suid_dumpable", "2")
    victim = subprocess.Popen([sys.executable, "-c", DROPPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert victim.stdout.readline() == b"ready\n"
        pred = Predictor()
        p = Proc(victim.pid, "python")
        p.dumpable = {"value": 1, "candidates": [1], "source": "model"}
        assert pred.refresh(p) is True
        victim.stdin.write(b"x")
        victim.stdin.flush()
        assert victim.stdout.readline() == b"dropped\n"
        p.dumpable = {"value": 2, "candidates": [2], "source": "model"}  # commit_creds(): suid_dumpable
        nobody = [65534] * 4
        res = pred(p, Task(victim.pid, victim.pid, {"uid": nobody, "gid": nobody}), "SIGSEGV", "fault",
                   ts=time.monotonic())
        victim.stdin.write(b"x")
        victim.stdin.flush()
        st = victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    on_disk = os.path.exists(os.path.join(cores, f"core.{victim.pid}"))
    assert st == -11 and on_disk  # the kernel: it dumped (as root, into the sticky directory)
    assert res["dumps"] is True, res["verdict"]
