"""
tracefs events
--------------
Pure parsing of the text tracefs prints in ``trace``/``trace_pipe`` into event dicts. The line
layout (``kernel/trace/trace_output.c``, with ``options/record-tgid``)::

    <comm>-<pid> (<tgid>) [<cpu>] <flags> <secs>.<usecs>: <event>: <body>

syscall events print as ``sys_NAME(arg: val, ...)`` and ``sys_NAME -> 0xRET``
(``print_syscall_enter()``/``print_syscall_exit()`` in kernel/trace/trace_syscalls.c; values in
hex, 0 may print as ``0``). With ``options/userstacktrace`` every event is followed by a
``<user stack trace>`` event and `` =>  <addr>`` lines (``trace_user_stack_print()``), which
:class:`Parser` folds into the preceding event's ``ustack``.
"""

import re

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, List, Optional, Union

__all__ = ["Parser", "parse_line", "parse_kv", "signed_ret"]

_ARGS = re.compile(r"(\w+): ([0-9a-fA-Fx]+)")
_KV = re.compile(r"(\w+)=(\S*)")


def signed_ret(v: str) -> int:
    """A syscall return value printed as unsigned hex -> the signed long it is."""
    n = int(v, 16) if v.startswith("0x") else int(v)
    return n - (1 << 64) if n >= 1 << 63 else n


def _num(v: str) -> "Union[int, str]":
    if v[:2] == "0x":
        return int(v, 16)
    try:
        return int(v, 16)  # print_syscall_enter() prints hex; 0 may come without its 0x
    except ValueError:
        return v


#: tracepoint fields printed with %lx (include/trace/events/signal.h)
HEX_FIELDS = ("sa_handler", "sa_flags")


def parse_kv(body: str) -> "dict[str, Union[int, str]]":
    """``sig=11 errno=0 comm=x`` -> {"sig": 11, "errno": 0, "comm": "x"} (numbers as int)."""
    out: "dict[str, Union[int, str]]" = {}
    for k, v in _KV.findall(body):
        if k in HEX_FIELDS and re.fullmatch(r"[0-9a-fA-F]+", v):
            out[k] = int(v, 16)
        elif re.fullmatch(r"-?\d+", v):
            out[k] = int(v)
        else:
            out[k] = v
    return out


def parse_line(line: str) -> "Optional[dict[str, Any]]":
    """One event line -> dict, or None for lines that are not events (headers, blanks).

    Keys: ``comm pid tgid cpu ts name`` plus, per kind: syscall enter ``kind="enter", syscall,
    args`` (list of ints in the kernel's order) and ``argnames``; syscall exit ``kind="exit",
    syscall, ret`` (signed); tracepoints ``kind="tp"`` with the fields of their ``key=value`` body.
    """
    # the fixed layout, split by hand (this runs for every event: a regex costs twice as much)
    try:
        b = line.find("] ")
        if b < 0:
            return None
        head = line[:b]
        lb = head.rfind("[")
        cpu = int(head[lb + 1:])
        who = head[:lb].strip()
        tgid = None
        if who.endswith(")"):
            p = who.rfind("(")
            tg = who[p + 1:-1].strip()
            who = who[:p].rstrip()
            if tg.isdigit() and int(tg) > 0:
                tgid = int(tg)
        d = who.rfind("-")
        comm: "Optional[str]" = who[:d].strip()
        pid = int(who[d + 1:])
        rest = line[b + 2:]
        c = rest.find(": ")
        if c < 0:
            return None
        ts = float(rest[:c].split()[-1])
        rest = rest[c + 2:].rstrip()
    except (ValueError, IndexError):
        return None
    if comm == "<...>":  # not in the kernel's saved_cmdlines: unknown here (the tracker knows it)
        comm = None
    ev: "dict[str, Any]" = {"comm": comm, "pid": pid, "tgid": tgid, "cpu": cpu, "ts": ts}
    if rest.startswith("sys_"):
        full, name, body = rest, rest.split("(", 1)[0].split(" ", 1)[0], ""
    else:
        name, _, body = rest.partition(": ")
        name = name.rstrip(":")
        full = None
    ev["name"] = name
    if full is not None:
        if full[-1] == ")":
            i = full.find("(")
            pairs = _ARGS.findall(full, i + 1)
            ev["kind"] = "enter"
            ev["syscall"] = full[4:i]
            ev["args"] = [_num(v) for _, v in pairs]
            ev["argnames"] = [k for k, _ in pairs]
            return ev
        i = full.find(" -> ")
        if i > 0:
            ev["kind"] = "exit"
            ev["syscall"] = full[4:i]
            ev["ret"] = signed_ret(full[i + 4:])
            return ev
    if name == "<user stack trace>":
        ev.update(kind="ustack")
        return ev
    ev.update(kind="tp", fields=parse_kv(body))
    return ev


class Parser:
    """Feed text (any chunking); get complete events with their user stack folded in.

    An event is held back until the next event line arrives, so that the stack lines that
    follow it can be attached (``ev["ustack"]``: a list of ints, innermost first). Call
    :meth:`flush` at the end.

    *userstack*: the instance records user stacks. The kernel commits an event's stack as an
    entry of its own right after the event (ftrace_trace_userstack()), so a reader that empties
    the buffer between the two sees the event alone (seen under the slow 6.1 guest: a
    setresgid with no stack). Such an event is kept for one more drained read.
    """

    def __init__(self, userstack: bool = False) -> None:
        self._rest = ""
        self._pending: "Optional[dict[str, Any]]" = None
        self._waited = False  # the pending event has already been kept over one drained read
        self.userstack = userstack
        self.unparsed = 0
        self.stacks = 0  # user stack entries seen
        self.stackless = 0  # events given out without one while *userstack* was on

    def feed(self, text: str, drained: bool = False) -> "List[dict[str, Any]]":
        """*drained*: the reader emptied the kernel's buffer, so the last event is complete
        (the kernel writes an event's stack right after it) and is returned too."""
        out: "List[dict[str, Any]]" = []
        data = self._rest + text
        lines = data.split("\n")
        self._rest = lines.pop()
        for line in lines:
            self._line(line, out)
        if drained and not self._rest and self._pending is not None:
            if self.userstack and "ustack" not in self._pending and not self._waited:
                self._waited = True  # its stack may not be committed yet
            else:
                self._out(self._pending, out)
                self._pending = None
        return out

    def _out(self, ev: "dict[str, Any]", out: "List[dict[str, Any]]") -> None:
        if self.userstack and "ustack" not in ev:
            self.stackless += 1
            ev["ustack_missing"] = True
        out.append(ev)

    def _line(self, line: str, out: "List[dict[str, Any]]") -> None:
        if not line or line[0] == "#":
            return
        if line.endswith(">") and line.lstrip().startswith("=>"):
            if self._pending is not None:
                i = line.rfind("<")
                try:
                    addr = int(line[i + 1:-1], 16)
                except ValueError:
                    return
                if addr:
                    self._pending.setdefault("ustack", []).append(addr)
            return
        if line.endswith(": <user stack trace>"):
            self.stacks += 1
            if self._pending is not None:
                self._pending.setdefault("ustack", [])
            return
        ev = parse_line(line)
        if ev is None:
            self.unparsed += 1
            return
        if ev["kind"] == "ustack":
            return
        if self._pending is not None:
            self._out(self._pending, out)
        self._pending = ev
        self._waited = False

    @property
    def holding(self) -> bool:
        """An event is still kept back (waiting for its stack): not everything read was given out."""
        return self._pending is not None

    def flush(self) -> "List[dict[str, Any]]":
        out: "List[dict[str, Any]]" = []
        if self._rest:
            self._line(self._rest, out)
            self._rest = ""
        if self._pending is not None:
            self._out(self._pending, out)
            self._pending = None
        return out
