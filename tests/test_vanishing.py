"""Processes vanish mid-read: one place turns that into a clear domain error."""
import os

import pytest

import lab as L
from coredoctor.errors import NoSuchProcess, ProcessGone
from coredoctor.snapshot import pidfd, proc as procmod

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
