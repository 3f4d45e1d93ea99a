"""canary's search for the core it made, in directories others may write (/var/crash, a cwd, a
container's root seen through /proc/PID/root): a symlink or a FIFO planted under a core's name is
no candidate; it is never followed (no other file's size or owner reported as the core) and never
opened in a way that blocks (a FIFO would hang the open until a writer came)."""

import os
import signal
import time

import pytest

from coredoctor import canary


@pytest.fixture
def alarm():
    """A hang (a blocking open of a FIFO) fails the test instead of stopping the run."""
    def hung(*_):
        raise AssertionError("blocked: a FIFO was opened without O_NONBLOCK")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def crashdir(tmp_path):
    d = tmp_path / "crash"
    d.mkdir()
    os.chmod(d, 0o1777)  # as /var/crash: anyone may plant a name
    secret = tmp_path / "secret"
    secret.write_bytes(b"x" * 4096)
    os.chmod(secret, 0o600)
    return d, secret


def _predicted(pattern):
    return {"core_destination": {"kind": "file", "path": pattern, "host_path": pattern, "handler": None}}


def test_a_planted_symlink_and_fifo_are_not_the_core(crashdir, alarm):
    d, secret = crashdir
    started = time.time()
    os.symlink(secret, d / f"core.{canary.CANARY_COMM}.4242")
    os.mkfifo(d / f"core.{canary.CANARY_COMM}.4243")
    assert canary._candidates(str(d / "core.*"), started) == []
    assert canary._find_core(_predicted(str(d / "core.*")), 4242, started) is None
    # the handlers' directories: looked for until the timeout, never found
    t0 = time.monotonic()
    got = canary._wait_glob(str(d / f"*{canary.CANARY_COMM}*"), 4242, started, verify=False, timeout=0.5)
    assert got == {"path": None, "size": 0, "found": False}
    assert time.monotonic() - t0 < 5


def test_the_real_file_beside_them_is_found(crashdir, alarm):
    d, secret = crashdir
    started = time.time()
    os.symlink(secret, d / "core.a")
    os.mkfifo(d / "core.b")
    (d / "core.c").write_bytes(b"not an ELF core")
    got = canary._find_core(_predicted(str(d / "core.*")), 4242, started)
    assert got["path"] == str(d / "core.c") and got["found"] is True and got["size"] == 15
    assert got["elf"] is False and got["verified"] is False


@pytest.mark.parametrize("plant", ["symlink", "fifo"])
def test_a_name_swapped_after_listing_is_not_followed(crashdir, alarm, plant):
    """Between the listing and the open, the file can be replaced: the open itself refuses."""
    d, secret = crashdir
    p = d / "core.swapped"
    if plant == "symlink":
        os.symlink(secret, p)
    else:
        os.mkfifo(p)
    for verify in (True, False):
        got = canary._describe(str(p), 4242, verify=verify, settle=0.3)
        assert got["found"] is False and got["size"] == 0, got
        assert "_ident" not in got
    assert os.path.islink(p) or os.path.exists(p)  # left where it was, not removed


def _elf_core(pid):
    import importlib.util
    spec = importlib.util.spec_from_file_location("_t_elfcore", os.path.join(os.path.dirname(__file__),
                                                                             "test_elfcore.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m.make_core(m.note(1, m.prstatus(pid=pid)) + m.note(3, m.prpsinfo(pid=pid)))


def test_a_pid_less_pattern_finds_the_canarys_own_core_and_removes_no_other(crashdir, alarm):
    # "core.%e"-like patterns match any crash's core written meanwhile: only the one whose
    # NT_PRPSINFO names the canary's pid is its own (never delete a core that is not)
    d, _ = crashdir
    started = time.time()
    (d / "core.a-other").write_bytes(_elf_core(1111))   # sorts first
    (d / "core.b-canary").write_bytes(_elf_core(4242))
    got = canary._find_core(_predicted(str(d / "core.*")), 4242, started)
    assert got["path"] == str(d / "core.b-canary") and got["verified"] is True
    assert canary._is_own(got, 4242)
    other = canary._describe(str(d / "core.a-other"), 4242, settle=0.2)
    assert other["verified"] is False and not canary._is_own(other, 4242)
    # only the other process's core there: found, not the canary's, not to be removed
    os.unlink(d / "core.b-canary")
    got = canary._find_core(_predicted(str(d / "core.*")), 4242, started)
    assert got["path"] == str(d / "core.a-other") and not canary._is_own(got, 4242)


def test_a_handlers_file_is_the_canarys_only_by_its_name_and_pid():
    name = f"/var/lib/systemd/coredump/core.{canary.CANARY_COMM}.0.0b1f.4242.1764600000000000.zst"
    assert canary._is_own({"path": name, "found": True, "size": 9}, 4242)
    assert not canary._is_own({"path": name, "found": True, "size": 9}, 424)
    assert not canary._is_own({"path": "/var/lib/systemd/coredump/core.bash.0.0b1f.4242.1.zst",
                               "found": True}, 4242)
    assert not canary._is_own({"path": None, "size": 0, "found": False}, 4242)
