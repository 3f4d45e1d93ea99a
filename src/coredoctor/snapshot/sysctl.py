"""
sysctls
-------
The core-dump sysctls (``/proc/sys/kernel/core_*``, ``fs.suid_dumpable``) and kernel features
that are detected, never inferred from the version: ``kernel.core_modes`` (6.16+: socket
patterns), the pidfd coredump query.
"""

import os

from typing import Any, Dict, Iterable, Optional, Union

from coredoctor.snapshot.proc import pidfd

__all__ = ["read_sysctls", "read_kernel", "SYSCTLS"]

SYSCTLS = {
    "kernel.core_pattern": "/proc/sys/kernel/core_pattern",
    "fs.suid_dumpable": "/proc/sys/fs/suid_dumpable",
    "kernel.core_pipe_limit": "/proc/sys/kernel/core_pipe_limit",
    "kernel.core_uses_pid": "/proc/sys/kernel/core_uses_pid",
    "kernel.core_modes": "/proc/sys/kernel/core_modes",
    "kernel.core_file_note_size_limit": "/proc/sys/kernel/core_file_note_size_limit",
    "kernel.print-fatal-signals": "/proc/sys/kernel/print-fatal-signals",
    # show_unhandled_signals (kernel/sysctl.c debug_table; arm64/riscv/powerpc/x86): 0 = a user
    # fault leaves no kernel line (arm64's default), and printk's rate limit (kernel/printk/sysctl.c)
    "debug.exception-trace": "/proc/sys/debug/exception-trace",
    "kernel.printk_ratelimit": "/proc/sys/kernel/printk_ratelimit",
    "kernel.printk_ratelimit_burst": "/proc/sys/kernel/printk_ratelimit_burst",
}


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def read_sysctls() -> Dict[str, Union[int, str, None]]:
    out: Dict[str, Union[int, str, None]] = {}
    for name, path in SYSCTLS.items():
        v: Union[int, str, None] = _read(path)
        if v is not None and name not in ("kernel.core_pattern", "kernel.core_modes"):
            try:
                v = int(v)
            except ValueError:
                pass
        out[name] = v
    return out


def read_kernel(disabled: Iterable[str] = ()) -> Dict[str, Any]:
    """Facts about the running kernel, with the features that answered."""
    import signal as pysignal
    numbers = {n: int(getattr(pysignal, n)) for n in sorted(dir(pysignal))
               if n.startswith("SIG") and not n.startswith(("SIG_", "SIGRT")) and isinstance(getattr(pysignal, n), int)}
    modes = _read("/proc/sys/kernel/core_modes")
    u = os.uname()
    return {
        "release": u.release,
        "machine": u.machine,
        "hostname": u.nodename,
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "signals": numbers,
        "features": {
            "coredump": os.path.exists("/proc/sys/kernel/core_pattern"),
            "core_modes": modes.split() if modes else None,
            "socket_pattern": bool(modes and "socket" in modes.split()),
            "pidfd_coredump": False if "pidfd" in disabled else pidfd.probe(),
            "ptrace_probe": "ptrace" not in disabled,
        },
        "disabled": sorted(disabled),
    }
