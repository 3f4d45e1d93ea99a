"""The user-fault lines of arm64, riscv64, ppc64le and s390x, in the formats their kernels print
(format strings from arch/*/kernel/traps.c and arch/*/mm/fault.c of the versions named; the arm64
6.1 line is what Debian 12's arm64 kernel printed in the qemu guest with debug.exception-trace=1),
and the ESR decoded as arch/arm64/include/asm/esr.h defines it."""
import pytest

from coredoctor.history import BadRecord
from coredoctor.history import esr as esrmod
from coredoctor.history.kmsg import join_task_context, parse_line
from coredoctor.history.syslog import parse_line as syslog_line

ARM64_61 = ("crash[146]: unhandled exception: DABT (lower EL), ESR 0x0000000092000004, level 0 translation "
            "fault in crash[aaaabd940000+1000]")
ARM64_418 = ("ovs-vswitchd[2875]: unhandled level 2 translation fault (11) at 0x00000010, esr 0x92000006, "
             "in libc-2.28.so[ffff8a1c0000+150000]")

# line, pid, comm, signal, signo, (esr class, fault, level, write) or None
CASES = [
    (ARM64_61, 146, "crash", "SIGSEGV", None, ("DABT (lower EL)", "translation", 0, False)),
    # 4.19-5.18: "ESR 0x%08x"
    ("python3[77]: unhandled exception: IABT (lower EL), ESR 0x8200000f, level 3 permission fault in "
     "libfoo.so[ffff9f300000+2000]", 77, "python3", "SIGSEGV", None, ("IABT (lower EL)", "permission", 3, None)),
    ("x[78]: unhandled exception: DABT (lower EL), ESR 0x000000009200004b, level 3 access flag fault in "
     "x[aaaab0000000+1000]", 78, "x", "SIGSEGV", None, ("DABT (lower EL)", "access flag", 3, True)),
    ("x[79]: unhandled exception: BRK (AArch64), ESR 0x00000000f20003e8, Oops - BRK in x[aaaab0000000+1000]",
     79, "x", "SIGTRAP", None, ("BRK (AArch64)", None, None, None)),
    # no ESR (force_signal_inject(): undefined instruction)
    ("x[80]: unhandled exception: Undefined instruction in x[aaaab0000000+1000]", 80, "x", None, None, None),
    # 3.7-4.18 (the seed's 4.18): signal number printed, esr 0x%03x
    (ARM64_418, 2875, "ovs-vswitchd", None, 11, ("DABT (lower EL)", "translation", 2, False)),
    ("a[81]: unhandled alignment fault (7) at 0x0000ffffd0000001, esr 0x92000061", 81, "a", None, 7,
     ("DABT (lower EL)", "alignment", None, True)),
    # riscv64 do_trap()
    ("crash[90]: unhandled signal 11 code 0x1 at 0x0000000000000000 in crash[2ab0a0a000+1000]", 90, "crash", None,
     11, None),
    # powerpc show_signal_msg() 4.19+ and before
    ("crash[91]: segfault (11) at 0 nip 10000484 lr 7fff8d9e4c4c code 1 in crash[10000000+10000]", 91, "crash",
     None, 11, None),
    ("crash[92]: unhandled signal 11 at 0000000000000000 nip 0000000010000484 lr 00003fff8d9e4c4c code 30001",
     92, "crash", None, 11, None),
]


@pytest.mark.parametrize("line,pid,comm,signal,signo,esr", CASES)
def test_arch_fault_lines(line, pid, comm, signal, signo, esr):
    e = parse_line(line)
    assert e is not None and e["event"] == "fault", line
    assert (e["pid"], e["comm"], e["signo"]) == (pid, comm, signo)
    assert e["signal"] == signal
    if esr is None:
        assert "esr" not in e
    else:
        d = e["esr"]
        assert (d["class"], d["fault"] if "fault" in d else None, d.get("level"), d.get("write")) == esr


def test_s390_fault_takes_pid_from_show_regs_line():
    # report_user_fault() prints no pid; dump_fault_info() lines, then show_regs()' CPU/PID/Comm
    lines = ["User process fault: interruption code 0011 ilc:2 in libc.so.6[3ff87a80000+1c9000]",
             "Failing address: 000002aa0f73f000 TEID: 000002aa0f73f800",
             "Fault in primary space mode while using user ASCE.",
             "CPU: 3 PID: 56744 Comm: try-catch-2.exe Not tainted 4.8.15-300.fc25.s390x #1"]
    evs = [e for e in (parse_line(x, when=100.0) for x in lines) if e is not None]
    out = list(join_task_context(evs))
    assert len(out) == 1
    assert (out[0]["pid"], out[0]["comm"], out[0]["signal"]) == (56744, "try-catch-2.exe", "SIGSEGV")


def test_syslog_relays_arm64_lines():
    e = syslog_line("Nov 25 16:13:00 gw kernel: [  812.345678] " + ARM64_61, mtime=1764000000.0)
    assert e is not None and e["pid"] == 146 and e["esr"]["fault"] == "translation"
    e = syslog_line("Nov 25 16:13:00 gw kernel: " + ARM64_418, mtime=1764000000.0)
    assert e is not None and e["pid"] == 2875 and e["esr"]["level"] == 2


@pytest.mark.parametrize("line", [
    "x[1]: unhandled exception: DABT (lower EL), ESR 0x" + "9" * 40 + ", level 0 translation fault",
    "x[1]: unhandled level 0 translation fault (11) at 0x" + "f" * 5000 + ", esr 0x92000004",
    "x[1]: unhandled signal 11 code 0x" + "1" * 30 + " at 0x0",
    "x[" + "9" * 5000 + "]: unhandled exception: DABT (lower EL), ESR 0x92000004, level 0 translation fault",
])
def test_impossible_numbers_are_bad_records(line):
    with pytest.raises(BadRecord):
        parse_line(line)


def test_esr_table_rows():
    # ESR_ELx_EC_DABT_LOW 0x24, ESR_ELx_EC_IABT_LOW 0x20, FSC type 0x3c, level 0x3, WnR bit 6
    d = esrmod.decode(0x92000044)
    assert (d["ec"], d["fault"], d["level"], d["write"], d["signal"]) == (0x24, "translation", 0, True, "SIGSEGV")
    d = esrmod.decode(0x8200000D)
    assert (d["ec"], d["class"], d["fault"], d["level"], "write" in d) == (0x20, "IABT (lower EL)", "permission",
                                                                          1, False)
    assert esrmod.decode(0x92000010)["fault"] == "synchronous external abort"
    assert esrmod.decode(0x92000010)["signal"] == "SIGBUS"
    assert esrmod.decode(0x0)["class"] == "Unknown/Uncategorized"
    d = esrmod.decode(0xFC000000)  # EC 0x3f: no such class
    assert d["class"] is None and d["signal"] is None
