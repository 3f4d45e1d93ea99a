"""
pidfd
-----
``pidfd_open()`` + ``ioctl(PIDFD_GET_INFO)`` (include/uapi/linux/pidfd.h, fs/pidfs.c).

``PIDFD_INFO_COREDUMP`` (6.16+) returns another process's exact dumpability without ptrace.
6.16 as first released answered nothing for a live process (it tested the caller's mask
instead of the kernel's; fixed by "coredump: fix PIDFD_INFO_COREDUMP ioctl check"), so the
answer is feature-detected per kernel by :func:`probe`, never inferred from the version.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Dict, List, Optional, Tuple

__all__ = ["probe", "coredump_info", "exit_status", "open_pidfd", "PIDFD_INFO_COREDUMP", "PIDFD_INFO_EXIT",
           "PIDFD_GET_INFO"]

PIDFD_INFO_PID = 1 << 0
PIDFD_INFO_CREDS = 1 << 1
PIDFD_INFO_CGROUPID = 1 << 2
PIDFD_INFO_EXIT = 1 << 3
PIDFD_INFO_COREDUMP = 1 << 4

# struct pidfd_info up to coredump_mask/__spare1 (PIDFD_INFO_SIZE_VER1)
_FMT = "=QQ11IiII"  # native byte order and sizes, no padding
_SIZE = struct.calcsize(_FMT)  # 72
_PIDFS_IOCTL_MAGIC = 0xFF


def _iowr(typ: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (typ << 8) | nr


PIDFD_GET_INFO = _iowr(_PIDFS_IOCTL_MAGIC, 11, _SIZE)


def _get_info(fd: int, mask: int) -> Optional[Tuple[int, ...]]:
    """The fields of ``struct pidfd_info`` after ``ioctl(PIDFD_GET_INFO)`` asking *mask*, or
    None where the kernel has no PIDFD_GET_INFO (ENOTTY/EINVAL). ESRCH (exited and reaped,
    when PIDFD_INFO_EXIT was not asked) raises ProcessLookupError."""
    buf = bytearray(_SIZE)
    struct.pack_into("=Q", buf, 0, mask)
    try:
        fcntl.ioctl(fd, PIDFD_GET_INFO, buf, True)
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise ProcessLookupError(e.errno, os.strerror(e.errno)) from e
        return None
    return struct.unpack_from(_FMT, buf)


def open_pidfd(pid: int) -> Optional[int]:
    """``pidfd_open(pid)``, or None where there is none (no syscall, or not a group leader).
    Raises ProcessLookupError when there is no such process."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError:
        return None


def coredump_info(pid: int, pidfd: Optional[int] = None) -> Optional[Tuple[int, Dict[str, List[int]]]]:
    """Return ``(coredump_mask, creds)`` for *pid* (or an open *pidfd*), or None if the kernel
    does not answer PIDFD_INFO_COREDUMP. Raises ProcessLookupError if the process is gone."""
    if pidfd is None and not hasattr(os, "pidfd_open"):
        return None
    fd = os.pidfd_open(pid) if pidfd is None else pidfd
    try:
        f = _get_info(fd, PIDFD_INFO_PID | PIDFD_INFO_CREDS | PIDFD_INFO_COREDUMP)
        if f is None:
            return None
        mask, coredump_mask = f[0], f[14]
        if not mask & PIDFD_INFO_COREDUMP or not coredump_mask:
            return None
        creds = {"uid": [f[5], f[7], f[9], f[11]], "gid": [f[6], f[8], f[10], f[12]]}
        return coredump_mask, creds
    finally:
        if pidfd is None:
            os.close(fd)


def exit_status(pfd: Optional[int]) -> Optional[int]:
    """PIDFD_INFO_EXIT (6.15+): the wait status of an exited process, or None (still running,
    or the kernel has no PIDFD_INFO_EXIT)."""
    if pfd is None:
        return None
    try:
        f = _get_info(pfd, PIDFD_INFO_EXIT)
    except OSError:
        return None
    if f is None or not f[0] & PIDFD_INFO_EXIT:
        return None
    return f[13]


def probe() -> bool:
    """Feature detection: does this kernel answer PIDFD_INFO_COREDUMP for a live process?"""
    try:
        return coredump_info(os.getpid()) is not None
    except OSError:
        return False
