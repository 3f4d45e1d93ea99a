"""
/proc/PID: the language runtime behind a signal handler
-------------------------------------------------------
Read for a process that catches a fatal signal (``SigCgt``): what the table of
:mod:`coredoctor.runtimes` needs to say what the handler does. The record
(``processes[].runtime`` in the snapshot)::

    {"markers": ["section:.go.buildinfo", "map:libjvm.so", ...],   -- only the table's markers
     "env": {"GOTRACEBACK": "crash", ...},  -- only the variables the table names, each value
                                                at most runtimes.ENV_MAX characters
     "env_known": bool,                     -- /proc/PID/environ could be read
     "argv": ["-XX:-CreateCoredumpOnCrash", ...],  -- only the words the table names
     "error": why the executable could not be read, or null}

Environ and argv are hostile (any user sets them): nothing but the named variables and words is
kept, each bounded. The executable is read through ``/proc/PID/exe`` (the file the process
runs, even if deleted or in another mount namespace); a mapped object is matched by the file
name of its path in ``/proc/PID/maps`` (its soname stem: ``libjvm.so``, ``libpython3...``).
"""

import os
import signal as _signal
from typing import Any, Dict, List, Optional

from coredoctor import elf, runtimes
from coredoctor.errors import ProcessGone
from coredoctor.snapshot.proc import base as _base

__all__ = ["catches_fatal", "read_runtime", "parse_environ", "map_markers"]

_ENV_READ = 1 << 20     # /proc/PID/environ read at most this much (ARG_MAX-sized stacks exist)
_MAPS_READ = 8 << 20    # a JVM has thousands of mappings

_FATAL_NOS = [getattr(_signal, s) for s in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT")
              if hasattr(_signal, s)]


def catches_fatal(caught_hex: Optional[str]) -> bool:
    """Does a ``SigCgt`` mask include a fatal signal (this machine's numbering)?"""
    try:
        mask = int(caught_hex or "0", 16)
    except ValueError:
        return False
    return any(mask >> (n - 1) & 1 for n in _FATAL_NOS)


def parse_environ(raw: bytes, names: Any = runtimes.ENV_NAMES) -> Dict[str, str]:
    """The named variables of a NUL-separated environment block; of duplicates the first is
    kept (glibc's getenv() and Go's runtime gogetenv() return the first); values cut to
    :data:`runtimes.ENV_MAX` characters. Nothing else is kept."""
    want = set(names)
    out: Dict[str, str] = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if not sep:
            continue
        key = k.decode("utf-8", "replace")
        if key in want and key not in out:
            out[key] = v.decode("utf-8", "replace")[:runtimes.ENV_MAX]
    return out


def map_markers(maps_text: str) -> List[str]:
    """``map:STEM`` markers of the table found among the mapped files of a /proc/PID/maps text."""
    stems = [m[4:] for m in runtimes.MARKERS if m.startswith("map:")]
    any_stem = tuple(stems)
    found = set()
    for line in maps_text.splitlines():
        i = line.find("/")
        if i < 0:
            continue
        name = line[i:].rsplit("/", 1)[-1]
        if not name.startswith(any_stem):  # most mappings match none (one test, in C)
            continue
        for stem in stems:
            if name.startswith(stem):
                found.add("map:" + stem)
    return sorted(found)


def _raw(path: str, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        out = b""
        while len(out) < size:
            chunk = os.read(fd, min(65536, size - len(out)))
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(fd)


#: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of an executable -> its markers: the
#: workers of one program share one file, read once while coredoctor runs (a write to the file
#: changes its mtime and ctime, and ctime cannot be set back: a changed file has another key)
_EXE_MARKERS: Dict[Any, List[str]] = {}


def _exe_markers(fd: int, secs: List[str], syms: List[str], notes: List[str], suffixes: List[str]) -> List[str]:
    """:func:`coredoctor.elf.markers` of the open executable *fd*, once per file."""
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, tuple(secs), tuple(syms),
           tuple(notes), tuple(suffixes))
    got = _EXE_MARKERS.get(key)
    if got is None:
        if len(_EXE_MARKERS) > 1024:
            _EXE_MARKERS.clear()
        got = _EXE_MARKERS[key] = list(elf.markers(fd, secs, syms, notes, suffixes))
    return got


def read_runtime(pid: int, comm: Optional[str] = None, base: Optional[str] = None) -> Dict[str, Any]:
    """The runtime record of *pid* (see the module's docstring). Raises
    ProcessGone when the process is gone; a file that cannot be read leaves its part empty."""
    r = base or _base.root()
    d = f"{r}/{pid}"
    rec: Dict[str, Any] = {"markers": [], "env": {}, "env_known": False, "argv": [], "error": None}
    want = runtimes.MARKERS
    secs = [m[8:] for m in want if m.startswith("section:")]
    syms = [m[7:] for m in want if m.startswith("symbol:")]
    notes = [m[5:] for m in want if m.startswith("note:")]
    suffixes = [m[7:] for m in want if m.startswith("suffix:")]
    found = set()
    try:
        fd = os.open(f"{d}/exe", os.O_RDONLY | os.O_CLOEXEC)
        try:
            found.update(_exe_markers(fd, secs, syms, notes, suffixes))
        finally:
            os.close(fd)
    except elf.NotAnElf as e:
        rec["error"] = str(e)[:200]
    except OSError as e:
        rec["error"] = os.strerror(e.errno or 0)
    try:  # maps is a seq_file: one read() returns a page of it, so read to the end
        found.update(map_markers(_raw(f"{d}/maps", _MAPS_READ).decode("utf-8", "replace")))
    except OSError:
        pass
    try:
        rec["env"] = parse_environ(_raw(f"{d}/environ", _ENV_READ))
        rec["env_known"] = True
    except OSError:
        pass
    try:
        argv = _raw(f"{d}/cmdline", _ENV_READ).split(b"\0")
        rec["argv"] = runtimes.argv_words([w.decode("utf-8", "replace") for w in argv])
    except OSError:
        pass
    rec["markers"] = sorted(found)
    if not os.path.exists(d):
        raise ProcessGone(pid, comm)
    return rec
