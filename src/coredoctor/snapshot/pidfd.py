"""
pidfd
-----
``pidfd_open()`` + ``ioctl(PIDFD_GET_INFO)`` (include/uapi/linux/pidfd.h, fs/pidfs.c).

``PIDFD_INFO_COREDUMP`` (6.16+) returns another process's exact dumpability without ptrace.
6.16 as first released answered nothing for a live process (it tested the caller's mask
instead of the kernel's; fixed by "coredump: fix PIDFD_INFO_COREDUMP ioctl check"), so the
answer is feature-detected per kernel by :func:`probe`, never inferred from the version.
"""

import fcntl
import os
import struct

__all__ = ["probe", "coredump_info", "PIDFD_INFO_COREDUMP"]

PIDFD_INFO_PID = 1 << 0
PIDFD_INFO_CREDS = 1 << 1
PIDFD_INFO_CGROUPID = 1 << 2
PIDFD_INFO_EXIT = 1 << 3
PIDFD_INFO_COREDUMP = 1 << 4

# struct pidfd_info up to coredump_mask/__spare1 (PIDFD_INFO_SIZE_VER1)
_FMT = "=QQ11IiII"  # native byte order and sizes, no padding
_SIZE = struct.calcsize(_FMT)  # 72
_PIDFS_IOCTL_MAGIC = 0xFF


def _iowr(typ, nr, size):
    return (3 << 30) | (size << 16) | (typ << 8) | nr


PIDFD_GET_INFO = _iowr(_PIDFS_IOCTL_MAGIC, 11, _SIZE)


def coredump_info(pid, pidfd=None):
    """Return ``(coredump_mask, creds)`` for *pid* (or an open *pidfd*), or None if the kernel
    does not answer PIDFD_INFO_COREDUMP. Raises ProcessLookupError if the process is gone."""
    if pidfd is None and not hasattr(os, "pidfd_open"):
        return None
    fd = os.pidfd_open(pid) if pidfd is None else pidfd
    try:
        buf = bytearray(_SIZE)
        struct.pack_into("=Q", buf, 0, PIDFD_INFO_PID | PIDFD_INFO_CREDS | PIDFD_INFO_COREDUMP)
        try:
            fcntl.ioctl(fd, PIDFD_GET_INFO, buf, True)
        except OSError as e:
            if e.errno == 3:  # ESRCH: exited (and reaped) in between
                raise ProcessLookupError(pid) from e
            return None  # ENOTTY/EINVAL: no PIDFD_GET_INFO on this kernel
        f = struct.unpack_from(_FMT, buf)
        mask, coredump_mask = f[0], f[14]
        if not mask & PIDFD_INFO_COREDUMP or not coredump_mask:
            return None
        creds = {"uid": [f[5], f[7], f[9], f[11]], "gid": [f[6], f[8], f[10], f[12]]}
        return coredump_mask, creds
    finally:
        if pidfd is None:
            os.close(fd)


def probe():
    """Feature detection: does this kernel answer PIDFD_INFO_COREDUMP for a live process?"""
    try:
        return coredump_info(os.getpid()) is not None
    except OSError:
        return False
