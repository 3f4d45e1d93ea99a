"""
ELF core files
--------------
Just enough of the ELF format (``include/uapi/linux/elf.h``, ``fs/binfmt_elf.c``
``fill_psinfo()``) to tell that a file is a real core of a given process: an ``ET_CORE`` ELF
whose ``NT_PRPSINFO`` note names the pid. Standard library only.
"""

import errno
import os
import stat
import struct
from typing import Any, Dict, Optional

from coredoctor.elf import notes

__all__ = ["read_core_info", "inspect", "NotACore", "open_core"]

ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
NT_PRSTATUS = 1
NT_PRPSINFO = 3
PN_XNUM = 0xFFFF           # e_phnum escape: the real count is section 0's sh_info (include/uapi/linux/elf.h)
EHDR_SIZE = 64             # sizeof(Elf64_Ehdr)
PHDR_SIZE = 56             # sizeof(Elf64_Phdr): what elf_core_dump() writes as e_phentsize
SHDR_SIZE = 64             # sizeof(Elf64_Shdr)
PRPSINFO_SIZE = 136        # sizeof(struct elf_prpsinfo), 64-bit
PRSTATUS_MIN = 48          # up to pr_sid in struct elf_prstatus_common
MAX_OFFSET = 1 << 62       # no file offset or size beyond this is plausible (and pread() takes < 2^63)
MAX_PHNUM = 1 << 20        # program headers read at most (56 MiB of them)


class NotACore(ValueError):
    def __init__(self, message: str, info: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.info = info  # what could be read of a cut core (expected_size, truncated)


def open_core(path: str) -> int:
    """A read-only descriptor on *path* that never follows a symlink in its last component,
    never blocks on a FIFO, and is a regular file (cores sit in world-writable directories).
    NotACore for a symlink or anything not a regular file; OSError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotACore(f"{path}: a symbolic link (not followed)")
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotACore(f"{path}: not a regular file")
    return fd


def _pread(fd: int, size: int, offset: int) -> bytes:
    """At most *size* bytes at *offset* (fewer at the end of the file); offsets and sizes are
    checked first, so a header's value can never make a read unbounded or overflow."""
    if not (0 <= offset < MAX_OFFSET and 0 <= size < MAX_OFFSET):
        raise NotACore(f"implausible offset {offset:#x} or size {size:#x}")
    out = []
    while size > 0:
        b = os.pread(fd, min(size, 1 << 24), offset)
        if not b:
            break
        out.append(b)
        size -= len(b)
        offset += len(b)
    return b"".join(out)


def read_core_info(path: str, max_notes_bytes: int = 4 << 20, fd: Optional[int] = None) -> dict:
    """``{"pid", "ppid", "uid", "gid", "fname", "psargs", "signal", "size"}`` of an ELF core
    (with ``prstatus_pid``: the pid of the first thread's NT_PRSTATUS).

    Raises :class:`NotACore` for anything else (a truncated or empty file, a header whose
    fields are out of bounds, a symlink or a FIFO included). 64-bit little-endian cores only
    (x86_64, arm64, riscv64, ppc64le). Every read is bounded by the file's size and
    *max_notes_bytes*.

    *fd*: a descriptor the caller already opened with :func:`open_core` (*path* then only names
    it in messages); it is left open.
    """
    if fd is not None:
        return _read_core(fd, path, max_notes_bytes)
    fd = open_core(path)
    try:
        return _read_core(fd, path, max_notes_bytes)
    finally:
        os.close(fd)


def _read_core(fd: int, path: str, max_notes_bytes: int) -> dict:
    size = os.fstat(fd).st_size
    head = _pread(fd, EHDR_SIZE, 0)
    if len(head) < EHDR_SIZE or head[:4] != b"\x7fELF":
        raise NotACore(f"{path}: not an ELF file")
    if head[4] != 2 or head[5] != 1:
        raise NotACore(f"{path}: not a 64-bit little-endian ELF")
    e_type, = struct.unpack_from("<H", head, 16)
    if e_type != ET_CORE:
        raise NotACore(f"{path}: ELF type {e_type}, not ET_CORE")
    e_phoff, e_shoff = struct.unpack_from("<QQ", head, 32)
    e_phentsize, e_phnum, e_shentsize = struct.unpack_from("<HHH", head, 54)
    if e_phentsize < PHDR_SIZE:
        raise NotACore(f"{path}: e_phentsize {e_phentsize}, less than an Elf64_Phdr ({PHDR_SIZE})")
    if e_phnum == PN_XNUM:  # more than 65534 segments: the count is in section 0
        if e_shentsize < SHDR_SIZE or not 0 < e_shoff < MAX_OFFSET:
            raise NotACore(f"{path}: e_phnum is PN_XNUM but there is no section 0 to hold the count")
        sh0 = _pread(fd, SHDR_SIZE, e_shoff)
        if len(sh0) < SHDR_SIZE:
            raise NotACore(f"{path}: cut inside section 0 ({size} bytes)",
                           {"size": size, "expected_size": e_shoff + SHDR_SIZE, "truncated": True,
                            "notes_complete": False})
        e_phnum, = struct.unpack_from("<I", sh0, 44)
    if e_phnum > MAX_PHNUM:
        raise NotACore(f"{path}: {e_phnum} program headers (at most {MAX_PHNUM} are read)")
    if not 0 < e_phoff < MAX_OFFSET:
        raise NotACore(f"{path}: implausible program header offset {e_phoff:#x}")
    table = e_phentsize * e_phnum
    info = {"size": size, "expected_size": e_phoff + table, "notes_complete": False}  # type: dict
    phdrs = _pread(fd, table, e_phoff)
    if len(phdrs) < table:
        info["truncated"] = True
        raise NotACore(f"{path}: cut inside its program headers ({size} bytes)", info)
    for i in range(e_phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * e_phentsize)
        if p_offset >= MAX_OFFSET or p_filesz >= MAX_OFFSET or p_offset + p_filesz >= MAX_OFFSET:
            raise NotACore(f"{path}: program header {i}: implausible offset {p_offset:#x} "
                           f"or size {p_filesz:#x}")
        # fs/binfmt_elf.c elf_core_dump(): notes first, then every PT_LOAD at p_offset, p_filesz
        # bytes each (holes for skipped pages are sparse but still inside the file's size)
        info["expected_size"] = max(info["expected_size"], p_offset + p_filesz)
        if p_type != PT_NOTE or "pid" in info:
            continue
        want = min(p_filesz, max_notes_bytes)
        notes = _pread(fd, want, p_offset)
        info["notes_complete"] = len(notes) == want
        _parse_notes(notes, info)
    info["truncated"] = size < info["expected_size"]
    if "pid" not in info:
        raise NotACore(f"{path}: no NT_PRPSINFO note" + (f" (cut at {size} of {info['expected_size']} bytes)"
                                                        if info["truncated"] else ""), info)
    return info


def inspect(path: str, fd: Optional[int] = None) -> dict:
    """What a core file holds, honestly: ``{"status", "size", "expected_size", "pid", "why"}``.

    ``present``: a complete ET_CORE naming its pid; ``truncated``: an ELF core shorter than its
    program headers say (RLIMIT_CORE or RLIMIT_FSIZE stopped ``dump_emit()``; the pid is still
    known when the notes made it); ``empty``: 0 bytes; ``not-core``: anything else (a symlink,
    a FIFO, a header out of bounds); ``unreadable``: the open or a read failed.

    *fd*: a descriptor the caller already opened safely (openat with O_NOFOLLOW from a directory
    descriptor); it is read through a duplicate and left open. It must be a regular file.
    """
    try:
        if fd is None:
            fd = open_core(path)
        else:
            fd = os.dup(fd)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise NotACore(f"{path}: not a regular file")
    except NotACore as e:
        return {"status": "not-core", "size": None, "expected_size": None, "pid": None, "why": str(e)}
    except OSError as e:
        return {"status": "unreadable", "size": None, "expected_size": None, "pid": None,
                "why": f"{path}: {e.strerror}"}
    size = None
    try:
        size = os.fstat(fd).st_size
        head = _pread(fd, EHDR_SIZE, 0)
        if size == 0:
            return {"status": "empty", "size": 0, "expected_size": None, "pid": None, "why": f"{path} is empty"}
        if len(head) < EHDR_SIZE and b"\x7fELF".startswith(head[:4]):
            return {"status": "truncated", "size": size, "expected_size": None, "pid": None,
                    "why": f"{path}: cut inside the ELF header ({size} bytes)"}
        info = _read_core(fd, path, 4 << 20)
    except OSError as e:
        return {"status": "unreadable", "size": size, "expected_size": None, "pid": None,
                "why": f"{path}: {e.strerror}"}
    except NotACore as e:
        got = e.info
        if got and got.get("truncated"):
            return {"status": "truncated", "size": size, "expected_size": got.get("expected_size"),
                    "pid": got.get("pid"), "why": str(e)}
        return {"status": "not-core", "size": size, "expected_size": None, "pid": None, "why": str(e)}
    finally:
        os.close(fd)
    if info["truncated"]:
        return {"status": "truncated", "size": size, "expected_size": info["expected_size"], "pid": info["pid"],
                "why": f"{path}: {size} bytes, its program headers describe {info['expected_size']}"}
    return {"status": "present", "size": size, "expected_size": info["expected_size"], "pid": info["pid"],
            "why": None, "fname": info.get("fname"), "signal": info.get("signal")}


def _parse_notes(buf: bytes, info: dict) -> None:
    """Walk the notes of one PT_NOTE segment (:func:`coredoctor.elf.notes`: complete notes only,
    a note whose sizes run past the segment ends the walk). Only notes named ``CORE`` count
    (fill_note() in fs/binfmt_elf.c).
    """
    for name, ntype, desc in notes(buf):
        descsz = len(desc)
        if name.rstrip(b"\0") != b"CORE":
            continue
        if ntype == NT_PRPSINFO and descsz >= PRPSINFO_SIZE and "pid" not in info:
            # struct elf_prpsinfo (64-bit): state,sname,zomb,nice (4x char), pad, pr_flag (8),
            # pr_uid, pr_gid (4 each), pr_pid, pr_ppid, pr_pgrp, pr_sid, pr_fname[16], pr_psargs[80]
            uid, gid, pid, ppid = struct.unpack_from("<IIii", desc, 16)
            info.update(uid=uid, gid=gid, pid=pid, ppid=ppid,
                        fname=desc[40:56].split(b"\0", 1)[0].decode("utf-8", "replace"),
                        psargs=desc[56:136].split(b"\0", 1)[0].decode("utf-8", "replace"))
        elif ntype == NT_PRSTATUS and descsz >= PRSTATUS_MIN and "signal" not in info:
            # struct elf_prstatus_common: elf_siginfo (12), short pr_cursig, pad, pr_sigpend,
            # pr_sighold (8 each), pr_pid, pr_ppid, pr_pgrp, pr_sid
            info["signal"], = struct.unpack_from("<h", desc, 12)
            info["prstatus_pid"], = struct.unpack_from("<i", desc, 32)
