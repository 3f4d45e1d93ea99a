"""
Crash history
-------------
Where crashes leave traces after the fact. Groundwork for ``coredoctor crashes``: :mod:`.kmsg`
reads and classifies the kernel log.

Everything read here can be written by someone else: a process names itself, ``logger`` writes any
line, anyone plants files in /var/crash or /tmp. Each parser returns records or raises
:class:`BadRecord` for one record; the readers skip that record, count it through a
:class:`Skips`, and go on with the next. Numbers are read by :func:`number`: ASCII digits only
(``str.isdigit()`` and ``int()`` accept '²' and '٣'), at most as many as the kernel's limit has.
"""

import math
import os
import stat
from typing import Callable, Dict, Iterator, List, Optional, Protocol, Tuple, overload

from coredoctor.errors import Error

__all__ = ["BadRecord", "Skips", "number", "signed", "finite_time", "DIGITS", "MAX_LINE", "MAX_TIME",
           "safe_dir_entries", "open_in_dir", "read_bounded", "lines_bounded"]

#: the most digits a number of each kind can have
DIGITS = {
    "pid": 7,      # PID_MAX_LIMIT 4194304 (4 * 1024 * 1024), include/linux/threads.h
    "signo": 2,    # _NSIG 64, include/uapi/asm-generic/signal.h
    "uid": 10,     # uid_t is u32: 4294967295, include/linux/uidgid_types.h
    "mode": 1,     # fs.suid_dumpable 0..2 (SUID_DUMP_ROOT 2), include/linux/sched/coredump.h
    "u64": 20,     # 18446744073709551615: sizes, rlimits (RLIM_INFINITY), usec, seq, audit serial
    "seconds": 12,  # seconds since the epoch, up to the year 33658: more is no real time
}
#: a longer record is no log line: printk's PRINTK_MESSAGE_MAX is 2048 (kernel/printk/internal.h),
#: journald's LineMax= defaults to 48K (journald.conf(5)), rsyslog's maxMessageSize to 8K
MAX_LINE = 64 << 10
#: times after this (2^33 s, year 2242) or before the epoch are no time a crash happened at
MAX_TIME = float(1 << 33)


class BadRecord(Error):
    """One record that cannot be read (a number too long, a field that is not what it must be).
    ``source``: where it was read (``syslog:/var/log/messages``); ``why``: what is wrong, in our
    words (never the attacker's text)."""

    #: bytes read when it was raised, where a reader charges a read budget (apport's reports)
    seen: int = 0

    def __init__(self, source: str, why: str) -> None:
        self.source, self.why = source, why
        super().__init__(f"{source}: {why}")


#: what a reader calls with each record it leaves out (:meth:`Skips.bind` makes one)
OnSkip = Callable[[BadRecord], None]


class Skips:
    """What a report skipped: records per source, and the first few reasons."""

    KEEP = 8

    def __init__(self) -> None:
        self.counts: Dict[str, int] = {}
        self.reasons: Dict[str, List[str]] = {}

    def add(self, name: str, err: BadRecord) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        r = self.reasons.setdefault(name, [])
        if len(r) < self.KEEP and err.why not in r:
            r.append(err.why)

    def bind(self, name: str) -> "OnSkip":
        """A callback ``(BadRecord) -> None`` that counts for *name*."""
        return lambda err: self.add(name, err)


def number(text: Optional[str], kind: str = "pid", source: str = "?", what: Optional[str] = None) -> int:
    """``text`` as an int: ASCII digits only, at most ``DIGITS[kind]`` of them (no sign: see
    :func:`signed`). Raises :class:`BadRecord`."""
    limit = DIGITS[kind]
    if type(text) is str and 0 < len(text) <= limit and text.isascii() and text.isdigit():
        return int(text)
    name = what or kind
    if not isinstance(text, str) or not text:
        raise BadRecord(source, f"{name} is empty or not text")
    if len(text) > limit:
        raise BadRecord(source, f"{name} has {len(text)} digits (at most {limit})")
    if not (text.isascii() and text.isdigit()):
        raise BadRecord(source, f"{name} is not a decimal number of ASCII digits")
    return int(text)


def signed(text: Optional[str], kind: str = "u64", source: str = "?", what: Optional[str] = None) -> int:
    """Like :func:`number`, with an optional leading '-' (apport's ``core limit -1``)."""
    if isinstance(text, str) and text.startswith("-"):
        return -number(text[1:], kind, source, what)
    return number(text, kind, source, what)


@overload
def finite_time(t: float, source: str = ..., what: str = ...) -> float: ...
@overload
def finite_time(t: None, source: str = ..., what: str = ...) -> None: ...
@overload
def finite_time(t: Optional[float], source: str = ..., what: str = ...) -> Optional[float]: ...


def finite_time(t: Optional[float], source: str = "?", what: str = "time") -> Optional[float]:
    """*t* when it can be a moment a crash happened at (finite, from the epoch to :data:`MAX_TIME`),
    None for None; else :class:`BadRecord`."""
    if t is None:
        return None
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or not 0 <= t < MAX_TIME:
        raise BadRecord(source, f"{what} is out of range")
    return float(t)


# -- files in world-writable places ------------------------------------------------------------

_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def safe_dir_entries(path: str) -> Tuple[Optional[int], List[str]]:
    """``(dirfd, names)`` of a directory opened without following a symlink (O_NOFOLLOW on the
    last component: /var/crash replaced by a link is not read), or ``(None, [])``. The caller
    closes *dirfd*."""
    try:
        fd = os.open(path, _NOFOLLOW_DIR)
    except OSError:
        return None, []
    try:
        return fd, sorted(os.listdir(fd))
    except OSError:
        os.close(fd)
        return None, []


def open_in_dir(dirfd: int, name: str) -> Tuple[int, os.stat_result]:
    """Open regular file *name* in *dirfd* for reading, never through a symlink (openat with
    O_NOFOLLOW; O_NONBLOCK so a planted FIFO does not hang us). Returns ``(fd, fstat)``; raises
    OSError (ELOOP for a symlink) or :class:`BadRecord` for what is not a regular file."""
    if "/" in name or name in ("", ".", ".."):
        raise BadRecord(name, "not a plain file name")
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dirfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadRecord(name, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_bounded(fd: int, limit: int) -> Tuple[bytes, bool]:
    """At most *limit* bytes from *fd*: ``(data, cut)`` -- *cut* when there was more."""
    chunks, have = [], 0
    while have <= limit:
        b = os.read(fd, min(1 << 20, limit + 1 - have))
        if not b:
            break
        chunks.append(b)
        have += len(b)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit


class LineReader(Protocol):
    """What :func:`lines_bounded` reads from: a binary file, a GzipFile, a pipe."""

    def readline(self, __size: int) -> bytes: ...


def lines_bounded(f: LineReader, limit: int = MAX_LINE) -> Iterator[Tuple[Optional[bytes], int]]:
    """The lines of binary file *f*, never holding more than *limit* bytes of one: ``(line,
    length)``, with *line* None for a longer one (its *length* is what was seen of it)."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            n = len(line)
            while True:  # skip the rest of the over-long line, in bounded pieces
                more = f.readline(limit + 1)
                n += len(more)
                if not more or more.endswith(b"\n"):
                    break
            yield None, n
            continue
        yield line, len(line)
