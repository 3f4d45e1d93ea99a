"""elfcore against cores built byte by byte the way fs/binfmt_elf.c writes them, and against
every kind of damaged header: one NotACore (or an honest inspect() status), bounded reads."""
import os
import struct

import pytest

from coredoctor import elfcore
from coredoctor.elfcore import NotACore, inspect, read_core_info


def note(ntype, desc, name=b"CORE\0"):
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def prpsinfo(pid=4242, ppid=1, uid=65534, gid=65534, fname=b"victim", psargs=b"victim --x"):
    d = bytearray(136)
    struct.pack_into("<IIiiii", d, 16, uid, gid, pid, ppid, pid, pid)
    d[40:40 + len(fname)] = fname
    d[56:56 + len(psargs)] = psargs
    return bytes(d)


def prstatus(pid=4242, sig=11):
    d = bytearray(336)
    struct.pack_into("<iii", d, 0, sig, 0, 0)
    struct.pack_into("<h", d, 12, sig)
    struct.pack_into("<iiii", d, 32, pid, 1, pid, pid)
    return bytes(d)


def make_core(notes=None, load_size=8192, phentsize=56, phnum=None, phoff=64, e_type=4):
    """Ehdr, then PT_NOTE + one PT_LOAD, the notes, the load's bytes (elf_core_dump()'s order)."""
    notes = notes if notes is not None else note(1, prstatus()) + note(3, prpsinfo())
    n = 2
    notes_off = 64 + 56 * n
    load_off = (notes_off + len(notes) + 4095) & ~4095
    eh = bytearray(64)
    eh[:16] = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    struct.pack_into("<HHIQQQIHHHHHH", eh, 16, e_type, 62, 1, 0, phoff, 0, 0, 64, phentsize,
                     n if phnum is None else phnum, 64, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 4, 0, notes_off, 0, 0, len(notes), 0, 4)
    ph += struct.pack("<IIQQQQQQ", 1, 5, load_off, 0x400000, 0, load_size, load_size, 4096)
    body = bytes(eh) + ph + notes
    return body + b"\0" * (load_off - len(body)) + b"\xcc" * load_size


@pytest.fixture
def write(tmp_path):
    def w(data, name="core"):
        p = tmp_path / name
        p.write_bytes(data)
        return str(p)
    return w


def test_synthetic_core_reads(write):
    p = write(make_core())
    info = read_core_info(p)
    assert (info["pid"], info["ppid"], info["uid"], info["gid"]) == (4242, 1, 65534, 65534)
    assert (info["fname"], info["psargs"], info["signal"], info["prstatus_pid"]) == ("victim", "victim --x", 11, 4242)
    assert info["truncated"] is False and info["expected_size"] == os.path.getsize(p)
    assert inspect(p)["status"] == "present"


def _patch(data, off, fmt, *vals):
    b = bytearray(data)
    struct.pack_into(fmt, b, off, *vals)
    return bytes(b)


GOOD = make_core()
NOTES_PH = 64            # program header 0 (PT_NOTE)
LOAD_PH = 64 + 56        # program header 1 (PT_LOAD)

DAMAGED = {
    "e_phentsize 0": _patch(GOOD, 54, "<H", 0),
    "e_phentsize 40 (< Elf64_Phdr)": _patch(GOOD, 54, "<H", 40),
    "e_phnum 65534 past the file": _patch(GOOD, 56, "<H", 65534),
    "e_phnum PN_XNUM without sections": _patch(GOOD, 56, "<H", 0xFFFF),
    "e_phoff past 2^62": _patch(GOOD, 32, "<Q", 1 << 62),
    "e_phoff 2^64-1": _patch(GOOD, 32, "<Q", (1 << 64) - 1),
    "e_phoff past the file": _patch(GOOD, 32, "<Q", 1 << 40),
    "e_phoff 0": _patch(GOOD, 32, "<Q", 0),
    "note offset past 2^62": _patch(GOOD, NOTES_PH + 8, "<Q", (1 << 62) + 5),
    "note size 2^64-1": _patch(GOOD, NOTES_PH + 32, "<Q", (1 << 64) - 1),
    "load offset+size past 2^62": _patch(GOOD, LOAD_PH + 32, "<Q", (1 << 62) - 1),
    "note namesz huge": _patch(GOOD, 64 + 112, "<I", 0xFFFFFFFF),
    "note descsz huge": _patch(GOOD, 64 + 112 + 4, "<I", 0xFFFFFFF0),
    "not ET_CORE": _patch(GOOD, 16, "<H", 2),
    "32-bit": _patch(GOOD, 4, "<B", 1),
    "only the ELF magic": b"\x7fELF",
    "garbage": b"\x00" * 200,
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_header_is_one_domain_error(write, name):
    p = write(DAMAGED[name])
    with pytest.raises(NotACore) as e:
        read_core_info(p)
    assert "\n" not in str(e.value)
    r = inspect(p)
    assert r["status"] in ("not-core", "truncated") and r["why"], r
    assert r["status"] != "present"


def test_huge_note_sizes_still_find_nothing_wrong(write):
    """A PRPSINFO whose descsz claims more than the segment holds is not read."""
    bad = note(1, prstatus()) + struct.pack("<III", 5, 1 << 30, 3) + b"CORE\0\0\0\0" + prpsinfo()
    r = inspect(write(make_core(notes=bad)))
    assert r["status"] == "not-core" and "no NT_PRPSINFO" in r["why"]


def test_overlapping_and_foreign_notes(write):
    """A type-3 note named GNU is a build-id, not a PRPSINFO; the CORE one after it counts."""
    notes = note(3, prpsinfo(pid=1), name=b"GNU\0") + note(1, prstatus(pid=77)) + note(3, prpsinfo(pid=77))
    info = read_core_info(write(make_core(notes=notes)))
    assert info["pid"] == 77 and info["prstatus_pid"] == 77


def test_truncated_core_keeps_pid(write):
    p = write(GOOD[:len(GOOD) - 4096])
    r = inspect(p)
    assert r["status"] == "truncated" and r["pid"] == 4242 and r["expected_size"] == len(GOOD)


def test_pn_xnum_reads_count_from_section_0(write):
    data = bytearray(make_core())
    sh_off = len(data)
    sh0 = bytearray(64)
    struct.pack_into("<I", sh0, 44, 2)  # sh_info: the real e_phnum
    data += sh0
    struct.pack_into("<Q", data, 40, sh_off)      # e_shoff
    struct.pack_into("<H", data, 56, 0xFFFF)      # e_phnum = PN_XNUM
    struct.pack_into("<H", data, 60, 1)           # e_shnum
    info = read_core_info(write(bytes(data)))
    assert info["pid"] == 4242


def test_symlink_not_followed(tmp_path, write):
    real = write(GOOD)
    link = tmp_path / "core.link"
    os.symlink(real, link)
    with pytest.raises(NotACore, match="symbolic link"):
        read_core_info(str(link))
    assert inspect(str(link))["status"] == "not-core"


def test_fifo_does_not_block(tmp_path):
    f = tmp_path / "core.fifo"
    os.mkfifo(f)
    assert inspect(str(f))["status"] == "not-core"


def test_reads_are_bounded(write, monkeypatch):
    """A header naming 2^20 program headers of a small file reads at most the file."""
    sizes = []
    real = os.pread
    monkeypatch.setattr(elfcore.os, "pread", lambda fd, n, off: sizes.append(n) or real(fd, n, off))
    with pytest.raises(NotACore):
        read_core_info(write(_patch(GOOD, 56, "<H", 0xFFFE)))
    assert max(sizes) <= 1 << 24
