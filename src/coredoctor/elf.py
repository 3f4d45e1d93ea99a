"""
ELF objects: program headers, build-ids and function symbols
------------------------------------------------------------
Just enough of the ELF format (``include/uapi/linux/elf.h``; the System V gABI) to turn an
address inside a mapped executable or shared library into ``symbol+offset``: the ``PT_LOAD``
program headers (file offset -> link-time virtual address), the GNU build-id
(``NT_GNU_BUILD_ID`` in ``PT_NOTE`` or a ``SHT_NOTE`` section) and the function symbols of
``.symtab`` or, in stripped objects, ``.dynsym``. Standard library only.

Everything reads through ``os.pread`` on a file descriptor, so a caller can hand in a descriptor
it opened through ``/proc/PID/map_files`` (a deleted file, another mount namespace). Symbols are
read for 64-bit little-endian objects (x86_64, arm64, riscv64, ppc64le); anything else is
recognised and reported as unsupported (:attr:`Elf.supported` is False), never misread.
"""

import bisect
import os
import struct

from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

__all__ = ["Elf", "NotAnElf", "read_elf", "read_elf_path", "SymbolTable", "markers"]

ELFCLASS64 = 2
ELFDATA2LSB = 1
PT_LOAD = 1
PT_NOTE = 4
SHT_SYMTAB = 2
SHT_NOTE = 7
SHT_DYNSYM = 11
SHT_NOBITS = 8
STT_FUNC = 2
STT_GNU_IFUNC = 10
STB_LOCAL = 0
SHN_UNDEF = 0
NT_GNU_BUILD_ID = 3

_MAX_TABLE = 64 << 20  # a symbol or string table larger than this is not read (corrupt header)
_MAX_OFFSET = 1 << 62  # no file offset or size beyond this is plausible (pread() takes < 2^63)
_PHDR_SIZE = 56        # sizeof(Elf64_Phdr)
_SHDR_SIZE = 64        # sizeof(Elf64_Shdr)


class NotAnElf(ValueError):
    """The file is not an ELF object (or is truncated before its headers)."""


class SymbolTable:
    """Function symbols sorted by address: ``lookup(vaddr) -> (name, offset) | None``.

    Where several symbols share an address (``setresuid`` and ``__setresuid``), the name a
    person would call is kept: global or weak before local, fewer leading underscores, shorter.
    An address past the end of the nearest preceding symbol (``st_size``) has no name: ``None``
    rather than a wrong one. A symbol of size 0 names only its own address.
    """

    __slots__ = ("addrs", "ends", "names", "source")

    def __init__(self, entries: Iterable[Tuple[int, int, str, int]], source: str) -> None:
        """*entries*: iterable of ``(value, size, name, bind)``; *source*: where they came from
        (``"symtab"``, ``"dynsym"``, ``"debug:PATH"``)."""
        best: Dict[int, Tuple[Tuple[bool, int, int, str], int, str]] = {}
        for value, size, name, bind in entries:
            key = (bind == STB_LOCAL, len(name) - len(name.lstrip("_")), len(name), name)
            cur = best.get(value)
            if cur is None:
                best[value] = (key, size, name)
            elif key < cur[0]:
                best[value] = (key, max(size, cur[1]), name)
            elif size > cur[1]:
                best[value] = (cur[0], size, cur[2])
        self.addrs = sorted(best)
        self.ends = [a + best[a][1] for a in self.addrs]
        self.names = [best[a][2] for a in self.addrs]
        self.source = source

    def __len__(self) -> int:
        return len(self.addrs)

    def lookup(self, vaddr: int) -> Optional[Tuple[str, int]]:
        i = bisect.bisect_right(self.addrs, vaddr) - 1
        # the nearest preceding symbol first; a few earlier ones in case an enclosing function
        # (larger size) starts before a smaller symbol that does not contain the address
        for j in range(i, max(i - 8, -1), -1):
            start, end = self.addrs[j], self.ends[j]
            if vaddr < end or vaddr == start:
                return self.names[j], vaddr - start
        return None


class Elf:
    """What one ELF object says about itself (see :func:`read_elf`)."""

    __slots__ = ("supported", "elfclass", "data", "e_type", "machine", "loads", "build_id",
                 "symbols", "debuglink")

    def __init__(self) -> None:
        self.supported = False
        self.elfclass: Optional[int] = None
        self.data: Optional[int] = None
        self.e_type: Optional[int] = None
        self.machine: Optional[int] = None
        self.loads: List[Tuple[int, int, int]] = []  # (p_offset, p_vaddr, p_filesz) of each PT_LOAD
        self.build_id: Optional[str] = None          # lowercase hex
        self.symbols: Optional[SymbolTable] = None   # from .symtab, else .dynsym, else None
        self.debuglink: Optional[str] = None         # .gnu_debuglink file name

    def offset_to_vaddr(self, offset: int) -> Optional[int]:
        """The link-time virtual address of file offset *offset*, through the ``PT_LOAD`` that
        contains it (``None`` if none does)."""
        for p_offset, p_vaddr, p_filesz in self.loads:
            if p_offset <= offset < p_offset + p_filesz:
                return offset - p_offset + p_vaddr
        return None


def _pread(fd: int, size: int, offset: int, exact: bool = True) -> bytes:
    if not (0 <= offset < _MAX_OFFSET and 0 <= size <= _MAX_TABLE):
        raise NotAnElf(f"implausible offset {offset:#x} or size {size:#x}")
    data = os.pread(fd, size, offset)
    if exact and len(data) < size:
        raise NotAnElf(f"truncated at offset {offset:#x}")
    return data


def read_elf(fd: int, symbols: bool = True) -> "Elf":
    """Read the ELF object open on *fd*: :class:`Elf`. Raises :class:`NotAnElf` (also for
    damaged headers and tables), or OSError from the reads.

    With *symbols* False only headers and the build-id are read (cheap).
    """
    try:
        return _read_elf(fd, symbols)
    except struct.error as e:
        raise NotAnElf(f"damaged ELF: {e}") from e


def _read_elf(fd: int, symbols: bool) -> Elf:
    head = os.pread(fd, 64, 0)
    if len(head) < 16 or head[:4] != b"\x7fELF":
        raise NotAnElf("not an ELF file")
    e = Elf()
    e.elfclass, e.data = head[4], head[5]
    if e.elfclass != ELFCLASS64 or e.data != ELFDATA2LSB or len(head) < 64:
        return e  # 32-bit or big-endian: recognised, not read
    (e.e_type, e.machine, _ver, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize, e_phnum,
     e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", head, 16)
    e.supported = True
    notes = []
    if e_phentsize * e_phnum > 1 << 20 or e_shentsize * e_shnum > 16 << 20:
        raise NotAnElf("implausible header table sizes")
    # a table with entries smaller than its entry type is damaged, not empty (gABI: e_phentsize
    # is sizeof(Elf64_Phdr), e_shentsize sizeof(Elf64_Shdr))
    if e_phnum and e_phoff and e_phentsize < _PHDR_SIZE:
        raise NotAnElf(f"e_phentsize {e_phentsize} is less than an Elf64_Phdr ({_PHDR_SIZE})")
    if e_shnum and e_shoff and e_shentsize < _SHDR_SIZE:
        raise NotAnElf(f"e_shentsize {e_shentsize} is less than an Elf64_Shdr ({_SHDR_SIZE})")
    if e_phoff and e_phnum:
        ph = _pread(fd, e_phentsize * e_phnum, e_phoff)
        for i in range(e_phnum):
            p_type, _pf, p_offset, p_vaddr, _pa, p_filesz, _memsz = struct.unpack_from(
                "<IIQQQQQ", ph, i * e_phentsize)
            if p_type in (PT_LOAD, PT_NOTE) and (p_offset >= _MAX_OFFSET or p_filesz >= _MAX_OFFSET):
                raise NotAnElf(f"program header {i}: implausible offset {p_offset:#x} or size {p_filesz:#x}")
            if p_type == PT_LOAD:
                e.loads.append((p_offset, p_vaddr, p_filesz))
            elif p_type == PT_NOTE:
                notes.append((p_offset, p_filesz))
    for off, size in notes:
        e.build_id = _build_id(fd, off, size)
        if e.build_id:
            break
    if not (e_shoff and e_shnum):
        return e
    sh = _pread(fd, e_shentsize * e_shnum, e_shoff)
    secs = [struct.unpack_from("<IIQQQQIIQQ", sh, i * e_shentsize) for i in range(e_shnum)]
    # (sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign, sh_entsize)
    if e.build_id is None:
        for s in secs:
            if s[1] == SHT_NOTE and s[5] < 1 << 16:
                e.build_id = _build_id(fd, s[4], s[5])
                if e.build_id:
                    break
    if e_shstrndx < len(secs) and secs[e_shstrndx][5] < _MAX_TABLE:
        shstr = _pread(fd, secs[e_shstrndx][5], secs[e_shstrndx][4], exact=False)
        for s in secs:
            if shstr[s[0]:s[0] + 15] == b".gnu_debuglink\0" and s[1] != SHT_NOBITS and s[5] < 4096:
                e.debuglink = _pread(fd, s[5], s[4], exact=False).split(b"\0", 1)[0].decode("utf-8", "replace")
    if symbols:
        for wanted, source in ((SHT_SYMTAB, "symtab"), (SHT_DYNSYM, "dynsym")):
            tab = _symbols(fd, secs, wanted, source)
            if tab is not None and len(tab):
                e.symbols = tab
                break
    return e


def read_elf_path(path: str, symbols: bool = True) -> "Elf":
    """:func:`read_elf` on a path (opened read-only, closed afterwards)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_elf(fd, symbols)
    finally:
        os.close(fd)


def notes(buf: bytes) -> Iterator[Tuple[bytes, int, bytes]]:
    """``(name, type, desc)`` of each complete note in *buf*, the contents of a PT_NOTE segment
    or SHT_NOTE section (Elf64_Nhdr, little-endian; name and desc each padded to 4 bytes). A note
    whose sizes run past *buf* ends the walk (cut, or lying sizes: nothing after it can be trusted
    to be aligned); huge sizes cannot make it read more than *buf*."""
    off = 0
    while off + 12 <= len(buf):
        namesz, descsz, ntype = struct.unpack_from("<III", buf, off)
        off += 12
        name = buf[off:off + namesz]
        off += (namesz + 3) & ~3
        desc = buf[off:off + descsz]
        off += (descsz + 3) & ~3
        if len(name) < namesz or len(desc) < descsz:
            return
        yield name, ntype, desc


def _build_id(fd: int, off: int, size: int) -> Optional[str]:
    buf = _pread(fd, min(size, 1 << 16), off, exact=False)
    for name, ntype, desc in notes(buf):
        if ntype == NT_GNU_BUILD_ID and name == b"GNU\0" and desc:
            return desc.hex()
    return None


def _symbols(fd: int, secs: List[Tuple[int, ...]], wanted: int, source: str) -> Optional[SymbolTable]:
    for s in secs:
        if s[1] != wanted or s[1] == SHT_NOBITS:
            continue
        _n, _t, _f, _a, off, size, link, _i, _al, entsize = s
        if entsize != 24 or size > _MAX_TABLE or link >= len(secs):
            return None
        strsec = secs[link]
        if strsec[1] == SHT_NOBITS or strsec[5] > _MAX_TABLE:
            return None
        raw = _pread(fd, size, off)
        strtab = _pread(fd, strsec[5], strsec[4])
        entries = []
        raw = raw[:len(raw) - len(raw) % 24]
        for st_name, st_info, _other, st_shndx, st_value, st_size in struct.iter_unpack("<IBBHQQ", raw):
            if st_info & 0xF not in (STT_FUNC, STT_GNU_IFUNC) or st_shndx == SHN_UNDEF or not st_value:
                continue
            end = strtab.find(b"\0", st_name)
            name = strtab[st_name:end if end >= 0 else None].decode("utf-8", "replace")
            if name:
                entries.append((st_value, st_size, name, st_info >> 4))
        return SymbolTable(entries, source)
    return None


#: one string table (``.strtab``, ``.dynstr``) is scanned up to this size
_MAX_SCAN = 64 << 20
_SCAN_SECTIONS = (b".strtab", b".dynstr")


def markers(fd: int, sections: Iterable[str] = (), symbols: Iterable[str] = (),
            notes: Iterable[str] = (), suffixes: Iterable[str] = ()) -> List[str]:
    """Which of the named *sections*, note owners (*notes*, ``PT_NOTE``/``SHT_NOTE``) and
    *symbols* the ELF object open on *fd* has, as ``section:NAME``, ``note:OWNER`` and
    ``symbol:NAME`` strings (sorted). A symbol is found by its exact NUL-terminated name in
    ``.strtab`` or ``.dynstr`` (a stripped object has only the latter). 64-bit little-endian
    objects only (else ``[]``). *suffixes* are found as ``suffix:NAME`` where a symbol name ends
    in NAME (Rust's v0 mangling: ``_RNvCs..._7___rustc17rust_begin_unwind``). Raises
    :class:`NotAnElf` or OSError like :func:`read_elf`."""
    try:
        return _markers(fd, set(sections), set(symbols), set(notes), set(suffixes))
    except struct.error as e:
        raise NotAnElf(f"damaged ELF: {e}") from e


def _note_owners(fd: int, off: int, size: int) -> List[str]:
    buf = _pread(fd, min(size, 1 << 16), off, exact=False)
    out, pos = [], 0
    while pos + 12 <= len(buf):
        namesz, descsz, _ntype = struct.unpack_from("<III", buf, pos)
        pos += 12
        if namesz > len(buf) or descsz > len(buf):
            break
        out.append(buf[pos:pos + namesz].rstrip(b"\0").decode("utf-8", "replace"))
        pos += ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return out


def _markers(fd: int, sections: Set[str], symbols: Set[str], notes: Set[str], suffixes: Set[str]) -> List[str]:
    head = os.pread(fd, 64, 0)
    if len(head) < 16 or head[:4] != b"\x7fELF":
        raise NotAnElf("not an ELF file")
    if head[4] != ELFCLASS64 or head[5] != ELFDATA2LSB or len(head) < 64:
        return []
    (_t, _m, _v, _e, e_phoff, e_shoff, _fl, _eh, e_phentsize, e_phnum, e_shentsize, e_shnum,
     e_shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", head, 16)
    if e_phentsize * e_phnum > 1 << 20 or e_shentsize * e_shnum > 16 << 20:
        raise NotAnElf("implausible header table sizes")
    found = set()
    owners: List[str] = []
    if e_phoff and e_phnum and e_phentsize >= _PHDR_SIZE:
        ph = _pread(fd, e_phentsize * e_phnum, e_phoff)
        for i in range(e_phnum):
            p_type, _pf, p_offset, _va, _pa, p_filesz, _mz = struct.unpack_from("<IIQQQQQ", ph, i * e_phentsize)
            if p_type == PT_NOTE and p_offset < _MAX_OFFSET and p_filesz < _MAX_OFFSET:
                owners += _note_owners(fd, p_offset, p_filesz)
    wanted = [("symbol:" + s, b"\0" + s.encode() + b"\0") for s in sorted(symbols)]
    wanted += [("suffix:" + s, s.encode() + b"\0") for s in sorted(suffixes)]
    if e_shoff and e_shnum and e_shentsize >= _SHDR_SIZE:
        sh = _pread(fd, e_shentsize * e_shnum, e_shoff)
        secs = [struct.unpack_from("<IIQQQQIIQQ", sh, i * e_shentsize) for i in range(e_shnum)]
        names: List[bytes] = [b""] * len(secs)
        if e_shstrndx < len(secs) and secs[e_shstrndx][5] < _MAX_TABLE:
            shstr = _pread(fd, secs[e_shstrndx][5], secs[e_shstrndx][4], exact=False)
            for i, s in enumerate(secs):
                end = shstr.find(b"\0", s[0])
                names[i] = shstr[s[0]:end if end >= 0 else None]
        for i, s in enumerate(secs):
            name = names[i].decode("utf-8", "replace")
            if name in sections:
                found.add(f"section:{name}")
            if s[1] == SHT_NOTE and s[5] < 1 << 16:
                owners += _note_owners(fd, s[4], s[5])
            if wanted and names[i] in _SCAN_SECTIONS and s[1] != SHT_NOBITS and 0 < s[5] <= _MAX_SCAN:
                data = b"\0" + _pread(fd, s[5], s[4], exact=False)
                for marker, w in wanted:
                    if w in data:
                        found.add(marker)
    found.update(f"note:{o}" for o in owners if o in notes)
    return sorted(found)
