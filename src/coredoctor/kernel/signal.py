"""
Signals
-------
Which signals dump, and whether one reaches its default action (``kernel/signal.c``).

Signal numbers are architecture-specific (SIGBUS is 10 on MIPS/SPARC/Alpha), so they come from
the snapshot (read on the machine itself), never from a table here.
"""

from typing import Mapping, Optional, Sequence, Tuple

__all__ = ["SIG_KERNEL_COREDUMP", "FAULT_SIGNALS", "sigset_has", "normalize_signal", "disposition", "decide"]

#: include/linux/signal.h SIG_KERNEL_COREDUMP_MASK -- the same set from 3.10 to 6.19
#: (plus SIGEMT on the architectures that define it).
SIG_KERNEL_COREDUMP = ("SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGFPE", "SIGSEGV", "SIGBUS",
                       "SIGSYS", "SIGXCPU", "SIGXFSZ", "SIGEMT")

#: Signals the CPU raises through force_sig_fault() (a real fault, not kill()).
FAULT_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGTRAP")


def normalize_signal(name: object, numbers: Mapping[str, int]) -> str:
    """'segv', '11', 'SIGSEGV' -> 'SIGSEGV' using the snapshot's name->number table."""
    s = str(name).strip().upper()
    if s.isdigit():
        if not s.isascii() or len(s) > 3:  # Unicode digits, or thousands of them (int() limit)
            raise ValueError(f"unknown signal number {s[:20]}")
        for k, v in numbers.items():
            if v == int(s):
                return k
        raise ValueError(f"unknown signal number {s}")
    if not s.startswith("SIG"):
        s = "SIG" + s
    if s not in numbers:
        raise ValueError(f"unknown signal {name}")
    # aliases (SIGIOT, SIGCLD, SIGPOLL) -> the canonical name, alphabetically first for the number
    return min(k for k, v in numbers.items() if v == numbers[s])


def sigset_has(hexmask: Optional[str], signo: int) -> bool:
    """True if signal *signo* is in a /proc/PID/status sigset (bit signo-1, see proc_pid_status(5))."""
    if not hexmask:
        return False
    return bool((int(hexmask, 16) >> (signo - 1)) & 1)


def disposition(sig: str, how: str, numbers: Mapping[str, int], sig_masks: Mapping[str, Optional[str]],
                thread_blocked: Optional[Sequence[Optional[str]]] = None, tracer_pid: int = 0,
                ns_init: bool = False, global_init: bool = False) -> Tuple[str, str]:
    """``(status, evidence)`` of :func:`decide`."""
    status, _case, evidence = decide(sig, how, numbers, sig_masks, thread_blocked, tracer_pid, ns_init, global_init)
    return status, evidence


def decide(sig: str, how: str, numbers: Mapping[str, int], sig_masks: Mapping[str, Optional[str]],
           thread_blocked: Optional[Sequence[Optional[str]]] = None, tracer_pid: int = 0, ns_init: bool = False,
           global_init: bool = False) -> Tuple[str, Optional[str], str]:
    """Decide whether signal *sig* delivered *how* ('fault' or 'kill') reaches the default action.

    Returns ``(status, case, evidence)`` with status ``pass`` / ``fail`` / ``unknown`` / ``warn``;
    *case* is ``"handler"`` when an installed handler decides (a program known to re-raise from
    it then dumps), else None.

    - kill()/tgkill(): ignored signals are discarded when generated (sig_ignored()); a signal
      blocked by every thread stays pending; a handler decides for itself.
    - a fault (force_sig_info_to_task(..., HANDLER_CURRENT)): blocked or ignored is reset to
      SIG_DFL and unblocked, so it still dumps; only an installed, unblocked handler stops it.
    - ptrace: the tracer sees the signal first and may swallow it (ptrace_signal()).
    - pid-namespace init (SIGNAL_UNKILLABLE): a kill-sent SIG_DFL signal is dropped; a fault
      clears the flag and dumps.
    """
    if sig not in SIG_KERNEL_COREDUMP:
        return "fail", None, (f"{sig}'s default action terminates without a core: it is not in "
                        "SIG_KERNEL_COREDUMP_MASK")
    signo = numbers[sig]
    blk = sigset_has(sig_masks.get("blocked"), signo)
    ign = sigset_has(sig_masks.get("ignored"), signo)
    cgt = sigset_has(sig_masks.get("caught"), signo)
    if thread_blocked:
        all_blocked = all(sigset_has(m, signo) for m in thread_blocked)
        some_blocked = any(sigset_has(m, signo) for m in thread_blocked)
    else:
        all_blocked = some_blocked = blk
    if tracer_pid:
        return "unknown", None, (f"traced by pid {tracer_pid} (TracerPid): the tracer sees {sig} first and "
                           "may swallow it (ptrace_signal())")
    if how == "fault":
        if cgt and not some_blocked:
            return "unknown", "handler", (f"{sig} has a handler installed (SigCgt): the handler decides "
                               "whether the process dies with the default action (handler)")
        if cgt and all_blocked:
            return "pass", None, (f"{sig} has a handler but is blocked (SigBlk): a fault resets it to "
                            "SIG_DFL and unblocks it (force_sig_info_to_task()), so it dumps")
        if cgt:
            return "unknown", None, (f"{sig} has a handler and is blocked in only some threads: it "
                               "depends on which thread faults")
        extra = ""
        if ign:
            extra = " (ignored, but a fault resets it to SIG_DFL)"
        elif blk:
            extra = " (blocked, but a fault unblocks it and resets it to SIG_DFL)"
        ev = f"a fault-raised {sig} takes the default action{extra}"
        if global_init:
            return "warn", None, ev + "; this is global init: the kernel panics after the dump"
        if ns_init:
            ev += "; pid-namespace init: a fault clears SIGNAL_UNKILLABLE"
        return "pass", None, ev
    # kill()-sent
    if (ns_init or global_init) and cgt and not all_blocked:
        return "unknown", "handler", (f"{sig} has a handler installed (SigCgt) in this pid-namespace init: "
                           "sig_task_ignored() only drops SIG_DFL signals, so the handler runs and decides "
                           "(handler)")
    if ns_init or global_init:
        return "fail", None, (f"this process is the init of its pid namespace (SIGNAL_UNKILLABLE): a "
                        f"kill-sent {sig} with the default action is dropped; only a real fault dumps")
    if ign:
        return "fail", None, f"{sig} is ignored (SigIgn): a kill-sent {sig} is discarded when it is generated"
    if all_blocked:
        return "fail", None, (f"{sig} is blocked (SigBlk) by every thread: a kill-sent {sig} stays pending "
                        "until it is unblocked")
    if cgt:
        return "unknown", "handler", (f"{sig} has a handler installed (SigCgt): the handler decides whether the "
                           "process dies with the default action (handler)")
    return "pass", None, f"a kill-sent {sig} takes the default action (not ignored, blocked or handled)"
