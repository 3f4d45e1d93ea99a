"""
Classic syslog files
--------------------
Crash lines in the files a syslog daemon writes (``/var/log/kern.log``, ``syslog``, ``messages``,
``daemon.log``) and their rotations (``.1``, ``.2.gz``, ``-20261124``, ``-20261124.gz``). Kernel lines
are classified by :mod:`.kmsg`, the lines of systemd, systemd-coredump and apport by
:mod:`.daemonlog`.

Files can be large (a busy host's kern.log, gigabytes): they are read in large binary chunks, and
only the lines that contain one of :data:`ANCHORS` -- literal strings that every pattern's match must
contain, derived from the patterns themselves -- are decoded and parsed.

Two line formats: RFC 3164 (``Nov 25 16:13:00 host ident[pid]: msg``, local time without a year: the
year is taken from the file's mtime, a line dated after the mtime belongs to the year before) and
RFC 3339 (rsyslog's ``RSYSLOG_FileFormat``: ``2026-11-25T16:13:00.123456+00:00 host ident[pid]: msg``).
"""

import datetime
import gzip
import os
import re
import sys
import time
import zlib
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Protocol, Sequence, Set, Tuple

if TYPE_CHECKING:
    import ctypes
    import io

if sys.version_info >= (3, 11):  # the regex parser: public as sre_parse before 3.11, re._parser since
    from re import _constants as _sre_c
    from re import _parser as _sre_p
else:  # pragma: no cover - Python < 3.11
    import sre_constants as _sre_c
    import sre_parse as _sre_p

from coredoctor.history import MAX_LINE as MAX_RECORD
from coredoctor.history import BadRecord, MAX_TIME, OnSkip, daemonlog, kmsg

__all__ = ["LOG_NAMES", "ANCHORS", "log_files", "read", "parse_line", "required_literals", "choose_anchors"]

#: the files a syslog daemon writes crash lines to: Debian/Ubuntu (kern.log, syslog, daemon.log),
#: RHEL/SUSE (messages)
LOG_NAMES = ("kern.log", "syslog", "messages", "daemon.log")
KERNEL_LOG = "kern.log"  # the log of facility kern only

CHUNK = 8 << 20  # bytes read at a time
MAX_LINE = 1 << 20  # a longer "line" (no newline in a MiB: not a syslog file) is cut, to bound memory


# -- anchors --------------------------------------------------------------------------------------

_MAX_ALTS = 16  # alternatives followed through [Mm] and (?:a|b) before giving up on a run


def _minimal(alts: Iterable[str]) -> Tuple[str, ...]:
    """Drop alternatives that contain another: a line holding the longer one holds the shorter."""
    uniq = set(alts)
    return tuple(sorted(a for a in uniq if not any(b != a and b in a for b in uniq)))


def required_literals(regex: "str | re.Pattern[str]") -> List[Tuple[str, ...]]:
    """What every match of ``regex`` (a compiled pattern or its source) must contain, as a list of
    tuples of alternatives: each match contains at least one string of every tuple. Literal runs are
    followed through groups, small character classes (``[Mm]ain``) and alternations
    (``(?:1701|ANOM_ABEND)``); optional or repeated parts end a run."""
    if isinstance(regex, str):
        regex = re.compile(regex)
    if regex.flags & re.IGNORECASE:
        return []
    runs: List[Tuple[str, ...]] = []

    # (the items are the regex parser's (opcode, argument) pairs: sre_parse's own, untyped)
    def flush(cur: List[str]) -> List[str]:
        m = _minimal(cur)
        if m and all(m):
            runs.append(m)
        return [""]

    def lead(items: Any) -> Tuple[List[str], bool]:
        """The literal alternatives a sequence starts with, and whether that is all of it."""
        cur = [""]
        for op, av in items:
            if op is _sre_c.LITERAL:
                cur = [c + chr(av) for c in cur]
            elif op is _sre_c.IN and av and all(o is _sre_c.LITERAL for o, _ in av) and len(cur) * len(av) <= _MAX_ALTS:
                cur = [c + chr(x) for c in cur for _, x in av]
            elif op is _sre_c.SUBPATTERN and not av[1] & re.IGNORECASE:
                sub, whole = lead(av[-1])
                cur = [c + x for c in cur for x in sub] if len(cur) * len(sub) <= _MAX_ALTS else cur
                if not whole or len(cur) * len(sub) > _MAX_ALTS:
                    return cur, False
            elif op is _sre_c.AT:
                continue
            else:
                return cur, False
        return cur, True

    def walk(items: Any, cur: List[str]) -> List[str]:
        for op, av in items:
            if op is _sre_c.LITERAL:
                cur = [c + chr(av) for c in cur]
            elif op is _sre_c.AT:  # ^ and $ match no characters: a run goes on across them
                continue
            elif op is _sre_c.SUBPATTERN and not av[1] & re.IGNORECASE:  # (?i:...) is not literal
                cur = walk(av[-1], cur)
            elif op in (_sre_c.IN, _sre_c.BRANCH):
                alts, whole = lead([(op, av)]) if op is _sre_c.IN else (None, None)
                if op is _sre_c.BRANCH:
                    leads = [lead(b) for b in av[1]]
                    alts = [x for a, _ in leads for x in a]
                    whole = all(w for _, w in leads)
                if alts is None or len(cur) * len(alts) > _MAX_ALTS or (op is _sre_c.IN and alts == [""]):
                    cur = flush(cur)
                    continue
                cur = [c + x for c in cur for x in alts]
                if not whole:
                    cur = flush(cur)
            else:
                cur = flush(cur)
        return cur

    flush(walk(_sre_p.parse(regex.pattern), [""]))
    return runs


def _common_substring(strs: Sequence[str]) -> str:
    """The longest string that is part of every one of ``strs``."""
    first = min(strs, key=len)
    for n in range(len(first), 0, -1):
        for k in range(len(first) - n + 1):
            sub = first[k:k + n]
            if all(sub in x for x in strs):
                return sub
    return ""


def _search_cost(literal: str) -> float:
    """The relative time of one search pass for ``literal`` through a buffer: a fixed part and a part
    that shrinks with its length (skip-based search). Fitted to bytes.find() and memmem() over a
    syslog-format kernel log (bench/crashlog_scan.py): 6 bytes ~3.5x, 40 bytes ~1.2x the fixed part."""
    return 1.0 + 32.0 / len(literal)


def choose_anchors(patterns: Sequence["kmsg.P | daemonlog.P"],
                   min_len: int = 8) -> Tuple[Tuple[str, ...], List["kmsg.P | daemonlog.P"]]:
    """A small set of literals such that every pattern's matches contain one of them.

    Candidates for a pattern are its required literals (:func:`required_literals`, tuples of
    alternatives) whose alternatives have at least ``min_len`` characters (else its longest one), the
    longest part common to a tuple's alternatives, and, for :mod:`.daemonlog` patterns, the ident it
    is logged under (a syslog line is only classified by them when it carries that ident). A pattern
    is covered when, for one of its candidates, every alternative contains a chosen anchor. Greedy:
    the candidate with the most newly covered patterns per cost of its search passes
    (:func:`_search_cost`: longer literals are found faster, and are rarer in the text) first.
    Returns (anchors, unanchored patterns)."""
    cands: List[List[Tuple[str, ...]]] = []
    unanchored: List["kmsg.P | daemonlog.P"] = []
    for p in patterns:
        runs = required_literals(p.regex)
        c = [r for r in runs if min(map(len, r)) >= min_len]
        if not c and runs:
            c = [max(runs, key=lambda r: min(map(len, r)))]
        for r in list(c):
            common = _common_substring(r) if len(r) > 1 else ""
            if len(common) >= min_len:
                c.append((common,))
        ident = getattr(p, "ident", None)  # (daemonlog's patterns have one, kmsg's none)
        if ident:
            c.append((ident,))
        if c:
            cands.append(c)
        else:
            unanchored.append(p)
    alts = {a for cs in cands for cand in cs for a in cand}
    contains = {a: frozenset(x for x in alts if a in x) for a in alts}  # anchor -> the strings it finds

    def covered(cs: List[Tuple[str, ...]], found: Set[str]) -> bool:
        return any(all(a in found for a in cand) for cand in cs)

    chosen: Set[str] = set()
    found: Set[str] = set()
    left = list(cands)
    while left:
        every = sorted({cand for cs in left for cand in cs})

        def score(cand: Tuple[str, ...]) -> float:
            f = found.union(*(contains[a] for a in cand))
            gain = sum(1 for cs in left if covered(cs, f))
            return gain / sum(_search_cost(a) for a in cand)
        best = max(every, key=score)
        chosen.update(best)
        found.update(*(contains[a] for a in best))
        left = [cs for cs in left if not covered(cs, found)]
    return tuple(sorted(chosen)), unanchored


_LAZY: Dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """``ANCHORS`` -- literal byte strings: a line that contains none of them cannot be a crash line
    (from the patterns of :mod:`.kmsg` and :mod:`.daemonlog`, worked out on first use) -- and
    ``_UNANCHORED``, the patterns without a literal to look for."""
    if name in ("ANCHORS", "_UNANCHORED"):
        if not _LAZY:
            strs, unanchored = choose_anchors(tuple(kmsg.PATTERNS) + tuple(daemonlog.PATTERNS))
            _LAZY.update(ANCHORS=tuple(a.encode() for a in strs), _UNANCHORED=unanchored)
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- lines ----------------------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}
_TAIL = r" (?P<host>\S+) (?P<ident>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?:(?: |$)(?P<msg>.*)$"
_RFC3164 = re.compile(r"^(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)" + _TAIL,
                      re.ASCII)
_RFC3339 = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)" + _TAIL,
                      re.ASCII)
_DMESG_PREFIX = re.compile(r"^\[\s*\d+\.\d+\]\s?", re.ASCII)
_FRACTION = re.compile(r"^(.{19})\.([0-9]+)(.*)$", re.ASCII)


class _Clock:
    """Seconds since the epoch for the timestamps of one file's lines: RFC 3164 local times get the
    year of the file's mtime, or the year before when that would put them after the mtime (the file
    spans a new year); mktime() once per hour of the file."""

    def __init__(self, mtime: Optional[float]) -> None:
        if mtime is not None and not 0 <= mtime < MAX_TIME:
            mtime = None  # an impossible mtime (touch -d, os.utime): the year is this one's
        self.mtime = mtime
        self.year = time.localtime(mtime if mtime is not None else time.time()).tm_year
        self.hours: Dict[Tuple[str, str, str], float] = {}

    def rfc3164(self, mon: str, day: str, h: str, m: str, s: str) -> Optional[float]:
        key = (mon, day, h)
        base = self.hours.get(key)
        if base is None:
            mo = _MONTHS.get(mon)
            if mo is None:
                return None
            try:
                tup = (self.year, mo, int(day), int(h), 0, 0, 0, 0, -1)
                base = time.mktime(tup)
                if self.mtime is not None and base > self.mtime + 86400:
                    base = time.mktime((self.year - 1,) + tup[1:])
            except (OverflowError, ValueError):
                return None
            self.hours[key] = base
        return base + int(m) * 60 + int(s)

    @staticmethod
    def rfc3339(ts: str) -> Optional[float]:
        t = ts.replace("Z", "+00:00").replace(" ", "T")
        if len(t) > 6 and t[-5] in "+-" and t[-3] != ":":  # +0000 (Python < 3.11 wants +00:00)
            t = t[:-2] + ":" + t[-2:]
        f = _FRACTION.match(t)
        if f:  # Python < 3.11 takes a fraction of 3 or 6 digits only
            t = f.group(1) + "." + (f.group(2) + "00000")[:6] + f.group(3)
        try:
            return datetime.datetime.fromisoformat(t).timestamp()  # naive: local time
        except (ValueError, OverflowError, OSError):  # no such day, or out of the platform's range
            return None


def parse_line(line: str, mtime: "float | None" = None, source: str = "syslog",
               clock: "_Clock | None" = None) -> "kmsg.Event | None":
    """Classify one syslog file line (str). ``mtime``: the file's mtime (the year of RFC 3164 lines);
    ``clock``: a :class:`_Clock` reused across the lines of one file."""
    m = _RFC3164.match(line)
    if m:
        when = (clock or _Clock(mtime)).rfc3164(*m.group("mon", "day", "h", "m", "s"))
    else:
        m = _RFC3339.match(line)
        if not m:
            return None
        when = _Clock.rfc3339(m.group("ts"))
    ident, msg, pid = m.group("ident", "msg", "pid")
    if when is not None and not 0 <= when < MAX_TIME:
        when = None
    if ident == "kernel" and pid is not None:
        # the kernel's lines carry no pid ("host kernel: ..."): "kernel[N]:" is a process that
        # tagged itself so (logger -t kernel -i); a crash line there is forged
        if daemonlog.parse_tagged(msg, when, source) is not None or kmsg.parse_line(msg, when) is not None:
            raise BadRecord(source, "a kernel crash line tagged kernel[PID]: written by a process, not the kernel")
        return None
    if ident == "kernel":
        if msg[:1] == "[":
            p = _DMESG_PREFIX.match(msg)
            if p:
                msg = msg[p.end():]
        # user space's own records in the kernel log (systemd-coredump writes there when there is no
        # journal), relayed by the syslog daemon as kernel lines: "kernel: systemd-coredump[N]: ..."
        e = daemonlog.parse_tagged(msg, when, source)
        if e is None:
            e = kmsg.parse_line(msg, when, source)
            if e is not None:
                e.setdefault("ref", e.get("source"))
                e["source"] = source
        if e is not None:
            e["_kernel"] = True  # tagged "kernel": see read() for which files may say so
    else:
        e = daemonlog.parse_message(ident, pid, msg, when, source=source)
    if e is not None:
        e["host"] = m.group("host")
        e.setdefault("unit", None)  # one shape for kernel and daemon events
        e.setdefault("dumped", None)
    return e


# -- files ----------------------------------------------------------------------------------------

_ROT = re.compile(r"^(?P<base>.+?)(?:\.(?P<n>\d+)|-(?P<date>\d{8}))?(?P<gz>\.gz)?$", re.S | re.ASCII)  # any name matches


def _rot_base(name: str) -> str:
    """The log a (rotated) file name belongs to: ``kern.log`` of ``kern.log.2.gz``."""
    m = _ROT.match(name)
    return m.group("base") if m else name  # (only "" does not match)


def _rotation_key(name: str) -> Tuple[int, str, int]:
    """Sort key, oldest first: dated rotations by date, then numbered ones from the highest number,
    then the live file."""
    m = _ROT.match(name)
    if m is None:  # (only "" does not match)
        return (2, "", 0)
    if m.group("date"):
        return (0, m.group("date"), 0)
    if m.group("n"):
        return (1, "", -int(m.group("n")))
    return (2, "", 0)


def log_files(root: str = "/", names: Sequence[str] = LOG_NAMES) -> List[str]:
    """The syslog files under ``root``/var/log, each log's rotations oldest first (the live file last)."""
    d = os.path.join(root, "var", "log")
    try:
        entries = os.listdir(d)
    except OSError:
        return []
    out: List[str] = []
    for name in names:
        mine = []
        for e in entries:
            m = _ROT.match(e)
            if m and m.group("base") == name and (m.group("n") or m.group("date") or not m.group("gz")):
                p = os.path.join(d, e)
                if os.path.isfile(p):
                    mine.append(e)
        out.extend(os.path.join(d, e) for e in sorted(mine, key=_rotation_key))
    return out


def _open(path: str) -> "gzip.GzipFile | io.BufferedReader":
    f = open(path, "rb")
    if f.read(2) == b"\x1f\x8b":
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb")
    f.seek(0)
    return f


def _libc_memmem() -> "Optional[Callable[..., Optional[int]]]":
    """glibc's memmem() through ctypes, or None. It finds a literal 2-3 times faster than
    bytes.find() (a shift table over pairs of bytes); ``COREDOCTOR_DISABLE=memmem`` turns it off."""
    if "memmem" in os.environ.get("COREDOCTOR_DISABLE", "").split(","):
        return None
    try:
        import ctypes
        f = ctypes.CDLL(None).memmem  # the C library the interpreter runs on
    except (ImportError, OSError, AttributeError):
        return None
    f.restype = ctypes.c_void_p
    f.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
    return f


_MEMMEM = _libc_memmem()


class _ChunkReader(Protocol):
    """What :func:`candidate_lines` reads from: a binary file or a GzipFile."""

    def readinto(self, __buffer: memoryview) -> int: ...


class _MemmemFinder:
    """``find(needle, start, end)`` like bytearray.find, by memmem() on the buffer's memory. Holds a
    buffer export: release() before the bytearray is resized."""

    def __init__(self, buf: bytearray) -> None:
        import ctypes
        self._view: "Optional[ctypes.Array[ctypes.c_char]]" = (ctypes.c_char * len(buf)).from_buffer(buf)
        self._base = ctypes.addressof(self._view)
        memmem = _MEMMEM
        assert memmem is not None  # (made only where there is one)
        self._memmem = memmem

    def find(self, needle: bytes, start: int, end: int) -> int:
        n = len(needle)
        if end - start < n:
            return -1
        r = self._memmem(self._base + start, end - start, needle, n)
        return r - self._base if r else -1

    def release(self) -> None:
        self._view = None


def candidate_lines(f: "_ChunkReader", chunk_size: int = CHUNK, anchors: Optional[Sequence[bytes]] = None,
                    memmem: bool = True) -> Iterator[bytes]:
    """The lines (bytes, without the newline) of binary file ``f`` that contain one of ``anchors``, in
    file order. Reads ``chunk_size`` bytes at a time into one buffer (memory: about the chunk size,
    up to :data:`MAX_LINE` more for a line longer than it; longer ones are cut); a line cut by a
    chunk's end is carried over to the next chunk. ``memmem``: search with the C library's memmem() when there is one (else bytes.find)."""
    if anchors is None:
        anchors = __getattr__("ANCHORS")
        if __getattr__("_UNANCHORED"):  # some pattern has no literal to look for: every line
            anchors = (b"",)
    if b"" in anchors:
        memmem = False
    buf = bytearray(chunk_size)
    finder = _MemmemFinder(buf) if memmem and _MEMMEM is not None else None
    have = 0  # bytes of buf in use (the carried-over start of a line, then what was read)
    try:
        while True:
            if have == len(buf) and have >= MAX_LINE:  # no syslog line is this long: cut it here
                piece = bytes(buf[:have]) + b"\n"
                yield from _find_lines(piece, len(piece), anchors, piece.find)
                have = 0
            elif have == len(buf):  # a line longer than the buffer: grow it
                if finder:
                    finder.release()
                buf.extend(bytearray(min(len(buf), MAX_LINE)))
                if finder:
                    finder = _MemmemFinder(buf)
            with memoryview(buf) as mv:
                n = f.readinto(mv[have:])
            if not n:
                if have:
                    last = bytes(buf[:have]) + b"\n"
                    yield from _find_lines(last, len(last), anchors, last.find)
                return
            have += n
            cut = buf.rfind(b"\n", 0, have) + 1
            if cut == 0:
                continue
            yield from _find_lines(buf, cut, anchors, finder.find if finder else buf.find)
            rest = have - cut
            buf[:rest] = buf[cut:have]  # the same size: allowed while exported
            have = rest
    finally:
        if finder:
            finder.release()


def _find_lines(buf: "bytes | bytearray", end: int, anchors: Iterable[bytes],
                find: Callable[[bytes, int, int], int]) -> Iterator[bytes]:
    starts: Set[int] = set()
    nl, rfind = buf.find, buf.rfind
    for a in anchors:
        i = find(a, 0, end)
        while i >= 0:
            s = rfind(b"\n", 0, i) + 1
            e = nl(b"\n", i, end)
            starts.add(s)
            i = find(a, e + 1, end)
    for s in sorted(starts):
        yield bytes(buf[s:nl(b"\n", s, end)])


def read(paths: "list[str] | None" = None, since: "float | None" = None, root: str = "/", chunk_size: int = CHUNK,
         skipped: "OnSkip | None" = None) -> "Iterator[kmsg.Event]":
    """Every classified crash line in ``paths`` (default: :func:`log_files` of ``root``), in file
    order. ``since`` (seconds since the epoch): rotated files last written before it are skipped
    whole, and events dated before it are left out. A line that a syslog daemon wrote to two logs
    (Debian's rsyslog sends kernel messages to both kern.log and syslog) is given once, from the
    first file read. Events: see :mod:`.kmsg` and :mod:`.daemonlog`; ``source`` is
    ``syslog:PATH``, ``time`` seconds since the epoch. ``skipped``: called with the
    :class:`~coredoctor.history.BadRecord` of each line left out (too long, a forged kernel
    line, a number no kernel prints)."""
    if paths is None:
        paths = log_files(root)
    logs = {_rot_base(os.path.basename(p)) for p in paths}
    seen: Optional[Dict[int, str]] = {} if len(logs) > 1 else None  # hash((time, line)) -> the log it was first found in
    # Only facility kern counts as the kernel. A file gets no facility per line, but kern.log gets
    # kern.* only (Debian's and Ubuntu's rsyslog.conf), and a syslog daemon turns the kern
    # facility of a message from its local socket into user (rsyslog's imuxsock, journald): any
    # process can log "kernel: x[1]: segfault at ..." at facility user into syslog or messages.
    # When kern.log is read too, a kernel line of another file that kern.log does not hold is
    # not the kernel's: it is given with ``untrusted`` (the why), and correlation takes no
    # refusal from it. (kern.log first, so that its lines are known when the others are read.)
    kern_only = KERNEL_LOG in logs
    if kern_only:
        paths = sorted(paths, key=lambda p: _rot_base(os.path.basename(p)) != KERNEL_LOG)
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if since is not None and st.st_mtime < since:
            continue
        log = _rot_base(os.path.basename(path))
        for e in daemonlog.linked(kmsg.join_task_context(_file_events(path, st.st_mtime, chunk_size, skipped))):
            kernel = e.pop("_kernel", False)
            if since is not None and e["time"] is not None and e["time"] < since:
                continue
            if seen is not None and seen.setdefault(hash((e["time"], e["line"])), log) != log:
                continue
            if kernel and kern_only and log != KERNEL_LOG:
                e["untrusted"] = (f"a kernel line in {log} that {KERNEL_LOG} does not hold: any process can "
                                  "log as 'kernel' at facility user; not the kernel's word")
            yield e


def _file_events(path: str, mtime: Optional[float], chunk_size: int,
                 skipped: Optional[OnSkip] = None) -> "Iterator[kmsg.Event]":
    source = "syslog:" + path
    clock = _Clock(mtime)
    try:
        with _open(path) as f:
            for raw in candidate_lines(f, chunk_size):
                if len(raw) > MAX_RECORD:
                    if skipped is not None:
                        skipped(BadRecord(source, f"a line of {len(raw)} bytes (no syslog daemon writes one "
                                                  f"over {MAX_RECORD})"))
                    continue
                try:
                    e = parse_line(raw.decode("utf-8", "replace"), mtime, source, clock)
                except BadRecord as err:
                    if skipped is not None:
                        skipped(err)
                    continue
                if e is not None:
                    yield e
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error):
        return  # unreadable, or a truncated or corrupt rotation: what was read counts
