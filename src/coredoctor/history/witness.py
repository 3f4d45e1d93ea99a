"""
What the kernel log can witness
-------------------------------
A user fault leaves a kernel line only when ``debug.exception-trace`` (show_unhandled_signals) is
on, the signal is unhandled and untraced, and the printing rate limit lets it through. arm64's
default is 0 (Debian's arm64 kernel: a segfault leaves no line at all), x86's 1. Pure: the
sysctls as read by the snapshot layer in, a statement (and the switches that would make the
kernel a witness) out. Each fact cites where the kernel decides it.
"""

import time
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["kernel_log", "SWITCHES"]

#: the switches that make crashes witnessed, each with what it does and its source
SWITCHES = (
    ("sysctl -w debug.exception-trace=1",
     "the kernel logs every unhandled user fault (show_unhandled_signals: arm64_show_signal() "
     "arch/arm64/kernel/traps.c, show_signal_msg() arch/x86/mm/fault.c)"),
    ("auditctl -e 1",
     "with auditing enabled the kernel logs an ANOM_ABEND record for every death by a core-dump "
     "signal, before any core-dump gate (audit_core_dumps() kernel/auditsc.c; no rule needed)"),
)

#: the rate limit each architecture's fault line goes through: its own DEFINE_RATELIMIT_STATE
#: (DEFAULT_RATELIMIT_INTERVAL 5 s, DEFAULT_RATELIMIT_BURST 10, include/linux/ratelimit_types.h)
#: or printk_ratelimit() (kernel.printk_ratelimit / kernel.printk_ratelimit_burst)
_RATELIMIT = {
    "aarch64": "own",     # arm64_show_signal(): DEFINE_RATELIMIT_STATE(rs, ...)
    "ppc64le": "own",     # show_signal_msg() arch/powerpc/kernel/traps.c
    "ppc64": "own",
    "x86_64": "printk",   # show_signal_msg() arch/x86/mm/fault.c: printk_ratelimit()
    "riscv64": "printk",  # do_trap() arch/riscv/kernel/traps.c: printk_ratelimit()
    "s390x": "printk",    # report_user_fault(): printk_ratelimit()
}


def _int(v: Any) -> Optional[int]:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


#: the switch for a kernel log that overwrote its oldest records (printk's ring buffer,
#: CONFIG_LOG_BUF_SHIFT by default; log_buf_len= early param, kernel/printk/printk.c)
LOG_BUF_SWITCH = ("log_buf_len=4M on the kernel command line",
                  "a larger printk ring buffer keeps older lines (log_buf_len= early parameter, "
                  "kernel/printk/printk.c; the default is CONFIG_LOG_BUF_SHIFT); a journal or syslog "
                  "file keeps them past the buffer")


def kernel_log(sysctls: Mapping[str, Any], machine: str = "",
               position: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """``{"exception_trace": 0|1|None, "faults_logged": True|False|None, "ratelimit": {...},
    "note": str|None, "switches": [...]}``: whether a user fault leaves a kernel line on this host,
    at what rate at most, and, when it does not (or cannot be known), the switches that would."""
    et = _int(sysctls.get("debug.exception-trace"))
    kind = _RATELIMIT.get(machine)
    if kind == "printk":
        iv, burst = _int(sysctls.get("kernel.printk_ratelimit")), _int(sysctls.get("kernel.printk_ratelimit_burst"))
        rl: Dict[str, Any] = {"interval_s": iv, "burst": burst, "by": "printk_ratelimit() (kernel.printk_ratelimit)"}
    elif kind == "own":
        rl = {"interval_s": 5, "burst": 10, "by": "a fixed DEFINE_RATELIMIT_STATE in the fault path"}
    else:
        rl = {"interval_s": None, "burst": None, "by": None}
    out: Dict[str, Any] = {"exception_trace": et, "faults_logged": None if et is None else et != 0,
                           "ratelimit": rl, "note": None, "switches": []}
    notes: List[str] = []
    if et == 0:
        notes.append("debug.exception-trace is 0: a segfault leaves no kernel log line here, so the "
                     "kernel log cannot witness a crash")
    elif et is None:
        notes.append("debug.exception-trace cannot be read: whether a fault leaves a kernel log line "
                     "is unknown")
    first = _int((position or {}).get("first_seq"))
    if first:  # sequence numbers start at 0 at boot: the ones before were overwritten
        since = (position or {}).get("first_time")
        out["overwritten"] = {"records": first, "oldest_kept": since}
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, float) else "?"
        notes.append(f"the kernel log's ring buffer was full: its first {first} records of this boot were "
                     f"overwritten, so a crash before {when} left no line there")
    if notes:
        out["note"] = "; ".join(notes)
        out["switches"] = [{"command": c, "why": w} for c, w in SWITCHES] if et != 1 else []
        if first:
            out["switches"].append({"command": LOG_BUF_SWITCH[0], "why": LOG_BUF_SWITCH[1]})
    return out
