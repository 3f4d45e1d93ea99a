"""
The kernel log
--------------
Read ``/dev/kmsg`` (records ``prio,seq,usec,flags;message``, see
Documentation/ABI/testing/dev-kmsg) and classify the lines a crash leaves, in the formats of
3.10 to 6.19. Each pattern is data: the event it means, the kernel function that prints it, and,
for the core-dump refusals, the id of the check gate that refused.
"""

import errno
import os
import re
import time

from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Union

from coredoctor.history import MAX_TIME, BadRecord, OnSkip, finite_time, number

__all__ = ["PATTERNS", "parse_line", "read_kmsg", "join_task_context", "Event", "MAX_MESSAGE"]

#: the longest kernel message: PRINTK_MESSAGE_MAX 2048 (kernel/printk/internal.h, 6.x; LOG_LINE_MAX
#: 1024 - 32 before); an ANOM_ABEND record with a hex-encoded exe (PATH_MAX 4096 -> 8192) is longer
MAX_MESSAGE = 10240


class P:
    __slots__ = ("event", "regex", "source", "gate", "signal")

    def __init__(self, event: str, regex: str, source: str, gate: Optional[str] = None,
                 signal: Optional[str] = None) -> None:
        self.event, self.regex, self.source, self.gate, self.signal = event, re.compile(regex, re.ASCII), source, gate, signal


_CD = r"^coredump: (?P<pid>\d+)\((?P<comm>.*?)\): "   # coredump_report_failure(), 6.12+ (c114e9948c2b)
PATTERNS = (
    # x86 fault reports (only for unhandled, untraced signals; debug.exception-trace)
    P("fault", r"^(?P<comm>.+?)\[(?P<pid>\d+)\]: segfault at (?P<addr>[0-9a-f]+) ip (?P<ip>[0-9a-f]+) "
      r"sp [0-9a-f]+ error (?P<error>[0-9a-f]+)", "show_signal_msg() arch/x86/mm/fault.c", signal="SIGSEGV"),
    P("fault", r"^traps: (?P<comm>.+?)\[(?P<pid>\d+)\] (?P<trap>general protection fault|trap int3|trap divide error|"
      r"trap invalid opcode|trap [a-z ]+?)(?: ip| in |:|$)", "show_signal() arch/x86/kernel/traps.c"),
    # arm64, 4.19+: arm64_show_signal() arch/arm64/kernel/traps.c "%s[%d]: unhandled exception: "
    # [+ "%s, ESR 0x%08x, " (0x%016lx 5.19+) when the ESR is known] + the fault name + print_vma_addr()'s
    # " in %s[%lx+%lx]"; 6.13+ one pr_info() with " in %pv" (same text)
    P("fault", r"^(?P<comm>.+?)\[(?P<pid>\d+)\]: unhandled exception: (?:(?P<esrclass>[^,]{1,40}), "
      r"ESR 0x(?P<esr>[0-9a-f]+), )?(?P<desc>.+?)(?: in (?P<object>[^\[]*\[[0-9a-f]+\+[0-9a-f]+\]))?$",
      "arm64_show_signal() arch/arm64/kernel/traps.c (4.19+)"),
    # arm64, 3.7-4.18: __do_user_fault() arch/arm64/mm/fault.c "%s[%d]: unhandled %s (%d) at 0x%08lx,
    # esr 0x%03x" (+ print_vma_addr(", in ") since 4.10)
    P("fault", r"^(?P<comm>.+?)\[(?P<pid>\d+)\]: unhandled (?P<desc>[a-z0-9 ]+?) \((?P<signo>\d+)\) "
      r"at 0x(?P<addr>[0-9a-f]+), esr 0x(?P<esr>[0-9a-f]+)", "__do_user_fault() arch/arm64/mm/fault.c (-4.18)"),
    # riscv64: do_trap() arch/riscv/kernel/traps.c "%s[%d]: unhandled signal %d code 0x%x at 0x" REG_FMT
    # (+ " in %s[%lx+%lx]"); powerpc before 4.19 (show_signal_msg() fmt64) "unhandled signal %d at %016lx
    # nip %016lx lr %016lx code %x"
    P("fault", r"^(?P<comm>.+?)\[(?P<pid>\d+)\]: unhandled signal (?P<signo>\d+) (?:code 0x(?P<code>[0-9a-f]+) )?"
      r"at (?:0x)?(?P<addr>[0-9a-f]+)", "do_trap() arch/riscv/kernel/traps.c; show_signal_msg() arch/powerpc "
      "(-4.18)"),
    # powerpc 4.19+: show_signal_msg() arch/powerpc/kernel/traps.c "%s[%d]: %s (%d) at %lx nip %lx lr %lx
    # code %x", %s = signame(): segfault, bus error, illegal instruction, floating point exception,
    # unhandled trap, unknown signal
    P("fault", r"^(?P<comm>.+?)\[(?P<pid>\d+)\]: (?P<desc>segfault|bus error|illegal instruction|"
      r"floating point exception|unhandled trap|unknown signal) \((?P<signo>\d+)\) at (?P<addr>[0-9a-f]+) "
      r"nip (?P<ip>[0-9a-f]+) lr [0-9a-f]+ code (?P<code>[0-9a-f]+)",
      "show_signal_msg() arch/powerpc/kernel/traps.c (4.19+)"),
    # s390x: report_user_fault() arch/s390/mm/fault.c (arch/s390/kernel/dumpstack.c 6.x) "User process
    # fault: interruption code %04x ilc:%d " + print_vma_addr("in "): no pid, no signal; show_regs()
    # prints the CPU/PID/Comm line after the fault details (joined by join_task_context)
    P("fault", r"^User process fault: interruption code (?:0x)?(?P<code>[0-9a-fA-F]+)(?: ilc:\d)?",
      "report_user_fault() arch/s390/mm/fault.c"),
    # print-fatal-signals: "%s/%d: potentially..." (up to 6.x), "%pD: %s: potentially..." (newer, no pid)
    P("fatal-signal", r"^(?P<comm>.+)/(?P<pid>\d+): potentially unexpected fatal signal (?P<signo>\d+)\.",
      "print_fatal_signal() kernel/signal.c"),
    P("fatal-signal", r"^(?P<exe>\S+): (?P<comm>.+?): potentially unexpected fatal signal (?P<signo>\d+)\.",
      "print_fatal_signal() kernel/signal.c (6.x: %pD, no pid)"),
    # 5.x-6.1 print neither pid nor comm ("potentially unexpected fatal signal 11."); the task is on
    # show_regs()' next line, which :func:`join_task_context` joins to it
    P("fatal-signal", r"^potentially unexpected fatal signal (?P<signo>\d+)\.",
      "print_fatal_signal() kernel/signal.c (no pid: see the next CPU/PID/Comm line)"),
    # dump_stack_print_info() lib/dump_stack.c: "CPU: %d PID: %d Comm: %.20s %s%s %s %.*s" (6.12+ adds
    # "UID: %u"); only meaningful right after a pid-less fatal-signal line
    P("task-context", r"^CPU: \d+ (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>.{1,20}?) (?:Not tainted|Tainted: )",
      "dump_stack_print_info() lib/dump_stack.c"),
    # audit ANOM_ABEND: audit_core_dumps() runs before every dump gate
    # (audit_log_untrustedstring(): comm/exe quoted, or hex when they hold a space, quote or control byte;
    # the hex run is taken whole, (?!hex): backtracking into it made a long planted line quadratic)
    P("audit-abend", r"type=(?:1701|ANOM_ABEND) (?:msg=)?audit\((?P<atime>[\d.]+):(?P<serial>\d+)\):.*? pid=(?P<pid>\d+) "
      r"comm=(?P<comm>\"[^\"]*\"|[0-9A-Fa-f]+(?![0-9A-Fa-f]))(?: exe=(?P<exe>\"[^\"]*\"|[0-9A-Fa-f]+(?![0-9A-Fa-f])))?"
      r".*? sig=(?P<signo>\d+)",
      "audit_core_dumps() kernel/auditsc.c"),
    # core-dump refusals, 6.12+ format
    P("coredump-refused", _CD + r"(?:this process )?can only dump core to (?:a )?fully qualified path", "fs/coredump.c",
      gate="suid-path"),
    P("coredump-refused", _CD + r"RLIMIT_CORE is set to 1, aborting core", "fs/coredump.c", gate="rlimit-core"),
    P("coredump-refused", _CD + r"over core_pipe_limit, skipping core dump", "fs/coredump.c", gate="pipe-handler"),
    P("coredump-refused", _CD + r"\|(?P<helper>.*) pipe failed", "fs/coredump.c", gate="pipe-handler"),
    P("coredump-refused", _CD + r"Core dump to \|(?P<helper>.*) disabled", "fs/coredump.c", gate="pipe-handler"),
    P("coredump-refused", _CD + r"Coredump socket (?P<detail>.*)", "fs/coredump.c (6.16+)", gate="socket-handler"),
    P("coredump-refused", _CD + r"Core dump to (?P<path>.*) aborted: cannot preserve file (?P<what>owner|permissions)",
      "fs/coredump.c", gate="core-file"),
    P("coredump-refused", _CD + r".*format_corename failed", "fs/coredump.c", gate="kernel-config"),
    # core-dump refusals, before 6.12 (some carry no pid)
    P("coredump-refused", r"^Pid (?P<pid>\d+)\((?P<comm>.*?)\) can only dump core to fully qualified path!",
      "do_coredump() fs/coredump.c (3.6-6.11)", gate="suid-path"),
    P("coredump-refused", r"^Process (?P<pid>\d+)\((?P<comm>.*?)\) has RLIMIT_CORE set to 1",
      "do_coredump() fs/coredump.c (-6.11)", gate="rlimit-core"),
    P("coredump-refused", r"^Pid (?P<pid>\d+)\((?P<comm>.*?)\) over core_pipe_limit",
      "do_coredump() fs/coredump.c (-6.11)", gate="pipe-handler"),
    P("coredump-refused", r"^Core dump to \|(?P<helper>.*) pipe failed", "do_coredump() fs/coredump.c (-6.11)",
      gate="pipe-handler"),
    P("coredump-refused", r"^Core dump to (?P<path>.*) aborted: cannot preserve file (?P<what>owner|permissions)",
      "do_coredump() fs/coredump.c (5.15-6.11)", gate="core-file"),
    # user-space handlers that log to the kernel log when the journal is not there
    P("handler", r"^systemd-coredump\[(?P<hpid>\d+)\]: (?P<msg>Failed to connect to coredump service.*)",
      "systemd src/coredump/coredump.c", gate="handler-policy"),
)

_TRAP_SIGNAL = {"general protection fault": "SIGSEGV", "trap int3": "SIGTRAP", "trap divide error": "SIGFPE",
                "trap invalid opcode": "SIGILL"}


class Event(dict):
    """One classified log line: ``event``, ``pid`` (or None), ``comm``, ``gate``, ``signal``,
    ``signo``, ``source``, ``line`` and ``time`` (seconds since the epoch, when known)."""


#: a classifier of user-space lines, ``(ident, pid, message, when)`` -> an Event or None
#: (daemonlog.parse_message)
Classify = Callable[[Optional[str], Union[int, str, None], str, Optional[float]], Optional[Event]]


def parse_line(msg: str, when: "float | None" = None, source: str = "kmsg") -> "Event | None":
    """Classify one kernel log message (without the dmesg ``[  12.345]`` prefix). None for a line
    that is no crash line; :class:`~coredoctor.history.BadRecord` for one that looks like one and
    holds what no kernel prints (a 4,400-digit pid, a time past any clock)."""
    msg = msg.rstrip("\n")
    if len(msg) > MAX_MESSAGE:
        raise BadRecord(source, f"a kernel line of {len(msg)} characters (the kernel prints at most 2048)")
    for p in PATTERNS:
        m = p.regex.search(msg)
        if not m:
            continue
        g = m.groupdict()
        pid, signo = g.get("pid"), g.get("signo")
        # the patterns are re.ASCII: a group of \d is ASCII digits; only its length is left to check
        # (inline: this runs for every crash line of a big syslog file)
        pid = (int(pid) if len(pid) <= 7 else number(pid, "pid", source)) if pid else None
        signo = (int(signo) if len(signo) <= 2 else number(signo, "signo", source)) if signo else None
        if when is not None and not 0 <= when < MAX_TIME:
            finite_time(when, source)
        e = Event(event=p.event, pid=pid, comm=g.get("comm"), gate=p.gate, signal=p.signal, signo=signo,
                  source="kmsg", ref=p.source, line=msg, time=when)
        if g.get("trap"):
            e["signal"] = _TRAP_SIGNAL.get(g["trap"])
        if g.get("atime"):
            # audit_log_start(): "audit(%llu.%03lu:%u)", seconds, milliseconds, serial
            if not _AUDIT_TIME.fullmatch(g["atime"]):
                raise BadRecord(source, "audit time is not SECONDS.MILLISECONDS of ASCII digits")
            if len(g["serial"]) > 20:
                number(g["serial"], "u64", source, "audit serial")
            e["time"] = finite_time(float(g["atime"]), source)
            e["serial"] = f"{g['atime']}:{g['serial']}"  # audit(TIME:SERIAL) names one record everywhere
            e["comm"] = _untrusted(g["comm"])
            g["exe"] = _untrusted(g["exe"]) if g.get("exe") else None
            u = _AUDIT_UID.search(msg, 0, m.start("pid"))
            if u:
                e["uid"] = number(u.group(1), "uid", source)
        for k in ("exe", "helper", "path", "addr", "ip", "error", "code", "desc", "object"):
            if g.get(k):
                if k in _HEX and len(g[k]) > _HEX[k]:
                    raise BadRecord(source, f"a {len(g[k])}-digit {k} (a register holds {_HEX[k]})")
                e[k] = g[k]
        if g.get("esr"):
            _add_esr(e, g["esr"], source)
        elif p.source.startswith("report_user_fault()"):
            e["signal"] = _S390_CODE.get(int(g["code"], 16) & 0xFF)
        return e
    return None


#: the hex digits a field may have: a 64-bit register (addr, ip, ESR); a 32-bit code
_HEX = {"addr": 16, "ip": 16, "error": 16, "code": 8}

#: s390 program interruption codes (the low byte; 0x200 is PER) a user fault reports, and the
#: signal the kernel sends for them: do_dat_exception()/do_protection_exception()
#: arch/s390/mm/fault.c (SIGSEGV), the pgm_check_table arch/s390/kernel/pgm_check.S handlers
#: (operation/privileged/specification -> SIGILL, data -> SIGFPE/SIGILL is left open)
_S390_CODE = {0x01: "SIGILL", 0x02: "SIGILL", 0x03: "SIGILL", 0x04: "SIGSEGV", 0x05: "SIGSEGV", 0x06: "SIGILL",
              0x10: "SIGSEGV", 0x11: "SIGSEGV", 0x38: "SIGSEGV", 0x39: "SIGSEGV", 0x3A: "SIGSEGV",
              0x3B: "SIGSEGV"}


def _add_esr(e: "Event", text: str, source: str) -> None:
    """arm64: the ESR decoded (:mod:`.esr`) into ``e["esr"]``, and the signal it implies when the
    line does not print one."""
    from coredoctor.history import esr as _esr
    if len(text) > _esr.MAX_DIGITS:
        raise BadRecord(source, f"a {len(text)}-digit ESR (ESR_ELx is 64 bits)")
    d = _esr.decode(int(text, 16))
    e["esr"] = d
    if e.get("signal") is None and e.get("signo") is None:
        e["signal"] = d["signal"]


_AUDIT_UID = re.compile(r" uid=([0-9]+) ", re.ASCII)
_AUDIT_TIME = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?", re.ASCII)  # audit_log_task(): "auid=%u uid=%u gid=%u ses=%u"


def _untrusted(v: str) -> str:
    """audit_log_n_untrustedstring(): "quoted" as is, otherwise hex-encoded bytes."""
    if v.startswith('"'):
        return v.strip('"')
    try:
        return bytes.fromhex(v).decode("utf-8", "replace")
    except ValueError:
        return v


def join_task_context(events: Iterable["Event"], window: float = 1.0) -> Iterator["Event"]:
    """Give a pid-less ``fatal-signal`` (or ``fault``: s390's report_user_fault()) event the pid (and comm) of the ``task-context`` line that
    print_fatal_signal()'s show_regs() prints right after it (5.x-6.1: the line names neither; 6.x
    ``%pD: comm:`` names no pid). ``task-context`` events are consumed: alone (an oops, a WARN) they
    say nothing about a crash. *events* in log order, from one log."""
    pending = None
    for e in events:
        if e["event"] == "task-context":
            if pending is not None and (pending.get("time") is None or e.get("time") is None
                                        or abs(e["time"] - pending["time"]) <= window):
                pending["pid"] = e["pid"]
                pending["comm"] = pending.get("comm") or e["comm"]
                pending["line"] = f"{pending['line']} / {e['line']}"
            if pending is not None:
                yield pending
                pending = None
            continue
        if pending is not None:
            yield pending
            pending = None
        if e["event"] in ("fatal-signal", "fault") and e.get("pid") is None:
            pending = e
        else:
            yield e
    if pending is not None:
        yield pending


_DMESG_PREFIX = re.compile(r"^\[\s*(?P<ts>[0-9]{1,12}\.[0-9]{1,9})\]\s?", re.ASCII)


def parse_dmesg_line(line: str, boot_time: "float | None" = None) -> "Event | None":
    m = _DMESG_PREFIX.match(line)
    ts = None
    if m:
        ts = float(m.group("ts"))
        line = line[m.end():]
    return parse_line(line, None if ts is None or boot_time is None else boot_time + ts)


_USER = re.compile(r"^(?P<ident>[^\s\[:]+)\[(?P<pid>[0-9]+)\]: (?P<msg>.*)", re.ASCII)


def _ascii_int(text: str) -> Optional[int]:
    """A kmsg header field (written by the kernel: ``%llu``) or None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else None


def position(path: str = "/dev/kmsg",
             boot_id_path: str = "/proc/sys/kernel/random/boot_id") -> "Optional[Dict[str, Any]]":
    """``{"boot_id", "next_seq", "first_seq", "first_time"}``: the sequence number the kernel
    log's next record will have, in this boot -- an order that needs no clock (printk's
    local_clock() may run ahead of CLOCK_MONOTONIC by seconds: the emulated arm64 guest) -- and
    the oldest record still held (numbers start at 0 at boot: a first_seq above 0 means the
    ring buffer was full and overwrote the older ones). None when it cannot be read."""
    boot = boot_id(boot_id_path)
    if boot is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    last = first = None
    first_time = None
    boot_t = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
    try:
        for rec in _records(fd):
            fields = rec.split(b";", 1)[0].split(b",")
            if len(fields) > 1:
                s = _ascii_int(fields[1].decode("ascii", "replace"))
                if s is not None:
                    last = s
                    if first is None:
                        first = s
                        us = _ascii_int(fields[2].decode("ascii", "replace")) if len(fields) > 2 else None
                        first_time = boot_t + us / 1e6 if us is not None else None
    except OSError:
        return None
    finally:
        os.close(fd)
    return {"boot_id": boot, "next_seq": 0 if last is None else last + 1, "first_seq": first,
            "first_time": first_time}


def _records(fd: int) -> "Iterator[bytes]":
    """The records of /dev/kmsg open at *fd* (O_NONBLOCK), one per read (devkmsg_read()), until
    none is left; a record overwritten while reading (EPIPE) is passed over, any other error raised."""
    while True:
        try:
            rec = os.read(fd, 8192)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno == errno.EPIPE:  # overwritten while reading: continue with the next one
                continue
            raise
        if not rec:
            return
        yield rec


def boot_id(path: str = "/proc/sys/kernel/random/boot_id") -> "Optional[str]":
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def read_kmsg(path: str = "/dev/kmsg", user: "Classify | None" = None,
              skipped: "OnSkip | None" = None) -> "list[Event]":
    """Every classified record in the kernel's ring buffer, oldest first. Times are wall-clock
    estimates (record usec since boot + the boot time on CLOCK_MONOTONIC). *user*: a classifier
    ``(ident, pid, message, when)`` for lines that user-space programs wrote to /dev/kmsg
    (``systemd-coredump[N]: ...`` when no journal runs), e.g. daemonlog.parse_message.
    *skipped*: called with the :class:`~coredoctor.history.BadRecord` of each record left out."""
    boot = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
    out = []
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        for rec in _records(fd):
            head, _, body = rec.decode("utf-8", "replace").partition(";")
            fields = head.split(",")
            msg = body.split("\n", 1)[0]
            usec = _ascii_int(fields[2]) if len(fields) > 2 else None
            when = boot + usec / 1e6 if usec is not None else None
            try:
                e = parse_line(msg, when)
                if user is not None and (e is None or e["event"] == "handler"):
                    m = _USER.match(msg)
                    u = user(m.group("ident"), number(m.group("pid"), "pid", "kmsg"), m.group("msg"), when) \
                        if m else None
                    if u is not None:
                        e = u
                        e["source"] = "kmsg"
            except BadRecord as err:
                if skipped is not None:
                    skipped(err)
                continue
            if e is not None:
                e["seq"] = _ascii_int(fields[1]) if len(fields) > 1 else None
                out.append(e)
    finally:
        os.close(fd)
    return list(join_task_context(out))
