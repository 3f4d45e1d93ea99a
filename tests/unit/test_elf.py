"""coredoctor.elf against objects gcc builds here, cross-checked with binutils (readelf, nm),
and against damaged or foreign ELF headers (which must never crash the reader)."""
import os
import random
import re
import shutil
import struct
import subprocess

import pytest

from coredoctor.elf import NotAnElf, notes, read_elf, read_elf_path

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("nm") and shutil.which("readelf")),
                                reason="needs gcc and binutils (apt-get install gcc)")

SRC = r"""
#include <stdio.h>
__attribute__((noinline, aligned(64))) int cd_leaf(int x) { return x * 3 + 1; }
__attribute__((noinline, aligned(64))) int cd_other(int x) { return cd_leaf(x) + 2; }
int main(int argc, char **argv) { printf("%d\n", cd_other(argc)); return 0; }
"""
LIBSRC = r"""
__attribute__((noinline)) int cd_lib_func(int x) { return x * 7; }
"""
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


@pytest.fixture(scope="module")
def objs(tmp_path_factory):
    d = tmp_path_factory.mktemp("elf")
    (d / "p.c").write_text(SRC)
    (d / "l.c").write_text(LIBSRC)
    cc = ["gcc", "-O1", "-fno-omit-frame-pointer"]
    out = {}
    for name, extra in (("pie", ["-pie", "-fPIE"]), ("nopie", ["-no-pie", "-fno-PIE"]),
                        ("rdynamic", ["-pie", "-fPIE", "-rdynamic"])):
        out[name] = str(d / name)
        subprocess.run([*cc, *extra, "-o", out[name], str(d / "p.c")], check=True)
    for name in ("stripped", "rdynamic"):
        src = out["pie"] if name == "stripped" else out["rdynamic"]
        out[name] = str(d / (name + ".s"))
        shutil.copy(src, out[name])
        subprocess.run(["strip", out[name]], check=True)
    out["lib"] = str(d / "libcdsym.so")  # linked at a base address: vaddr != file offset
    subprocess.run([*cc, "-shared", "-fPIC", "-Wl,-Ttext-segment=0x20000000", "-o", out["lib"], str(d / "l.c")],
                   check=True)
    return out


def nm_funcs(path, dynamic=False):
    """{name: (addr, size)} of the defined functions, as binutils' nm sees them."""
    r = subprocess.run(["nm", "-S", "--defined-only", *(["-D"] if dynamic else []), path],
                       capture_output=True, text=True, check=True)
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "TtWi":
            out[parts[3].split("@")[0]] = (int(parts[0], 16), int(parts[1], 16))
    return out


def readelf_build_id(path):
    r = subprocess.run(["readelf", "-n", path], capture_output=True, text=True, check=True)
    m = re.search(r"Build ID: ([0-9a-f]+)", r.stdout)
    return m.group(1) if m else None


def readelf_loads(path):
    r = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True, check=True)
    return [(int(p[1], 16), int(p[2], 16), int(p[4], 16))
            for p in (line.split() for line in r.stdout.splitlines()) if p and p[0] == "LOAD"]


@pytest.mark.parametrize("name", ["pie", "nopie", "lib", "stripped"])
def test_headers_and_build_id_match_binutils(objs, name):
    e = read_elf_path(objs[name])
    assert e.supported
    assert e.build_id == readelf_build_id(objs[name]) and e.build_id
    assert e.loads == readelf_loads(objs[name])


@pytest.mark.parametrize("name", ["pie", "nopie", "lib"])
def test_every_function_symbol_matches_nm(objs, name):
    e = read_elf_path(objs[name])
    assert e.symbols.source == "symtab"
    funcs = nm_funcs(objs[name])
    assert "cd_leaf" in funcs or "cd_lib_func" in funcs
    for fname, (addr, size) in funcs.items():
        got = e.symbols.lookup(addr)
        assert got is not None and got[1] == 0, (fname, got)
        # an alias at the same address may be preferred; it must be one nm knows there
        assert funcs[got[0]][0] == addr
        if size > 1:
            assert e.symbols.lookup(addr + size - 1)[1] == size - 1


def test_past_the_end_of_a_function_is_no_name(objs):
    """cd_leaf is a few bytes followed by alignment padding (aligned(64)): an address in the
    padding belongs to no function."""
    e = read_elf_path(objs["pie"])
    addr, size = nm_funcs(objs["pie"])["cd_leaf"]
    nxt = nm_funcs(objs["pie"])["cd_other"][0]
    assert addr + size < nxt
    assert e.symbols.lookup(addr + size - 1)[0] == "cd_leaf"
    assert e.symbols.lookup(addr + size) is None
    assert e.symbols.lookup(nxt) == ("cd_other", 0)


def test_non_pie_and_based_library_translate_offsets_through_pt_load(objs):
    nopie = read_elf_path(objs["nopie"])
    addr, _ = nm_funcs(objs["nopie"])["main"]
    assert addr >= 0x400000
    text = [ld for ld in nopie.loads if ld[0] <= addr - 0x400000 < ld[0] + ld[2]]
    assert nopie.offset_to_vaddr(addr - 0x400000) == addr, text
    lib = read_elf_path(objs["lib"])
    laddr, _ = nm_funcs(objs["lib"])["cd_lib_func"]
    off = next(o - v + laddr for o, v, sz in lib.loads if v <= laddr < v + sz)
    assert off != laddr
    assert lib.offset_to_vaddr(off) == laddr
    assert lib.offset_to_vaddr(10 << 30) is None


def test_stripped_executables(objs):
    """strip removes .symtab: a plain PIE then has no function names at all; one linked with
    -rdynamic still exports them in .dynsym."""
    assert read_elf_path(objs["stripped"]).symbols is None
    e = read_elf_path(objs["rdynamic"])
    assert e.symbols.source == "dynsym"
    addr, _ = nm_funcs(objs["rdynamic"], dynamic=True)["cd_other"]
    assert e.symbols.lookup(addr + 1) == ("cd_other", 1)


@pytest.mark.skipif(not os.path.exists(LIBC), reason="no x86_64 glibc")
def test_libc_dynsym_names_setresuid():
    e = read_elf_path(LIBC)
    funcs = nm_funcs(LIBC, dynamic=True)
    addr, size = funcs["setresuid"]
    assert e.symbols.lookup(addr) == ("setresuid", 0)  # not its local alias __setresuid
    assert e.symbols.lookup(addr + size - 1) == ("setresuid", size - 1)
    assert e.build_id == readelf_build_id(LIBC)


def _header(ei_class, ei_data):
    ident = b"\x7fELF" + bytes([ei_class, ei_data, 1]) + bytes(9)
    return ident + bytes(48)


@pytest.mark.parametrize("ei_class,ei_data", [(1, 1), (1, 2), (2, 2)])
def test_32_bit_and_big_endian_are_recognised_not_read(tmp_path, ei_class, ei_data):
    p = tmp_path / "foreign"
    p.write_bytes(_header(ei_class, ei_data) + bytes(4096))
    e = read_elf_path(str(p))
    assert not e.supported and e.symbols is None and e.build_id is None
    assert (e.elfclass, e.data) == (ei_class, ei_data)


def test_not_elf_and_truncated(tmp_path, objs):
    p = tmp_path / "x"
    for data in (b"", b"#!/bin/sh\n", b"\x7fELF"):
        p.write_bytes(data)
        with pytest.raises(NotAnElf):
            read_elf_path(str(p))
    raw = open(objs["pie"], "rb").read()
    p.write_bytes(raw[:200])  # headers point past the end
    with pytest.raises(NotAnElf):
        read_elf_path(str(p))


def test_damaged_headers_never_crash(tmp_path, objs):
    """Random damage to the headers and tables of a real executable: the reader returns an Elf
    or raises NotAnElf, nothing else (the symbolizer relies on that)."""
    raw = open(objs["pie"], "rb").read()
    shoff, = struct.unpack_from("<Q", raw, 40)
    rng = random.Random(1234)
    p = tmp_path / "damaged"
    outcomes = set()
    for _ in range(300):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            where = rng.choice((rng.randrange(16, 64), rng.randrange(64, 64 + 13 * 56),
                                rng.randrange(shoff, len(raw))))
            b[where] = rng.randrange(256)
        p.write_bytes(bytes(b))
        fd = os.open(str(p), os.O_RDONLY)
        try:
            read_elf(fd)
            outcomes.add("elf")
        except NotAnElf:
            outcomes.add("notanelf")
        finally:
            os.close(fd)
    assert "elf" in outcomes


@pytest.mark.parametrize("what,off,fmt,value,why", [
    ("e_phentsize 0", 54, "<H", 0, "e_phentsize 0 is less than an Elf64_Phdr"),
    ("e_phentsize 40", 54, "<H", 40, "e_phentsize 40 is less than"),
    ("e_shentsize 0", 58, "<H", 0, "e_shentsize 0 is less than an Elf64_Shdr"),
    ("e_phoff 2^62", 32, "<Q", 1 << 62, "implausible offset"),
    ("e_shoff 2^64-1", 40, "<Q", (1 << 64) - 1, "implausible offset"),
])
def test_damaged_header_fields_are_one_error(objs, tmp_path, what, off, fmt, value, why):
    with open(objs["pie"], "rb") as f:
        b = bytearray(f.read())
    struct.pack_into(fmt, b, off, value)
    p = tmp_path / "damaged"
    p.write_bytes(bytes(b))
    with pytest.raises(NotAnElf, match=why):
        read_elf_path(str(p))


def test_load_offset_past_2_62_is_damaged(objs, tmp_path):
    with open(objs["pie"], "rb") as f:
        b = bytearray(f.read())
    e_phoff, = struct.unpack_from("<Q", b, 32)
    e_phnum, = struct.unpack_from("<H", b, 56)
    i = next(i for i in range(e_phnum) if struct.unpack_from("<I", b, e_phoff + 56 * i)[0] == 1)  # a PT_LOAD
    struct.pack_into("<Q", b, e_phoff + 56 * i + 8, 1 << 63)
    p = tmp_path / "damaged"
    p.write_bytes(bytes(b))
    with pytest.raises(NotAnElf, match=f"program header {i}: implausible offset"):
        read_elf_path(str(p))


def test_notes_walks_complete_notes_and_stops_at_a_cut_one():
    """elf.notes(), the one walk of Elf64_Nhdr notes (build-ids here, CORE notes in elfcore)."""
    def note(name, ntype, desc, namesz=None, descsz=None):
        def pad(b):
            return b + b"\0" * (-len(b) % 4)
        return struct.pack("<III", len(name) if namesz is None else namesz,
                           len(desc) if descsz is None else descsz, ntype) + pad(name) + pad(desc)

    buf = note(b"GNU\0", 3, b"\x01\x02\x03\x04\x05") + note(b"CORE\0", 1, b"x" * 7)
    assert list(notes(buf)) == [(b"GNU\0", 3, b"\x01\x02\x03\x04\x05"), (b"CORE\0", 1, b"x" * 7)]
    # a note whose desc runs past the buffer ends the walk, whatever follows
    lying = note(b"CORE\0", 1, b"y" * 8, descsz=1 << 30) + note(b"GNU\0", 3, b"z" * 4)
    assert list(notes(buf + lying)) == list(notes(buf))
    assert list(notes(buf[:-3])) == [(b"GNU\0", 3, b"\x01\x02\x03\x04\x05")]
    assert list(notes(b"\0" * 11)) == []
