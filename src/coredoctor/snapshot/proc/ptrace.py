"""
ptrace access probe
-------------------
A fallback for kernels without ``PIDFD_INFO_COREDUMP`` (before 6.16), for processes whose
``/proc`` ownership cannot tell (euid and egid both root).

``__ptrace_may_access()`` (kernel/ptrace.c) refuses a caller whose ids match the target's when
the target is not dumpable (``get_dumpable(mm) != SUID_DUMP_USER``) and the caller lacks
``CAP_SYS_PTRACE``. A forked child that keeps every capability but drops ``CAP_SYS_PTRACE``
from its effective set asks ``kcmp(pid, pid, KCMP_VM)`` (``PTRACE_MODE_READ_REALCREDS``, so
Yama does not apply and the commoncap subset test uses the permitted set): EPERM means
dumpable != 1. A control target (the probe's own parent, dumpable=1) guards against an LSM
that refuses everything.
"""

from __future__ import annotations

import errno
import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Dict, Iterable, Optional

__all__ = ["probe_root_dumpable"]

_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "riscv64": 272, "ppc64le": 354, "s390x": 343,
             "i686": 349, "i386": 349, "armv7l": 378}
KCMP_VM = 1
CAP_SYS_PTRACE = 19
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _child(pids: Iterable[int], wfd: int) -> None:
    import ctypes  # only in the forked probe: ctypes is slow to import

    class _Hdr(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class _Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    nr = _SYS_KCMP[os.uname().machine]
    hdr = _Hdr(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    if libc.capget(ctypes.byref(hdr), data) != 0:
        os._exit(3)
    data[CAP_SYS_PTRACE // 32].effective &= ~(1 << (CAP_SYS_PTRACE % 32))
    if libc.capset(ctypes.byref(hdr), data) != 0:
        os._exit(4)
    res = {}
    for pid in [os.getppid()] + list(pids):
        r = libc.syscall(nr, pid, pid, KCMP_VM, 0, 0)
        e = ctypes.get_errno()
        res[pid] = "ok" if r >= 0 else ("eperm" if e in (errno.EPERM, errno.EACCES) else
                                        "gone" if e == errno.ESRCH else f"errno{e}")
    os.write(wfd, json.dumps(res).encode())
    os._exit(0)


def probe_root_dumpable(pids: Iterable[int]) -> Dict[int, Optional[bool]]:
    """Return ``{pid: True|False|None}``: True = dumpable 1, False = dumpable != 1, None = the
    probe cannot tell. Only meaningful for targets whose real/effective/saved uid and gid are
    all 0 (the probe's own ids). Empty dict if the probe is unavailable here."""
    pids = list(pids)
    if not pids or os.geteuid() != 0 or os.uname().machine not in _SYS_KCMP:
        return {}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _child(pids, w)
        finally:
            os._exit(5)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    try:
        res = {int(k): v for k, v in json.loads(b"".join(chunks) or b"{}").items()}
    except ValueError:
        return {}
    if res.get(os.getpid()) != "ok":
        return {}  # the control failed: something other than dumpability refuses (LSM)
    return {p: (True if res.get(p) == "ok" else False if res.get(p) == "eperm" else None) for p in pids}
