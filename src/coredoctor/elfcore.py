"""
ELF core files
--------------
Just enough of the ELF format (``include/uapi/linux/elf.h``, ``fs/binfmt_elf.c``
``fill_psinfo()``) to tell that a file is a real core of a given process: an ``ET_CORE`` ELF
whose ``NT_PRPSINFO`` note names the pid. Standard library only.
"""

import struct

__all__ = ["read_core_info", "NotACore"]

ET_CORE = 4
PT_NOTE = 4
NT_PRSTATUS = 1
NT_PRPSINFO = 3


class NotACore(ValueError):
    pass


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
        f.seek(e_phoff)
        phdrs = f.read(e_phentsize * e_phnum)
        info = {}
        for i in range(e_phnum):
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * e_phentsize)
            if p_type != PT_NOTE:
                continue
            f.seek(p_offset)
            notes = f.read(min(p_filesz, max_notes_bytes))
            _parse_notes(notes, info)
            break
        f.seek(0, 2)
        info["size"] = f.tell()
    if "pid" not in info:
        raise NotACore(f"{path}: no NT_PRPSINFO note (truncated core?)")
    return info


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
