"""
User-space stacks, symbolized
-----------------------------
Turns the return addresses that tracefs's ``options/userstacktrace`` records into
``setresuid+0x24 (libc.so.6)``, against the mappings of the process that made them.

The kernel's user stack (``ftrace_trace_userstack()``, kernel/trace/trace.c;
``stack_trace_save_user()``) holds raw addresses; ``options/sym-userobj`` resolves them at *read*
time (``seq_print_user_ip()``, kernel/trace/trace_output.c) as ``PATH[+0xOFF]`` where OFF is
relative to the start of the VMA (not the file), and only while the process still lives. So the
tracer records raw addresses and this module resolves them against the mappings it captured from
``/proc/PID/maps`` at attach, fork and exec:

    address -> mapping (start, end, pgoff: ``show_map_vma()``, fs/proc/task_mmu.c)
            -> file offset = address - start + pgoff
            -> link-time address through the ELF ``PT_LOAD`` that holds that offset
            -> nearest function symbol (.symtab, the build-id's debug file, else .dynsym)

Mapped files are read as the process sees them: through ``/proc/PID/map_files/START-END`` (the
mapped file itself, also when it was deleted or lives in another mount namespace), else
``/proc/PID/root/PATH`` or the host path, each only if its inode is the mapping's. A handle is kept
from :meth:`Symbolizer.capture` on, so a process that exited can still be symbolized. ELF files are
parsed once, lazily, and cached by (device, inode, mtime, size); each captured layout also caches
its resolved frames, so a stack seen before costs a few dictionary look-ups.

Pure parts (no I/O): :func:`parse_maps`, :func:`symbolize_maps`, :func:`parse_userobj`,
:func:`userobj_address`, :func:`format_frame`.
"""

import bisect
import os
import re
import struct

from coredoctor.elf import NotAnElf, read_elf

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Callable, Iterable, Mapping, Optional, Union

    from coredoctor.elf import Elf, SymbolTable

    #: a mapping of /proc/PID/maps, or a frame, as dicts
    Frame = dict[str, Any]
    #: each file's parsed ELF: by path, or from its mapping
    ElfSource = Union[Mapping[str, Optional[Elf]], Callable[[dict[str, Any]], Optional[Elf]]]

__all__ = ["Symbolizer", "parse_maps", "symbolize_maps", "parse_userobj", "userobj_address",
           "format_frame", "null_frame"]

DELETED = " (deleted)"  # d_path() of an unlinked file (fs/d_path.c)
DEBUG_DIR = "/usr/lib/debug"
_ELF_ERRORS = (OSError, NotAnElf, ValueError, struct.error)


def _hex(n: "Optional[int]") -> "Optional[str]":
    return None if n is None else f"{n:#x}"


def null_frame(addr: "Optional[int]") -> "Frame":
    """A frame for *addr* that says nothing is known about it."""
    return {"addr": _hex(addr), "module": None, "offset": None, "vaddr": None, "symbol": None,
            "symoff": None, "build_id": None}


# --- /proc/PID/maps ------------------------------------------------------------------------------

def parse_maps(text: "Union[str, bytes]") -> "list[dict[str, Any]]":
    """Parse ``/proc/PID/maps`` (str or bytes) into a list of mapping dicts, sorted by start:
    ``{"start", "end", "perms", "pgoff", "dev", "inode", "path"}`` (ints, except ``perms``,
    ``dev`` as ``"fe:00"`` and ``path``: the file as the kernel names it, ``" (deleted)"``
    included, ``[vdso]``/``[stack]``, or None for anonymous memory). JSON-serializable, so a
    snapshot can carry it. Malformed lines are skipped."""
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    out: "list[dict[str, Any]]" = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo, hi = parts[0].split("-", 1)
            m = {"start": int(lo, 16), "end": int(hi, 16), "perms": parts[1],
                 "pgoff": int(parts[2], 16), "dev": parts[3], "inode": int(parts[4]),
                 "path": parts[5].strip() if len(parts) == 6 and parts[5].strip() else None}
        except ValueError:
            continue
        out.append(m)
    out.sort(key=lambda m: m["start"])
    return out


def _is_file(m: "dict[str, Any]") -> bool:
    return bool(m["path"]) and m["path"].startswith("/") and m["inode"] != 0


def _find(maps: "list[dict[str, Any]]", starts: "list[int]", addr: int) -> "Optional[dict[str, Any]]":
    i = bisect.bisect_right(starts, addr) - 1
    if i >= 0 and addr < maps[i]["end"]:
        return maps[i]
    return None


def _frame(addr: int, m: "Optional[dict[str, Any]]", elf: "Optional[Elf]") -> "Frame":
    """One frame: *m* is the mapping holding *addr* (or None), *elf* its parsed
    :class:`coredoctor.elf.Elf` (or None)."""
    f = null_frame(addr)
    if m is None or not m["path"]:
        return f
    f["module"] = m["path"]
    offset = addr - m["start"] + m["pgoff"]
    f["offset"] = _hex(offset)
    if elf is None or not elf.supported:
        return f
    f["build_id"] = elf.build_id
    vaddr = elf.offset_to_vaddr(offset)
    f["vaddr"] = _hex(vaddr)
    if vaddr is not None and elf.symbols is not None:
        hit = elf.symbols.lookup(vaddr)
        if hit:
            f["symbol"], f["symoff"] = hit[0], _hex(hit[1])
    return f


def _addr(a: "Union[int, str]") -> int:
    return int(a, 16) if isinstance(a, str) else int(a)


def symbolize_maps(maps: "Iterable[dict[str, Any]]", addrs: "Iterable[Union[int, str]]",
                   elves: "Optional[ElfSource]" = None) -> "list[Frame]":
    """Symbolize *addrs* (ints or ``"0x.."`` strings) against a recorded *maps* list (as
    :func:`parse_maps` returns). *elves*: ``{path: Elf}`` or a callable ``mapping -> Elf|None``
    giving each file's parsed ELF; without it only module and offset are filled in. Pure."""
    maps = sorted(maps, key=lambda m: m["start"])
    starts = [m["start"] for m in maps]
    get: "Callable[[dict[str, Any]], Optional[Elf]]"
    if elves is None:
        get = lambda m: None  # noqa: E731
    elif callable(elves):
        get = elves
    else:
        get = lambda m: elves.get(m["path"])  # noqa: E731
    out: "list[Frame]" = []
    for a in addrs:
        addr = _addr(a)
        m = _find(maps, starts, addr)
        out.append(_frame(addr, m, get(m) if m is not None and _is_file(m) else None))
    return out


# --- tracefs sym-userobj ---------------------------------------------------------------------------

_USEROBJ = re.compile(r"^(?:=>\s*)?(?:(?P<path>.+?)\[\+0x(?P<off>[0-9a-fA-F]+)\])?\s*(?:<(?P<addr>[0-9a-fA-F]+)>)?$")


def parse_userobj(text: str) -> "Optional[dict[str, Any]]":
    """Parse one user-stack entry as tracefs prints it (``seq_print_user_ip()``):
    ``/lib/x86_64-linux-gnu/libc.so.6[+0xaf884]``, optionally followed by `` <00007f43...>``
    (``options/sym-addr``), or only `` <00007f43...>`` (no sym-userobj, or the process was gone
    when the trace was read). A leading ``=>`` is allowed. Returns ``{"path", "vma_offset",
    "addr"}`` (ints or None; ``vma_offset`` counts from the start of the VMA, not the file), or
    None for anything else (``??``)."""
    m = _USEROBJ.match(text.strip())
    if not m or not (m.group("path") or m.group("addr")):
        return None
    return {"path": m.group("path"),
            "vma_offset": int(m.group("off"), 16) if m.group("off") else None,
            "addr": int(m.group("addr"), 16) if m.group("addr") else None}


def userobj_address(entry: "Mapping[str, Any]", maps: "Iterable[dict[str, Any]]") -> "Optional[int]":
    """The address of a parsed sym-userobj *entry*: its ``<addr>`` when printed, else the start
    of the one executable mapping of that path plus the VMA offset (a return address lies in
    executable memory). None when that is ambiguous or the path is not mapped. Pure."""
    if entry.get("addr") is not None:
        return entry["addr"]
    path, off = entry.get("path"), entry.get("vma_offset")
    if path is None or off is None:
        return None
    cands = [m for m in maps if m["path"] in (path, path + DELETED) and "x" in m["perms"]
             and off < m["end"] - m["start"]]
    return cands[0]["start"] + off if len(cands) == 1 else None


def format_frame(frame: "Mapping[str, Any]") -> str:
    """``setresuid+0x24 (libc.so.6)``; ``0x7f.. (prog+0x129f)`` without a symbol; the bare
    address outside any mapping."""
    mod = frame.get("module")
    if not mod:
        return frame["addr"]
    deleted = mod.endswith(DELETED)
    base = os.path.basename(mod[:-len(DELETED)] if deleted else mod) + (DELETED if deleted else "")
    if frame.get("symbol"):
        return f"{frame['symbol']}+{frame['symoff']} ({base})"
    return f"{frame['addr']} ({base}+{frame['offset']})"


# --- live processes ------------------------------------------------------------------------------

class _File:
    """One mapped file (by device and inode): a handle held from capture, the parsed ELF later;
    where no handle could be kept, the pid and mapping to open it from while that pid lives."""

    __slots__ = ("fd", "elf", "parsed", "pid", "mapping")

    def __init__(self, fd: "Optional[int]", pid: int, mapping: "dict[str, Any]") -> None:
        self.fd = fd
        self.elf: "Optional[Elf]" = None
        self.parsed = False
        self.pid = pid
        self.mapping = mapping


class _Layout:
    """One address-space layout (the bytes of /proc/PID/maps): shared by every pid whose maps
    are byte-identical (a fork child until it maps something), with a per-address frame cache."""

    __slots__ = ("raw", "maps", "starts", "files", "frames")

    def __init__(self, raw: bytes, maps: "list[dict[str, Any]]", files: "dict[int, _File]") -> None:
        self.raw = raw
        self.maps = maps
        self.starts = [m["start"] for m in maps]
        self.files = files      # index in maps -> _File, for file mappings
        self.frames: "dict[int, Frame]" = {}


class Symbolizer:
    """Symbolize user-space stacks of live (and recently exited) processes.

    ``capture(pid)`` at attach, fork and exec; ``symbolize(pid, addrs)`` any time after, also once
    the process has exited; ``forget(pid)`` when it is gone. Never raises for a vanished or
    unreadable process: the frames then carry nulls. ``close()`` releases the file handles.
    """

    def __init__(self, proc: str = "/proc", debug_dir: str = DEBUG_DIR, max_handles: int = 512,
                 max_layouts: int = 1024, use_map_files: bool = True) -> None:
        """*use_map_files* False skips ``/proc/PID/map_files`` (it needs CAP_SYS_ADMIN) and opens
        ``/proc/PID/root/PATH`` or the host path instead, each only if its inode is the
        mapping's: a replaced file then gives no symbols rather than wrong ones."""
        self.proc = proc
        self.use_map_files = use_map_files
        self.debug_dir = debug_dir
        self.max_handles = max_handles
        self.max_layouts = max_layouts
        self._pids: "dict[int, _Layout]" = {}
        self._layouts: "dict[bytes, _Layout]" = {}  # raw maps bytes -> _Layout
        self._files: "dict[tuple[str, int], _File]" = {}  # (dev, inode) as maps shows them
        # (st_dev, st_ino, st_mtime_ns, st_size) -> Elf | None
        self._elves: "dict[tuple[int, int, int, int], Optional[Elf]]" = {}
        self._debug: "dict[str, Optional[SymbolTable]]" = {}  # build-id -> its debug file's .symtab
        self._handles = 0

    # -- the agreed interface --

    def capture(self, pid: int, parent: "Optional[int]" = None) -> bool:
        """Read ``/proc/PID/maps`` and hold handles to the files it maps. Cheap when the maps did
        not change since the last capture (of this pid or any other with the same layout): the
        cost is then the kernel's rendering of the maps file (about 1 us per mapping).
        Returns False when the process could not be read (gone).

        *parent*: for a fork child, the parent's pid: the child takes the parent's captured
        layout without reading anything (``dup_mmap()`` copies the address space as is); a later
        exec needs ``capture(pid)`` again. Addresses outside the captured layout make
        :meth:`symbolize` capture once more on its own (a library loaded since)."""
        if parent is not None and parent in self._pids:
            self._pids[pid] = self._pids[parent]
            return True
        try:
            with open(f"{self.proc}/{pid}/maps", "rb") as f:
                raw = f.read()
        except OSError:
            return False
        if not raw:  # a zombie, or a kernel thread: keep what was captured before
            return pid in self._pids
        cur = self._pids.get(pid)
        if cur is not None and cur.raw == raw:
            return True
        lay = self._layouts.get(raw)
        if lay is None:
            lay = self._new_layout(pid, raw)
            if len(self._layouts) >= self.max_layouts:
                self._layouts.pop(next(iter(self._layouts)))
            self._layouts[raw] = lay
        self._pids[pid] = lay
        return True

    def symbolize(self, pid: int, addrs: "Iterable[Union[int, str]]") -> "list[Frame]":
        """``[{"addr", "module", "offset", "vaddr", "symbol", "symoff", "build_id"}]`` for
        *addrs* (ints or ``"0x.."``), against the layout captured for *pid* (captured now if it
        never was). ``offset`` is the file offset, ``vaddr`` the ELF's link-time address (what
        ``addr2line -e MODULE`` takes). Unknown parts are None."""
        lay = self._pids.get(pid)
        if lay is None and self.capture(pid):
            lay = self._pids.get(pid)
        out = []
        for a in addrs:
            try:
                addr = _addr(a)
            except (TypeError, ValueError):
                out.append(null_frame(None))
                continue
            if lay is None:
                out.append(null_frame(addr))
                continue
            f = lay.frames.get(addr)
            if f is None:
                f = self._resolve(lay, addr)
                if _find(lay.maps, lay.starts, addr) is None and self.capture(pid) \
                        and self._pids[pid] is not lay:
                    lay = self._pids[pid]  # mapped since the capture (dlopen): look again
                    f = lay.frames.get(addr) or self._resolve(lay, addr)
                if len(lay.frames) < 65536:
                    lay.frames[addr] = f
            out.append(dict(f))
        return out

    def forget(self, pid: int) -> None:
        """Drop what was captured for *pid* (its layout stays cached for other pids)."""
        self._pids.pop(pid, None)

    # -- more --

    def maps(self, pid: int) -> "Optional[list[dict[str, Any]]]":
        """The mappings captured for *pid* (a list as :func:`parse_maps` returns), or None."""
        lay = self._pids.get(pid)
        return None if lay is None else lay.maps

    def close(self) -> None:
        """Close every held file handle (parsed symbol tables stay cached)."""
        for f in self._files.values():
            if f.fd is not None:
                os.close(f.fd)
                f.fd = None
        self._files.clear()
        self._handles = 0

    def __enter__(self) -> "Symbolizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --

    def _new_layout(self, pid: int, raw: bytes) -> _Layout:
        # self._files holds, per (dev, inode) as maps shows them, either an open handle (which
        # pins the inode: the number cannot name another file meanwhile) or nothing parsed yet.
        # A file whose handle is closed leaves the table; layouts that use it keep what they had.
        maps = parse_maps(raw)
        files: "dict[int, _File]" = {}
        for i, m in enumerate(maps):
            if not _is_file(m):
                continue
            key = (m["dev"], m["inode"])
            f = self._files.get(key)
            if f is None:
                f = self._files[key] = _File(None, pid, m)
            if f.fd is None:
                f.pid, f.mapping = pid, m  # the newest process is the likeliest to live on
                if self._handles >= self.max_handles:
                    self._evict(key)
                if self._handles < self.max_handles:
                    f.fd = self._open(pid, m)
                    if f.fd is not None:
                        self._handles += 1
            files[i] = f
        return _Layout(raw, maps, files)

    def _evict(self, keep: "tuple[str, int]") -> None:
        """Close the oldest held handle (not *keep*'s) and drop its file from the table."""
        for key, f in self._files.items():
            if key != keep and f.fd is not None:
                os.close(f.fd)
                f.fd = None
                self._handles -= 1
                del self._files[key]
                return

    def _open(self, pid: int, m: "dict[str, Any]") -> "Optional[int]":
        """A read-only descriptor on the file mapped at *m*, as process *pid* sees it."""
        if self.use_map_files:
            try:
                return os.open(f"{self.proc}/{pid}/map_files/{m['start']:x}-{m['end']:x}",
                               os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
        path = m["path"][:-len(DELETED)] if m["path"].endswith(DELETED) else m["path"]
        for cand in (f"{self.proc}/{pid}/root{path}", path):
            try:
                fd = os.open(cand, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if os.fstat(fd).st_ino == m["inode"]:
                    return fd
            except OSError:
                pass
            os.close(fd)
        return None

    def _resolve(self, lay: _Layout, addr: int) -> "Frame":
        i = bisect.bisect_right(lay.starts, addr) - 1
        if i < 0 or addr >= lay.maps[i]["end"]:
            return null_frame(addr)
        m = lay.maps[i]
        f = lay.files.get(i)
        return _frame(addr, m, self._elf(f) if f is not None else None)

    def _elf(self, f: _File) -> "Optional[Elf]":
        if f.parsed:
            return f.elf
        f.parsed = True
        held = f.fd is not None
        fd = f.fd if held else self._open(f.pid, f.mapping)
        if fd is None:
            self._drop(f)
            return None
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if key in self._elves:
                f.elf = self._elves[key]
            else:
                try:
                    e = read_elf(fd)
                except _ELF_ERRORS:
                    e = None
                if e is not None and e.supported and e.build_id:
                    dbg = self._debug_symbols(e.build_id)
                    if dbg is not None:
                        e.symbols = dbg
                self._elves[key] = f.elf = e
        except OSError:
            f.elf = None
        finally:
            if not held:
                os.close(fd)
                self._drop(f)
        return f.elf

    def _drop(self, f: _File) -> None:
        """Take a file without a held handle out of the table (see _new_layout)."""
        for key, g in list(self._files.items()):
            if g is f:
                del self._files[key]

    def _debug_symbols(self, build_id: str) -> "Optional[SymbolTable]":
        """The .symtab of ``DEBUG_DIR/.build-id/xx/rest.debug`` when it exists and carries the
        same build-id (debuginfo packages such as libc6-dbg install these)."""
        if build_id in self._debug:
            return self._debug[build_id]
        tab = None
        path = os.path.join(self.debug_dir, ".build-id", build_id[:2], build_id[2:] + ".debug")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = None
        if fd is not None:
            try:
                d = read_elf(fd)
                if d.supported and d.build_id == build_id and d.symbols is not None \
                        and d.symbols.source == "symtab":
                    tab = d.symbols
                    tab.source = f"debug:{path}"
            except _ELF_ERRORS:
                tab = None
            finally:
                os.close(fd)
        self._debug[build_id] = tab
        return tab
