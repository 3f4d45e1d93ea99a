"""
arm64 exception syndromes
-------------------------
Decode the ESR_ELx value that arm64 prints with a user fault (``ESR 0x0000000092000004`` or
``esr 0x92000004``) into what it says: the exception class (data or instruction abort from user
space, alignment, BRK, ...), for aborts the fault status (translation, access flag, permission
fault, external abort) and its translation table level, and whether a data abort was a write.
Pure, tables only; each row cites arch/arm64/include/asm/esr.h (ESR_ELx_EC_*, ESR_ELx_FSC_*) and
the names arch/arm64/kernel/traps.c (esr_class_str[]) and arch/arm64/mm/fault.c (fault_info[])
print.
"""

from typing import Dict, Optional, Tuple

__all__ = ["EC", "FSC", "decode", "MAX_DIGITS"]

#: an ESR_ELx is 64 bits (6.1+: ``ESR 0x%016lx``; 4.x-5.x ``0x%08x``/``esr 0x%03x`` of 32 bits)
MAX_DIGITS = 16

#: ESR_ELx_EC(esr) = (esr >> 26) & 0x3f -> (esr_class_str[] name, what it is, the signal the kernel
#: sends a user task for it or None when it depends). arch/arm64/include/asm/esr.h ESR_ELx_EC_*,
#: names from esr_class_str[] arch/arm64/kernel/traps.c
EC: Dict[int, Tuple[str, str, Optional[str]]] = {
    0x00: ("Unknown/Uncategorized", "undefined instruction", "SIGILL"),   # ESR_ELx_EC_UNKNOWN
    0x07: ("SVE/FP/ASIMD", "FP/SIMD access trap", None),                  # ESR_ELx_EC_FP_ASIMD
    0x0D: ("BTI", "branch target identification", "SIGILL"),             # ESR_ELx_EC_BTI (5.10+)
    0x0E: ("PSTATE.IL", "illegal execution state", "SIGILL"),            # ESR_ELx_EC_ILL
    0x15: ("SVC (AArch64)", "system call", None),                        # ESR_ELx_EC_SVC64
    0x18: ("MSR/MRS (AArch64)", "trapped system register access", "SIGILL"),  # ESR_ELx_EC_SYS64
    0x19: ("SVE", "SVE access trap", None),                              # ESR_ELx_EC_SVE
    0x1C: ("PAC Fail", "pointer authentication failure", "SIGILL"),      # ESR_ELx_EC_FPAC (5.11+)
    0x20: ("IABT (lower EL)", "instruction abort from user space", "SIGSEGV"),  # ESR_ELx_EC_IABT_LOW
    0x21: ("IABT (current EL)", "instruction abort in the kernel", None),       # ESR_ELx_EC_IABT_CUR
    0x22: ("PC Alignment", "misaligned program counter", "SIGBUS"),      # ESR_ELx_EC_PC_ALIGN
    0x24: ("DABT (lower EL)", "data abort from user space", "SIGSEGV"),  # ESR_ELx_EC_DABT_LOW
    0x25: ("DABT (current EL)", "data abort in the kernel", None),       # ESR_ELx_EC_DABT_CUR
    0x26: ("SP Alignment", "misaligned stack pointer", "SIGBUS"),        # ESR_ELx_EC_SP_ALIGN
    0x2C: ("FP (AArch64)", "floating-point exception", "SIGFPE"),        # ESR_ELx_EC_FP_EXC64
    0x2F: ("SError", "SError interrupt", "SIGBUS"),                      # ESR_ELx_EC_SERROR
    0x30: ("Breakpoint (lower EL)", "hardware breakpoint", "SIGTRAP"),   # ESR_ELx_EC_BREAKPT_LOW
    0x32: ("Software Step (lower EL)", "single step", "SIGTRAP"),        # ESR_ELx_EC_SOFTSTP_LOW
    0x34: ("Watchpoint (lower EL)", "watchpoint", "SIGTRAP"),            # ESR_ELx_EC_WATCHPT_LOW
    0x3C: ("BRK (AArch64)", "brk instruction", "SIGTRAP"),               # ESR_ELx_EC_BRK64
}

#: the abort classes whose ISS carries a fault status code (ESR_ELx_EC_IABT_*/DABT_*)
_ABORTS = frozenset((0x20, 0x21, 0x24, 0x25))

#: fault status code types: ESR_ELx_FSC_TYPE (0x3c) of the DFSC/IFSC, level in the low 2 bits
#: (ESR_ELx_FSC_LEVEL); arch/arm64/include/asm/esr.h ESR_ELx_FSC_{ADDRSZ,FAULT,ACCESS,PERM};
#: names as fault_info[] arch/arm64/mm/fault.c prints them ("level 0 translation fault")
FSC: Dict[int, Tuple[str, Optional[str]]] = {
    0x00: ("address size", "SIGSEGV"),      # ESR_ELx_FSC_ADDRSZ (levels 0-3)
    0x04: ("translation", "SIGSEGV"),       # ESR_ELx_FSC_FAULT
    0x08: ("access flag", "SIGSEGV"),       # ESR_ELx_FSC_ACCESS
    0x0C: ("permission", "SIGSEGV"),        # ESR_ELx_FSC_PERM
}
#: whole fault status codes that are no levelled type (arch/arm64/include/asm/esr.h, fault_info[])
FSC_OTHER: Dict[int, Tuple[str, Optional[str]]] = {
    0x10: ("synchronous external abort", "SIGBUS"),    # ESR_ELx_FSC_EXTABT
    0x11: ("asynchronous SError", "SIGBUS"),            # ESR_ELx_FSC_SERROR
    0x21: ("alignment", "SIGBUS"),                      # fault_info[0x21] "alignment fault"
    0x30: ("TLB conflict abort", "SIGSEGV"),            # fault_info[0x30]
    0x2B: ("translation", "SIGSEGV"),                   # level -1 translation fault (LPA2, 6.8+)
}
_WNR = 1 << 6  # ESR_ELx_WNR: the data abort was a write (DABT only)


def decode(esr: int) -> Dict[str, object]:
    """What *esr* says: ``ec`` (the class number), ``class`` (esr_class_str name or None),
    ``what``, for aborts ``fault`` (translation, access flag, permission, ...), ``level`` (0-3,
    -1, or None) and for data aborts ``write``, and ``signal`` (the signal the kernel sends for
    it, None when that is not fixed by the syndrome)."""
    ec = (esr >> 26) & 0x3F
    name, what, sig = EC.get(ec, (None, None, None))
    out: Dict[str, object] = {"esr": f"0x{esr:016x}", "ec": ec, "class": name, "what": what}
    if ec in _ABORTS:
        fsc = esr & 0x3F
        if fsc in FSC_OTHER:
            kind, s = FSC_OTHER[fsc]
            level: Optional[int] = -1 if fsc == 0x2B else None
        elif (fsc & 0x3C) in FSC:
            kind, s = FSC[fsc & 0x3C]
            level = fsc & 0x3
        else:
            kind, s, level = None, None, None
        out.update(fault=kind, level=level)
        if s is not None:
            sig = s if sig is not None else None
        if ec in (0x24, 0x25):
            out["write"] = bool(esr & _WNR)
    out["signal"] = sig
    return out
