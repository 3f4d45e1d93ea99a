"""
Binary trace records
--------------------
Decodes the ring-buffer pages that tracefs hands out in ``per_cpu/cpuN/trace_pipe_raw`` into
the event dicts of :mod:`coredoctor.trace.events`, reading every field by the offsets and sizes
of the events' ``format`` files. Nothing a process controls (its name, argv, a file name) is
parsed for structure: strings are only ever values of their own fields, so a process named like
a trace line can neither break the reader nor create or re-attribute an event.

Layout (Documentation/trace/ring-buffer-design.rst, kernel/trace/ring_buffer.c; the same rules
as libtraceevent's kbuffer.c):

- a page: the header of ``events/header_page`` -- ``u64 timestamp`` (of the first entry),
  ``local_t commit`` (bytes of data; bit 31 RB_MISSED_EVENTS: events were lost before this
  page; bit 30 RB_MISSED_STORED: their count is stored as a long after the data), then the data;
- an entry: a 32-bit header, ``type_len:5`` and ``time_delta:27`` (``events/header_event``).
  ``type_len`` 29 is padding (a discarded entry, ``array[0]`` bytes long; with a zero delta
  the rest of the page is empty), 30 a time extend (``delta += array[0] << 27``), 31 an absolute
  time stamp, 1..28 a record of ``type_len * 4`` bytes, 0 a record whose length is ``array[0]``
  (including that word);
- a record starts with ``struct trace_entry`` (``common_type``: the event's ID, ``common_pid``).
  With ``options/userstacktrace`` each event is followed by a separate ``ftrace/user_stack``
  record (TRACE_USER_STACK, ftrace_trace_userstack()) with the task's ``tgid`` and ``caller[]``.

:class:`RawReader` merges the CPUs' records in time order and folds each user stack into its
event, keeping an event back for one drained read when its stack is not committed yet (see
:class:`coredoctor.trace.events.Parser`).
"""

import operator
import re
import struct
import sys
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["DecodeError", "EventFormat", "PageHeader", "Decoder", "RawReader", "parse_format",
           "parse_header_page", "parse_header_event"]

RB_MISSED_EVENTS = 1 << 31  # kernel/trace/ring_buffer.c
RB_MISSED_STORED = 1 << 30
COMMIT_MASK = (1 << 27) - 1  # libtraceevent kbuffer.c: the data size in the commit field
TS_SHIFT = 27
TS_MSB = ~((1 << 59) - 1) & ((1 << 64) - 1)  # rb_fix_abs_ts(): the bits an absolute stamp omits


class DecodeError(ValueError):
    """One format file or one record that cannot be decoded."""


_FIELD = re.compile(r"\s*field:\s*(?P<decl>[^;]*);\s*offset:\s*(?P<off>\d+);\s*size:\s*(?P<size>\d+);"
                    r"(?:\s*signed:\s*(?P<signed>\d+);)?")
_INTS = {1: "B", 2: "H", 4: "I", 8: "Q"}


class Field:
    __slots__ = ("name", "offset", "size", "signed", "kind", "count", "ctype")

    def __init__(self, decl: str, offset: int, size: int, signed: bool) -> None:
        decl = decl.strip()
        m = re.fullmatch(r"(?P<type>.*?)\s*\b(?P<name>\w+)\s*(?:\[(?P<n>\d*)\])?", decl)
        if m is None:
            raise DecodeError(f"unreadable field declaration {decl[:60]!r}")
        self.name, self.offset, self.size, self.signed = m.group("name"), offset, size, signed
        self.ctype = m.group("type").strip()
        n = m.group("n")
        if self.ctype.startswith("__data_loc"):
            self.kind, self.count = "data_loc", 1
        elif self.ctype.startswith("__rel_loc"):
            self.kind, self.count = "rel_loc", 1
        elif n is not None and "char" in self.ctype:
            self.kind, self.count = "chars", size
        elif n is not None:
            cnt = int(n) if n else 0
            if cnt <= 0 or size % cnt or size // cnt not in _INTS:
                self.kind, self.count = "bytes", size
            else:
                self.kind, self.count = "array", cnt
        elif self.ctype == "bool" and size in _INTS:
            self.kind, self.count = "bool", 1
        elif size in _INTS:
            self.kind, self.count = "int", 1
        else:
            self.kind, self.count = "bytes", size
        if self.kind in ("data_loc", "rel_loc") and size != 4:
            raise DecodeError(f"field {self.name}: a {self.kind} of {size} bytes")

    def __repr__(self) -> str:
        return f"Field({self.name!r}, {self.offset}, {self.size}, {self.kind})"


class EventFormat:
    """One ``events/SYSTEM/EVENT/format`` file: its ID, name and fields."""

    def __init__(self, eid: int, name: str, fields: List[Field], system: str = "") -> None:
        self.id, self.name, self.system = eid, name, system
        self.common = {f.name: f for f in fields if f.name.startswith("common_")}
        self.fields = [f for f in fields if not f.name.startswith("common_")]
        self.kind = "tp"
        self.syscall = None
        if name.startswith("sys_enter_"):
            self.kind, self.syscall = "enter", name[len("sys_enter_"):]
        elif name.startswith("sys_exit_"):
            self.kind, self.syscall = "exit", name[len("sys_exit_"):]
        self.args = [f for f in self.fields if f.name != "__syscall_nr"] if self.kind == "enter" else []
        self.ret = next((f for f in self.fields if f.name == "ret"), None) if self.kind == "exit" else None
        if self.kind == "enter" and any(f.kind != "int" for f in self.args):
            # newer kernels may append copied user strings; the arguments are the ints before them
            self.args = [f for f in self.args if f.kind == "int"]
        if self.kind == "exit" and (self.ret is None or self.ret.kind != "int"):
            raise DecodeError(f"{name}: no integer ret field")
        self.size = max([f.offset + f.size for f in fields] or [0])


def parse_format(text: str, system: str = "") -> EventFormat:
    """The text of a ``format`` file -> :class:`EventFormat` (DecodeError when it is not one)."""
    name = eid = None
    fields = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("name:"):
            name = s[5:].strip()
        elif s.startswith("ID:"):
            try:
                eid = int(s[3:].strip())
            except ValueError:
                raise DecodeError(f"bad ID line {s[:40]!r}")
        elif s.startswith("field:"):
            m = _FIELD.match(line)
            if m is None:
                raise DecodeError(f"unreadable field line {s[:60]!r}")
            fields.append(Field(m.group("decl"), int(m.group("off")), int(m.group("size")),
                                m.group("signed") == "1"))
        elif s.startswith("print fmt:"):
            break
    if name is None or eid is None:
        raise DecodeError("no name or ID")
    for common in ("common_type", "common_pid"):
        f = next((f for f in reversed(fields) if f.name == common), None)  # the one EventFormat keeps
        if f is None:
            raise DecodeError(f"{name}: no {common}")
        if f.kind != "int":  # struct trace_entry: an unsigned short and an int
            raise DecodeError(f"{name}: {common} of {f.size} bytes")
    return EventFormat(eid, name, fields, system)


class PageHeader:
    """``events/header_page``: where the page's time stamp, commit and data are."""

    def __init__(self, ts_off: int = 0, ts_size: int = 8, commit_off: int = 8, commit_size: int = 8,
                 data_off: int = 16, data_size: int = 4080) -> None:
        if ts_size != 8 or commit_size not in (4, 8) or data_off < commit_off + commit_size:
            raise DecodeError(f"unexpected page header (timestamp {ts_size}, commit {commit_size} bytes)")
        self.ts_off, self.commit_off, self.commit_size = ts_off, commit_off, commit_size
        self.data_off, self.data_size = data_off, data_size
        self.page_size = data_off + data_size
        self.long = commit_size


def parse_header_page(text: str) -> PageHeader:
    got: Dict[str, Tuple[int, int]] = {}
    for line in text.splitlines():
        m = _FIELD.match(line)
        if m:
            name = m.group("decl").split()[-1]
            got.setdefault(name, (int(m.group("off")), int(m.group("size"))))
    try:
        return PageHeader(got["timestamp"][0], got["timestamp"][1], got["commit"][0], got["commit"][1],
                          got["data"][0], got["data"][1])
    except KeyError as e:
        raise DecodeError(f"header_page has no {e.args[0]} field")


def parse_header_event(text: str) -> Dict[str, int]:
    """``events/header_event`` -> the type_len values of padding, time_extend, time_stamp and the
    largest data type_len (the kernel's own numbers; defaults where a line is missing)."""
    out = {"padding": 29, "time_extend": 30, "time_stamp": 31, "data_max": 28}
    for line in text.splitlines():
        m = re.match(r"\s*(padding|time_extend|time_stamp)\s*:\s*type\s*==\s*(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
        m = re.match(r"\s*data max type_len\s*==\s*(\d+)", line)
        if m:
            out["data_max"] = int(m.group(1))
        m = re.match(r"\s*(type_len|time_delta)\s*:\s*(\d+)\s*bits", line)
        if m and int(m.group(2)) != {"type_len": 5, "time_delta": 27}[m.group(1)]:
            raise DecodeError(f"unexpected entry header: {m.group(1)} of {m.group(2)} bits")
    return out


def _text(b: bytes) -> str:
    i = b.find(b"\0")
    return (b if i < 0 else b[:i]).decode("utf-8", "replace")


class _Compiled:
    """An event's format turned into struct unpackers (made once per event ID)."""
    __slots__ = ("fmt", "name", "kind", "syscall", "args_st", "argnames", "ret_st", "ret_off", "fields",
                 "min_size", "pid_st", "pid_off", "one")
    fmt: "EventFormat"
    name: str
    kind: str
    syscall: Optional[str]
    args_st: Any
    argnames: List[str]
    ret_st: Any
    ret_off: int
    fields: List[Tuple[Field, Any]]
    min_size: int
    pid_st: struct.Struct
    pid_off: int
    one: Optional[struct.Struct]


def _layout(e: str, fields: List[Tuple[int, int, bool]]) -> Optional[struct.Struct]:
    """One struct for integer fields (offset, size, signed) in offset order, pad bytes between;
    None when they overlap (then each is read on its own)."""
    code, at = e, 0
    for off, size, signed in fields:
        if off < at or size not in _INTS:
            return None
        code += "x" * (off - at) + (_INTS[size].lower() if signed else _INTS[size])
        at = off + size
    return struct.Struct(code)


class Decoder:
    """Decodes pages of one instance, given its formats (ID -> :class:`EventFormat`)."""

    def __init__(self, formats: Dict[int, EventFormat], header: Optional[PageHeader] = None,
                 header_event: Optional[Dict[str, int]] = None, stack_id: Optional[int] = None,
                 byteorder: str = sys.byteorder) -> None:
        self.header = header or PageHeader()
        he = header_event or parse_header_event("")
        self.t_pad, self.t_ext, self.t_abs, self.t_max = he["padding"], he["time_extend"], he["time_stamp"], \
            he["data_max"]
        self.e = "<" if byteorder == "little" else ">"
        self.big = byteorder != "little"
        self.u32 = struct.Struct(self.e + "I")
        self.u64 = struct.Struct(self.e + "Q")
        self.commit_st = struct.Struct(self.e + ("Q" if self.header.commit_size == 8 else "I"))
        self.type_st = None
        self.formats = {}
        self.stack_id = stack_id
        self.stack = None
        for eid, f in formats.items():
            c = self._compile(f)
            if eid == stack_id:
                self.stack = c
            self.formats[eid] = c
        any_fmt = next(iter(formats.values()), None)
        if any_fmt is not None:
            ct = any_fmt.common["common_type"]
            self.type_st = (struct.Struct(self.e + _INTS[ct.size]), ct.offset)
        self._stk = None  # the user stack record, decoded without the general path (one per event)
        if self.stack is not None and self.type_st is not None:
            sf = {x.name: x for x in self.stack.fmt.fields}
            tg, cl = sf.get("tgid"), sf.get("caller")
            if tg is not None and tg.kind == "int" and cl is not None and cl.kind == "array":
                self._stk = (stack_id, self.stack.min_size, self.stack.pid_st, self.stack.pid_off,
                             struct.Struct(self.e + _INTS[tg.size]), tg.offset,
                             struct.Struct(self.e + _INTS[cl.size // cl.count] * cl.count), cl.offset,
                             (1 << (8 * (cl.size // cl.count))) - 1)
        self.bad = 0  # records that could not be decoded
        self.unknown = 0  # records of an ID without a format
        self.missed = 0  # events the kernel lost (counted in the pages' headers; -1: some)
        self.missed_pages = 0

    def _compile(self, f: EventFormat) -> _Compiled:
        c = _Compiled()
        c.fmt, c.kind, c.syscall = f, f.kind, f.syscall
        c.name = f"sys_{f.syscall}" if f.syscall else f.name
        pid = f.common["common_pid"]
        c.pid_st, c.pid_off = struct.Struct(self.e + _INTS[pid.size].lower()), pid.offset
        c.min_size = f.size
        c.args_st = c.ret_st = c.one = None
        c.argnames = [a.name for a in f.args]
        if f.kind == "enter":  # common_pid and the arguments in one unpack
            c.one = _layout(self.e, [(pid.offset, pid.size, True)] + [(a.offset, a.size, False) for a in f.args])
        elif f.kind == "exit" and f.ret is not None:
            c.one = _layout(self.e, [(pid.offset, pid.size, True), (f.ret.offset, f.ret.size, True)])
        if f.kind == "enter":
            offs = [a.offset for a in f.args]
            c.args_st = [(struct.Struct(self.e + _INTS[a.size]), a.offset) for a in f.args]
            base = offs[0] if offs else 0
            if offs and all(a.size == 8 for a in f.args) and offs == list(range(base, base + 8 * len(offs), 8)):
                c.args_st = (struct.Struct(self.e + "Q" * len(offs)), base)  # the common case: one unpack
        elif f.kind == "exit":
            r = f.ret
            assert r is not None  # EventFormat() refuses an exit event without one
            c.ret_st, c.ret_off = struct.Struct(self.e + _INTS[r.size].lower()), r.offset
        else:
            c.fields = []
            for fl in f.fields:
                if fl.kind in ("int", "bool", "data_loc", "rel_loc"):
                    code = _INTS[fl.size]
                    st = struct.Struct(self.e + (code.lower() if fl.signed and fl.kind == "int" else code))
                elif fl.kind == "array":
                    st = struct.Struct(self.e + _INTS[fl.size // fl.count] * fl.count)
                else:
                    st = None
                c.fields.append((fl, st))
        return c

    # --- one record ---------------------------------------------------------------------------
    def record(self, data: bytes, off: int, size: int) -> Tuple[Optional[_Compiled], dict]:
        """The record at data[off:off+size] -> (its compiled format, event dict); DecodeError."""
        if self.type_st is None or size < 8:
            raise DecodeError("record too short")
        st, toff = self.type_st
        eid = st.unpack_from(data, off + toff)[0]
        c = self.formats.get(eid)
        if c is None:
            self.unknown += 1
            return None, {}
        if size < c.min_size:
            raise DecodeError(f"{c.name}: record of {size} bytes, the format needs {c.min_size}")
        if c.one is not None:
            v = c.one.unpack_from(data, off)
            if c.kind == "enter":
                return c, {"comm": None, "pid": v[0], "tgid": None, "name": c.name, "kind": "enter",
                           "args": list(v[1:]), "syscall": c.syscall, "argnames": c.argnames}
            return c, {"comm": None, "pid": v[0], "tgid": None, "name": c.name, "kind": "exit",
                       "syscall": c.syscall, "ret": v[1]}
        pid = c.pid_st.unpack_from(data, off + c.pid_off)[0]
        ev = {"comm": None, "pid": pid, "tgid": None, "name": c.name, "kind": c.kind}
        if c.kind == "enter":
            a = c.args_st
            if isinstance(a, tuple):
                ev["args"] = list(a[0].unpack_from(data, off + a[1]))
            else:
                ev["args"] = [s.unpack_from(data, off + o)[0] for s, o in a]
            ev["syscall"] = c.syscall
            ev["argnames"] = c.argnames
        elif c.kind == "exit":
            ev["syscall"] = c.syscall
            ev["ret"] = c.ret_st.unpack_from(data, off + c.ret_off)[0]
        else:
            ev["fields"] = self._fields(c, data, off, size)
        return c, ev

    def _fields(self, c: _Compiled, data: bytes, off: int, size: int) -> dict:
        out = {}
        end = off + size
        for fl, st in c.fields:
            k = fl.kind
            if k == "int":
                out[fl.name] = st.unpack_from(data, off + fl.offset)[0]
            elif k == "bool":
                out[fl.name] = bool(st.unpack_from(data, off + fl.offset)[0])
            elif k in ("data_loc", "rel_loc"):
                v = st.unpack_from(data, off + fl.offset)[0]
                start = (v & 0xFFFF) + (fl.offset + fl.size if k == "rel_loc" else 0)
                n = v >> 16
                if off + start + n > end:
                    raise DecodeError(f"{c.name}: {fl.name} points past the record")
                out[fl.name] = _text(data[off + start:off + start + n])
            elif k == "chars":
                out[fl.name] = _text(data[off + fl.offset:off + fl.offset + fl.size])
            elif k == "array":
                out[fl.name] = list(st.unpack_from(data, off + fl.offset))
            else:
                out[fl.name] = bytes(data[off + fl.offset:off + fl.offset + fl.size])
        return out

    # --- one page -----------------------------------------------------------------------------
    def page(self, data: bytes, cpu: int = 0) -> List[dict]:
        """One page -> its events in order (dicts with ``ts`` in seconds and ``cpu``; user stacks
        as ``kind="ustack"`` with ``tgid`` and ``addrs``). Never raises: a record that cannot be
        decoded is counted in :attr:`bad` and skipped when its length is known, else the rest of
        the page is (its entries can no longer be found)."""
        h = self.header
        out: List[dict] = []
        if len(data) < h.data_off:
            if data:
                self.bad += 1
            return out
        ts = self.u64.unpack_from(data, h.ts_off)[0]
        commit = self.commit_st.unpack_from(data, h.commit_off)[0]
        size = commit & COMMIT_MASK
        if commit & RB_MISSED_EVENTS:
            self.missed_pages += 1
            if commit & RB_MISSED_STORED and h.data_off + size + h.long <= len(data):
                n = (self.u64 if h.long == 8 else self.u32).unpack_from(data, h.data_off + size)[0]
                self.missed += n
        end = h.data_off + size
        if end > len(data):
            self.bad += 1
            end = len(data)
        pos = h.data_off
        u32 = self.u32
        big = self.big
        stk = self._stk
        # (self.u32 stands in where there is no type field: stk is None then, tst is not used)
        tst, toff = self.type_st or (u32, 0)
        t_max = self.t_max if self.t_max < min(self.t_pad, self.t_ext, self.t_abs) else 28
        while pos + 4 <= end:
            w = u32.unpack_from(data, pos)[0]
            if big:
                tl, delta = w >> 27, w & ((1 << 27) - 1)
            else:
                tl, delta = w & 31, w >> 5
            if 0 < tl <= t_max:  # the common case: a record of type_len * 4 bytes
                rsize = tl * 4
                roff = pos + 4
                nxt = roff + rsize
            elif tl == 0:
                if pos + 8 > end:
                    self.bad += 1
                    break
                n = u32.unpack_from(data, pos + 4)[0]
                if n < 4:
                    self.bad += 1
                    break
                rsize = n - 4
                roff = pos + 8
                nxt = pos + 4 + ((n + 3) & ~3)
            elif tl == self.t_pad:
                if delta == 0 or pos + 8 > end:
                    break  # a null event: nothing after it on this page
                n = u32.unpack_from(data, pos + 4)[0]
                ts += delta
                if n == 0:
                    self.bad += 1
                    break
                pos += 4 + n
                continue
            elif tl == self.t_ext or tl == self.t_abs:
                if pos + 8 > end:
                    self.bad += 1
                    break
                v = (u32.unpack_from(data, pos + 4)[0] << TS_SHIFT) + delta
                if tl == self.t_ext:
                    ts += v
                else:
                    ts = v | (ts & TS_MSB)
                pos += 8
                continue
            else:  # a type_len this kernel's header_event does not name
                self.bad += 1
                break
            ts += delta
            if roff + rsize > end:
                self.bad += 1
                break
            if stk is not None and rsize >= stk[1] and tst.unpack_from(data, roff + toff)[0] == stk[0]:
                addrs = []
                for a in stk[6].unpack_from(data, roff + stk[7]):
                    if a == 0 or a == stk[8]:
                        break
                    addrs.append(a)
                out.append({"comm": None, "pid": stk[2].unpack_from(data, roff + stk[3])[0], "name": "user_stack",
                            "kind": "ustack", "tgid": stk[4].unpack_from(data, roff + stk[5])[0], "addrs": addrs,
                            "ts": ts / 1e9, "cpu": cpu})
                pos = nxt
                continue
            try:
                c, ev = self.record(data, roff, rsize)
            except (DecodeError, struct.error) as e:
                if not isinstance(e, DecodeError):
                    e = DecodeError(str(e))
                self.bad += 1
                pos = nxt
                continue
            pos = nxt
            if c is None:
                continue
            ev["ts"] = ts / 1e9
            ev["cpu"] = cpu
            if c is self.stack:
                f = ev.pop("fields")
                addrs = []
                for a in f.get("caller") or ():
                    if a == 0 or a == (1 << (8 * h.long)) - 1:
                        break
                    addrs.append(a)
                ev["kind"], ev["tgid"], ev["addrs"] = "ustack", f.get("tgid"), addrs
            out.append(ev)
        return out


_ORDER = operator.itemgetter("ts", "seq")


class RawReader:
    """Feed pages of all CPUs (any number per call); get complete events in time order, each
    with the user stack that followed it (``ev["ustack"]``) and the tgid that stack names.

    *userstack*: the instance records user stacks, so an event is complete once its stack has
    come, or when the buffer was emptied twice without it (the kernel commits the stack as a
    separate entry right after the event: a reader can see the event alone)."""

    def __init__(self, decoder: Decoder, userstack: bool = False) -> None:
        self.d = decoder
        self.userstack = userstack
        self._pending: Dict[int, list] = {}  # cpu -> [event, waited over a drained read]
        self._ready: List[dict] = []  # complete, not yet given out (an earlier event of another CPU is pending)
        self._seq = 0
        self.unparsed = 0
        self.orphan_stacks = 0
        self.stacks = 0  # user stack records seen (with an event or not)
        self.stackless = 0  # events given out without one while *userstack* was on

    def feed(self, pages: List[Tuple[int, bytes]], drained: bool = False) -> List[dict]:
        ready = self._ready
        for cpu, data in pages:
            for ev in self.d.page(data, cpu):
                pend = self._pending.get(cpu)
                if ev["kind"] == "ustack":
                    self.stacks += 1
                    if pend is not None and pend[0]["pid"] == ev["pid"]:
                        e = pend[0]
                        e["ustack"] = ev["addrs"]
                        if ev.get("tgid"):
                            e["tgid"] = ev["tgid"]
                        ready.append(e)
                        del self._pending[cpu]
                    else:
                        self.orphan_stacks += 1
                    continue
                self._seq += 1
                ev["seq"] = self._seq
                if pend is not None:
                    ready.append(pend[0])
                    self._stackless(pend[0])  # the next record of its CPU came first: none was written
                    del self._pending[cpu]
                if self.userstack:
                    self._pending[cpu] = [ev, False]
                else:
                    ready.append(ev)
        if drained:
            for cpu in list(self._pending):
                pend = self._pending[cpu]
                if pend[1] or not self.userstack:
                    ready.append(pend[0])
                    self._stackless(pend[0])
                    del self._pending[cpu]
                else:
                    pend[1] = True  # its stack may not be committed yet
        return self._give()

    def _stackless(self, ev: dict) -> None:
        """*ev* is given out without the user stack the instance was to record with it."""
        self.stackless += 1
        ev["ustack_missing"] = True

    def _give(self) -> List[dict]:
        if not self._ready:
            return []
        self._ready.sort(key=_ORDER)
        if self._pending:
            first = min(p[0]["ts"] for p in self._pending.values())
            i = 0
            while i < len(self._ready) and self._ready[i]["ts"] < first:
                i += 1
            out, self._ready = self._ready[:i], self._ready[i:]
        else:
            out, self._ready = self._ready, []
        for e in out:
            e.pop("seq", None)
        return out

    @property
    def holding(self) -> bool:
        return bool(self._pending or self._ready)

    @property
    def bad(self) -> int:
        return self.d.bad

    def flush(self) -> List[dict]:
        for p in self._pending.values():
            self._ready.append(p[0])
            self._stackless(p[0])
        self._pending = {}
        return self._give()
