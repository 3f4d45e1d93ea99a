"""elfcore against a core the kernel really wrote (a victim that faults under a file
core_pattern in a temp dir; sysctls saved and restored by the labdir fixture), and against
damaged copies of that core."""
import os
import shutil
import struct

import pytest

import lab as L
from coredoctor import elfcore
from coredoctor.elfcore import NotACore

NOBODY = 65534


@pytest.fixture
def real_core(labdir):
    labroot, _mounts = labdir
    cores = L.make_cores(labroot)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%p", "kernel.core_uses_pid": 0,
                   "kernel.core_pipe_limit": 0, "fs.suid_dumpable": 0})
    v = L.Victim({"comm": "cd-elfcore", "rlimit_core": [None, None], "setresgid": [NOBODY] * 3,
                  "setgroups": [], "setresuid": [NOBODY] * 3, "prctl_dumpable": 1})
    try:
        status = v.fault()
        assert status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == 11
        assert os.WCOREDUMP(status), "the kernel reported no dump"
        path, size = L.wait_stable(f"{cores}/core.{v.pid}")
        assert path and size > 0
        yield path, v.pid, labroot
    finally:
        v.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="sets core_pattern and makes a real crash: run as root")
def test_real_core_notes_and_damaged_copies(real_core):
    path, pid, labroot = real_core
    info = elfcore.read_core_info(path)
    # NT_PRPSINFO (fill_psinfo()): pid, comm, the real ids; NT_PRSTATUS: the signal and thread
    assert (info["pid"], info["fname"], info["uid"], info["gid"]) == (pid, "cd-elfcore", NOBODY, NOBODY)
    assert "victim.py" in info["psargs"]
    assert (info["signal"], info["prstatus_pid"]) == (11, pid)
    assert info["truncated"] is False and info["expected_size"] <= os.path.getsize(path)
    r = elfcore.inspect(path)
    assert (r["status"], r["pid"], r["fname"], r["signal"]) == ("present", pid, "cd-elfcore", 11)

    with open(path, "rb") as f:
        data = f.read()
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phnum, = struct.unpack_from("<H", data, 56)
    note_off, note_size = struct.unpack_from("<QQ", data, e_phoff + 8)[0], \
        struct.unpack_from("<Q", data, e_phoff + 32)[0]

    def damaged(name, edit):
        b = bytearray(data)
        edit(b)
        p = os.path.join(labroot, f"damaged-{name}")
        with open(p, "wb") as f:
            f.write(b)
        return p

    cases = {
        "phentsize-0": lambda b: struct.pack_into("<H", b, 54, 0),
        "phoff-2^62": lambda b: struct.pack_into("<Q", b, 32, 1 << 62),
        "phnum-huge": lambda b: struct.pack_into("<H", b, 56, 0xFFFE),
        "note-offset-2^63": lambda b: struct.pack_into("<Q", b, e_phoff + 8, 1 << 63),
        "note-namesz-huge": lambda b: struct.pack_into("<I", b, note_off, 0xFFFFFFFF),
        "note-descsz-huge": lambda b: struct.pack_into("<I", b, note_off + 4, 0xFFFFFFFF),
    }
    for name, edit in cases.items():
        p = damaged(name, edit)
        try:
            got = elfcore.read_core_info(p)
        except NotACore as e:
            assert "\n" not in str(e)
        else:  # a damaged first note may leave the PRPSINFO unreachable, never misread
            assert got["pid"] == pid, (name, got)
        assert elfcore.inspect(p)["status"] in ("not-core", "truncated", "present"), name

    # cut after the notes: still this process's core, honestly truncated
    cut = os.path.join(labroot, "cut")
    with open(cut, "wb") as f:
        f.write(data[:note_off + note_size + 100])
    r = elfcore.inspect(cut)
    assert (r["status"], r["pid"]) == ("truncated", pid) and r["expected_size"] == info["expected_size"]
    # cut inside the program headers
    with open(cut, "wb") as f:
        f.write(data[:e_phoff + 56 * (e_phnum // 2) + 3])
    assert elfcore.inspect(cut)["status"] == "truncated"
    # a symlink to the real core is not followed
    link = os.path.join(labroot, "link")
    os.symlink(path, link)
    assert elfcore.inspect(link)["status"] == "not-core"
    shutil.copy(path, os.path.join(labroot, "copy"))
    assert elfcore.read_core_info(os.path.join(labroot, "copy"))["pid"] == pid
