"""
ELF core files
--------------
Just enough of the ELF format (``include/uapi/linux/elf.h``, ``fs/binfmt_elf.c``
``fill_psinfo()``) to tell that a file is a real core of a given process: an ``ET_CORE`` ELF
whose ``NT_PRPSINFO`` note names the pid. Standard library only.
"""

import struct

__all__ = ["read_core_info", "inspect", "NotACore"]

ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
NT_PRSTATUS = 1
NT_PRPSINFO = 3


class NotACore(ValueError):
    def __init__(self, message, info=None):
        super().__init__(message)
        self.info = info  # what could be read of a cut core (expected_size, truncated)


def read_core_info(path, max_notes_bytes=4 << 20):
    """``{"pid", "ppid", "uid", "gid", "fname", "psargs", "signal", "size"}`` of an ELF core.

    Raises :class:`NotACore` for anything else (a truncated or empty file included). 64-bit
    little-endian cores only (x86_64, arm64, riscv64, ppc64le).
    """
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF":
            raise NotACore(f"{path}: not an ELF file")
        if head[4] != 2 or head[5] != 1:
            raise NotACore(f"{path}: not a 64-bit little-endian ELF")
        e_type, = struct.unpack_from("<H", head, 16)
        if e_type != ET_CORE:
            raise NotACore(f"{path}: ELF type {e_type}, not ET_CORE")
        e_phoff, = struct.unpack_from("<Q", head, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", head, 54)
        f.seek(0, 2)
        size = f.tell()
        f.seek(e_phoff)
        phdrs = f.read(e_phentsize * e_phnum)
        info = {"size": size, "expected_size": e_phoff + e_phentsize * e_phnum, "notes_complete": False}
        if len(phdrs) < e_phentsize * e_phnum:
            info["truncated"] = True
            raise NotACore(f"{path}: cut inside its program headers ({size} bytes)", info)
        for i in range(e_phnum):
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * e_phentsize)
            # fs/binfmt_elf.c elf_core_dump(): notes first, then every PT_LOAD at p_offset, p_filesz
            # bytes each (holes for skipped pages are sparse but still inside the file's size)
            info["expected_size"] = max(info["expected_size"], p_offset + p_filesz)
            if p_type != PT_NOTE or "pid" in info:
                continue
            f.seek(p_offset)
            notes = f.read(min(p_filesz, max_notes_bytes))
            info["notes_complete"] = len(notes) == min(p_filesz, max_notes_bytes)
            _parse_notes(notes, info)
        info["truncated"] = size < info["expected_size"]
    if "pid" not in info:
        raise NotACore(f"{path}: no NT_PRPSINFO note" + (f" (cut at {size} of {info['expected_size']} bytes)"
                                                        if info["truncated"] else ""), info)
    return info


def inspect(path):
    """What a core file holds, honestly: ``{"status", "size", "expected_size", "pid", "why"}``.

    ``present``: a complete ET_CORE naming its pid; ``truncated``: an ELF core shorter than its
    program headers say (RLIMIT_CORE or RLIMIT_FSIZE stopped ``dump_emit()``; the pid is still
    known when the notes made it); ``empty``: 0 bytes; ``not-core``: anything else.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            size = f.seek(0, 2)
    except OSError as e:
        return {"status": "unreadable", "size": None, "expected_size": None, "pid": None,
                "why": f"{path}: {e.strerror}"}
    if size == 0:
        return {"status": "empty", "size": 0, "expected_size": None, "pid": None, "why": f"{path} is empty"}
    if len(head) < 64 and b"\x7fELF".startswith(head[:4]):
        return {"status": "truncated", "size": size, "expected_size": None, "pid": None,
                "why": f"{path}: cut inside the ELF header ({size} bytes)"}
    try:
        info = read_core_info(path)
    except NotACore as e:
        info = e.info
        if info and info.get("truncated"):
            return {"status": "truncated", "size": size, "expected_size": info.get("expected_size"),
                    "pid": info.get("pid"), "why": str(e)}
        return {"status": "not-core", "size": size, "expected_size": None, "pid": None, "why": str(e)}
    if info["truncated"]:
        return {"status": "truncated", "size": size, "expected_size": info["expected_size"], "pid": info["pid"],
                "why": f"{path}: {size} bytes, its program headers describe {info['expected_size']}"}
    return {"status": "present", "size": size, "expected_size": info["expected_size"], "pid": info["pid"],
            "why": None, "fname": info.get("fname"), "signal": info.get("signal")}


def _parse_notes(buf, info):
    off = 0
    while off + 12 <= len(buf):
        namesz, descsz, ntype = struct.unpack_from("<III", buf, off)
        off += 12
        off += (namesz + 3) & ~3
        desc = buf[off:off + descsz]
        off += (descsz + 3) & ~3
        if ntype == NT_PRPSINFO and len(desc) >= 136:
            # struct elf_prpsinfo (64-bit): state,sname,zomb,nice (4x char), pad, pr_flag (8),
            # pr_uid, pr_gid (4 each), pr_pid, pr_ppid, pr_pgrp, pr_sid, pr_fname[16], pr_psargs[80]
            uid, gid, pid, ppid = struct.unpack_from("<IIii", desc, 16)
            info.update(uid=uid, gid=gid, pid=pid, ppid=ppid,
                        fname=desc[40:56].split(b"\0", 1)[0].decode("utf-8", "replace"),
                        psargs=desc[56:136].split(b"\0", 1)[0].decode("utf-8", "replace"))
        elif ntype == NT_PRSTATUS and len(desc) >= 14 and "signal" not in info:
            info["signal"], = struct.unpack_from("<h", desc, 12)  # pr_cursig
