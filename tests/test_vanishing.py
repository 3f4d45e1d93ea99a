"""Processes vanish mid-read: one place turns that into a clear domain error."""
import os

import pytest

import lab as L
from coredoctor import snapshot
from coredoctor.errors import NoSuchProcess, ProcessGone, ZombieProcess
from coredoctor.snapshot import pidfd, proc as procmod
from coredoctor.snapshot.proc import task
from coredoctor.trace import reads

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reads other processes' /proc: run as root")


def _killer(v, orig):
    def f(*a, **kw):
        os.kill(v.pid, 9)
        v.wait()  # reaped: the pid is gone
        return orig(*a, **kw)
    return f


def test_exit_between_reads(monkeypatch):
    v = L.Victim({})
    try:
        monkeypatch.setattr(procmod, "_limits", _killer(v, procmod._limits))
        with pytest.raises(ProcessGone) as e:
            procmod.read_process(v.pid)
        assert "exited while it was being checked" in str(e.value)
    finally:
        v.close()


@pytest.mark.parametrize("use_pidfd", [True, False])
def test_exit_after_the_last_read_is_caught_by_the_pidfd(monkeypatch, use_pidfd):
    v = L.Victim({})
    try:
        # the process dies after every /proc read succeeded: only the identity check can notice
        monkeypatch.setattr(procmod, "_thread_masks", lambda pid: None)
        monkeypatch.setattr(procmod, "_dumpable", _killer(v, procmod._dumpable))
        with pytest.raises(NoSuchProcess):
            procmod.read_process(v.pid, use_pidfd=use_pidfd and pidfd.probe())
    finally:
        v.close()


def test_never_existed():
    with pytest.raises(NoSuchProcess):
        procmod.read_process(999999999)


def _zombie(code=3):
    """A child that exited and is not reaped: waitid(WNOWAIT) returns once it is a zombie and
    leaves it one (no sleep, no race)."""
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    return pid


def test_a_real_zombie():
    pid = _zombie(3)
    try:
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "Z"  # the kernel's own word
        with pytest.raises(ZombieProcess) as e:
            procmod.read_process(pid, use_pidfd=pidfd.probe())
        assert isinstance(e.value, NoSuchProcess) and e.value.pid == pid and e.value.name
        assert f"(pid {pid})" in str(e.value) and "is a zombie" in str(e.value)
        # the caller that decides: a named target raises, --all-like reading skips and counts
        with pytest.raises(ZombieProcess):
            snapshot.take([pid])
        snap = snapshot.take([pid, os.getpid()], strict=False)
        assert snap["skipped"]["no_mm"] == 1 and pid not in snap["targets"] and os.getpid() in snap["targets"]
        # the tracer's reads: the zombie's wait status (exit code 3, no core) is still there
        assert task.zombie_status(pid) == 3 << 8 and task.zombie_dumpcore(pid) is False
        assert reads.zombie_status(pid) == 3 << 8
        r = L.coredoctor("check", "--pid", str(pid))
        assert r.returncode == 2 and "is a zombie" in r.stderr and "Traceback" not in r.stderr
    finally:
        os.waitpid(pid, 0)
    # reaped: gone for every reader
    with pytest.raises(NoSuchProcess):
        procmod.read_process(pid)
    with pytest.raises(NoSuchProcess):
        task.zombie_status(pid)
    assert reads.zombie_status(pid) is None and reads.read_creds(pid) is None
