"""
tracefs
-------
A private tracefs instance (``instances/coredoctor-<pid>``, Documentation/trace/ftrace.rst
"Instances") with kernel-side filters, so that only the watched processes' events are
recorded and nothing of the host's own tracing changes.

- tracefs is found in /proc/self/mounts (``/sys/kernel/tracing``, or ``tracing/`` under a
  debugfs mount); when it is nowhere, it is mounted at /sys/kernel/tracing and unmounted again
  by :meth:`Instance.close`.
- processes: ``set_event_pid`` with ``options/event-fork`` (children follow in the kernel), or,
  for names (processes not started yet), an event filter ``comm == "NAME"`` on every event
  OR'ed with ``common_pid == N`` for the descendants seen so far.
- ``options/userstacktrace`` adds user-space return addresses to each event;
  ``options/record-tgid`` the thread-group id.
- instances left by a killed tracer (``coredoctor-<pid>`` whose pid is dead) are removed by
  :func:`remove_stale` at the start of the next run.
"""

import errno
import os
import re
import select
import subprocess
import time
from typing import Any, Dict, Iterable, List, Literal, Optional, Tuple

__all__ = ["find_tracefs", "Instance", "remove_stale", "PREFIX", "SYSCALLS", "TRACEPOINTS", "TracefsError"]

PREFIX = "coredoctor-"
DEFAULT_PATH = "/sys/kernel/tracing"

#: syscalls that change credentials or dumpability (enter and exit events are enabled)
SYSCALLS = ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid",
            "setgroups", "capset", "prctl", "execve", "execveat", "unshare", "setns")
#: syscalls that change other inputs of the gate model (limits, umask, cwd): only their entry is
#: recorded, to re-read the process so a prediction is fresh when it dies
INVALIDATORS = ("prlimit64", "setrlimit", "umask", "chdir", "fchdir")
#: tracepoints: process lifetime and signals
TRACEPOINTS = ("sched/sched_process_fork", "sched/sched_process_exec", "sched/sched_process_exit",
               "signal/signal_deliver", "signal/signal_generate")
#: host mode only (``coredoctor watch``): a task moved into a cgroup (its service or container,
#: known from the event even when the task is gone before /proc could be read)
HOST_TRACEPOINTS = ("cgroup/cgroup_attach_task",)
#: kernel-side pre-filters on single events (fewer events for the common noisy cases)
EVENT_FILTERS = {
    # PR_SET_DUMPABLE, PR_SET_KEEPCAPS and PR_SET_NAME only (the rest are frequent and beside
    # the point; PR_SET_NAME keeps the tracker's comm true)
    "syscalls/sys_enter_prctl": "option == 4 || option == 8 || option == 15",
    # fatal-by-default or core-dumping signals only (not SIGCHLD/SIGWINCH/...)
    "signal/signal_generate": "sig == 9",
    # prlimit64(pid, resource, NULL, old): a read, not a change
    "syscalls/sys_enter_prlimit64": "new_rlim != 0",
}


class TracefsError(Exception):
    pass


def _mounts() -> List[List[str]]:
    try:
        with open("/proc/self/mounts") as f:
            return [line.split() for line in f]
    except OSError:
        return []


def find_tracefs() -> Optional[str]:
    """Path of a mounted tracefs, or None."""
    for fields in _mounts():
        if len(fields) >= 3 and fields[2] == "tracefs":
            return fields[1].replace("\\040", " ")
    for fields in _mounts():
        if len(fields) >= 3 and fields[2] == "debugfs" and os.path.isdir(os.path.join(fields[1], "tracing",
                                                                                        "instances")):
            return os.path.join(fields[1], "tracing")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def remove_stale(root: str) -> List[str]:
    """Remove ``coredoctor-<pid>`` instances whose pid is dead; returns their names."""
    removed: List[str] = []
    d = os.path.join(root, "instances")
    try:
        names = os.listdir(d)
    except OSError:
        return removed
    for name in names:
        m = re.fullmatch(re.escape(PREFIX) + r"(\d+)", name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        try:
            os.rmdir(os.path.join(d, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Instance:
    """One private instance; use as a context manager (removed on exit, also on exceptions)."""

    def __init__(self, root: Optional[str] = None, name: Optional[str] = None, buffer_kb: int = 4096,
                 userstack: bool = True, mount_path: str = DEFAULT_PATH) -> None:
        self.mounted: Optional[str] = None
        found = root or find_tracefs()
        if found is None:
            found = self._mount(mount_path)
        self.root: str = found
        self.stale_removed = remove_stale(self.root)
        self.name = name or f"{PREFIX}{os.getpid()}"
        self.path = os.path.join(self.root, "instances", self.name)
        self.fd: Optional[int] = None
        self.missing: List[str] = []
        self.enabled: List[str] = []
        self.names: List[str] = []
        self.pids: List[int] = []
        self.mode: Optional[str] = None
        self.exclude: List[int] = []
        self.extra: List[str] = []
        try:
            os.mkdir(self.path)
        except FileExistsError:
            raise TracefsError(f"tracefs instance {self.path} already exists")
        except OSError as e:
            self._unmount()
            raise TracefsError(f"cannot create a tracefs instance in {self.root}/instances: {e.strerror}")
        try:
            self._write("buffer_size_kb", str(buffer_kb))
            self._write("tracing_on", "0")
            self.options: Dict[str, bool] = {}
            for opt, val in (("record-tgid", 1), ("event-fork", 1), ("userstacktrace", 1 if userstack else 0),
                             ("overwrite", 0), ("sym-userobj", 0)):
                self.options[opt] = self._option(opt, val)
        except BaseException:
            self.close()
            raise

    # --- plumbing ---------------------------------------------------------------------------
    def _mount(self, path: str) -> str:
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tracefs", "nodev", path], capture_output=True, text=True)
        if r.returncode != 0:
            raise TracefsError(f"tracefs is not mounted and mounting it at {path} failed: "
                               f"{(r.stderr or r.stdout).strip()}")
        self.mounted = path
        return path

    def _unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", self.mounted], capture_output=True)
            self.mounted = None

    def _write(self, rel: str, value: str, append: bool = False) -> None:
        fd = os.open(os.path.join(self.path, rel), os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
        try:
            os.write(fd, value.encode() if value else b"\n")
        finally:
            os.close(fd)

    def _read(self, rel: str) -> str:
        with open(os.path.join(self.path, rel)) as f:
            return f.read()

    def _option(self, opt: str, val: int) -> bool:
        try:
            self._write(f"options/{opt}", str(val))
            return True
        except OSError:
            return False

    def exists(self, event: str) -> bool:
        return os.path.isdir(os.path.join(self.path, "events", event))

    # --- setup ------------------------------------------------------------------------------
    def event_list(self) -> List[str]:
        evs = []
        for s in SYSCALLS:
            for kind in ("enter", "exit"):
                evs.append(f"syscalls/sys_{kind}_{s}")
        evs += [f"syscalls/sys_enter_{s}" for s in INVALIDATORS]
        return evs + list(TRACEPOINTS) + list(self.extra)

    def setup(self, pids: Iterable[int] = (), names: Iterable[str] = (), host: bool = False,
              exclude: Iterable[int] = ()) -> None:
        """Enable the events for *pids* (followed by the kernel with event-fork) or, when *names*
        are given, for processes of those names (and *pids*) by event filter. *host*: every
        process of the host (``coredoctor watch``), but the *exclude* pids (the watcher itself),
        by event filter; the per-event pre-filters apply in every mode."""
        self.names = list(names)
        self.pids = sorted(set(pids))
        self.exclude = sorted(set(exclude))
        self.mode = "host" if host else "filter" if self.names else "pid"
        self.extra = list(HOST_TRACEPOINTS) if host else []
        for ev in self.event_list():
            if not self.exists(ev):
                self.missing.append(ev)
        if self.mode in ("pid", "host"):
            self._write("set_event_pid", " ".join(map(str, self.pids)) if self.pids else "")
        self._apply_filters()
        for ev in self.event_list():
            if ev in self.missing:
                continue
            self._write(f"events/{ev}/enable", "1")
            self.enabled.append(ev)
        self._write("tracing_on", "1")

    def _filter_for(self, ev: str) -> str:
        parts: List[str] = []
        if self.mode == "filter":
            who = [f"comm == {_quote(n[:15])}" for n in self.names]
            who += [f"common_pid == {p}" for p in self.pids[-200:]]
            parts.append("(" + " || ".join(who) + ")")
        if self.mode == "host" and self.exclude:
            parts.append("(" + " && ".join(f"common_pid != {p}" for p in self.exclude) + ")")
        if ev in EVENT_FILTERS:
            parts.append("(" + EVENT_FILTERS[ev] + ")")
        return " && ".join(parts)

    def _apply_filters(self) -> None:
        for ev in self.event_list():
            if ev in self.missing:
                continue
            f = self._filter_for(ev)
            if f:
                try:
                    self._write(f"events/{ev}/filter", f)
                except OSError as e:
                    raise TracefsError(f"the kernel refused the filter {f!r} on {ev}: {e.strerror}")

    def follow(self, pids: Iterable[int]) -> None:
        """Name mode: also record these pids (children of watched processes)."""
        if self.mode != "filter":
            return
        new = [p for p in pids if p not in self.pids]
        if new:
            self.pids = sorted(set(self.pids) | set(new))
            self._apply_filters()

    def unfollow(self, pids: Iterable[int]) -> None:
        if self.mode != "filter":
            return
        gone = set(pids) & set(self.pids)
        if gone:
            self.pids = [p for p in self.pids if p not in gone]
            self._apply_filters()

    # --- reading ----------------------------------------------------------------------------
    def open_pipe(self, wake_fd: Optional[int] = None) -> None:
        self.fd = os.open(os.path.join(self.path, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)
        if wake_fd is not None:
            self._poll.register(wake_fd, select.POLLIN)

    def _events_file(self, rel: str) -> Optional[str]:
        """A file under events/ of this instance, else of the top level (the formats and page
        headers are the same for every instance)."""
        for base in (self.path, self.root):
            try:
                with open(os.path.join(base, "events", rel)) as f:
                    return f.read()
            except OSError:
                continue
        return None

    def raw_decoder(self) -> Tuple[Any, Any]:
        """The decoder for this instance's ``per_cpu/cpuN/trace_pipe_raw`` pages, from the
        kernel's own header and format files: ``(decoder, notices)``, or ``(None, reason)`` when
        binary reading is not possible here (a file missing or not understood)."""
        from coredoctor.trace import raw
        if "raw" in os.environ.get("COREDOCTOR_DISABLE", "").split(","):
            return None, "binary reading switched off (COREDOCTOR_DISABLE=raw)"
        hp = self._events_file("header_page")
        he = self._events_file("header_event")
        if hp is None or he is None:
            return None, "events/header_page or header_event is missing"
        try:
            header = raw.parse_header_page(hp)
            hev = raw.parse_header_event(he)
        except raw.DecodeError as e:
            return None, f"the ring-buffer page header is not understood ({e})"
        try:
            with open(os.path.join(self.path, "buffer_subbuf_size_kb")) as f:  # 6.8+: sub-buffers
                sub = int(f.read().strip()) * 1024
            if sub != header.page_size:
                header.data_size = sub - header.data_off
                header.page_size = sub
        except (OSError, ValueError):
            pass
        cpus = self._raw_cpus()
        if not cpus:
            return None, "per_cpu/cpuN/trace_pipe_raw is missing"
        formats: Dict[int, Any] = {}
        notes: List[str] = []
        for ev in self.enabled:
            text = self._events_file(f"{ev}/format")
            try:
                if text is None:
                    raise raw.DecodeError("no format file")
                fm = raw.parse_format(text, ev.split("/")[0])
            except raw.DecodeError as e:
                notes.append(f"{ev}: its format is not understood ({e}): not traced")
                continue
            formats[fm.id] = fm
        stack_id = None
        if self.options.get("userstacktrace"):
            text = self._events_file("ftrace/user_stack/format")
            try:
                if text is None:
                    raise raw.DecodeError("no format file")
                fm = raw.parse_format(text, "ftrace")
                if not any(x.name == "caller" and x.kind == "array" for x in fm.fields):
                    raise raw.DecodeError("no caller[] field")
                formats[fm.id] = fm
                stack_id = fm.id
            except raw.DecodeError as e:
                notes.append(f"ftrace/user_stack: {e}: events carry no user stacks")
        if not formats or stack_id is not None and len(formats) == 1:
            return None, "no event format is understood"
        return raw.Decoder(formats, header, hev, stack_id), notes

    def _raw_cpus(self) -> List[int]:
        base = os.path.join(self.path, "per_cpu")
        try:
            names = os.listdir(base)
        except OSError:
            return []
        return sorted(int(n[3:]) for n in names if re.fullmatch(r"cpu\d+", n)
                      and os.path.exists(os.path.join(base, n, "trace_pipe_raw")))

    def open_raw(self, page_size: int = 4096, wake_fd: Optional[int] = None) -> None:
        """Open every CPU's ``trace_pipe_raw`` (non-blocking). ``buffer_percent`` 0: a poll
        wakes as soon as any page has data (the default, 50, waits for half a buffer)."""
        try:
            self._write("buffer_percent", "0")
        except OSError:
            pass  # older kernels: poll wakes on any data anyway; the loop reads every 0.1 s
        self.raw_fds: Dict[int, int] = {}
        self._poll = select.poll()
        for cpu in self._raw_cpus():
            try:
                fd = os.open(os.path.join(self.path, "per_cpu", f"cpu{cpu}", "trace_pipe_raw"),
                             os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue  # an offline CPU
            self.raw_fds[cpu] = fd
            self._poll.register(fd, select.POLLIN)
        if not self.raw_fds:
            raise TracefsError("no per_cpu/cpuN/trace_pipe_raw could be opened")
        if wake_fd is not None:
            self._poll.register(wake_fd, select.POLLIN)
        self.page_size = page_size

    def read_raw(self, timeout: float = 0.1,
                 max_pages: int = 256) -> Tuple[List[Tuple[int, bytes]], bool]:
        """The pages the kernel has, all CPUs (at most *max_pages* per CPU), after waiting at
        most *timeout* seconds for the first. Returns ``([(cpu, page bytes), ...], drained)``;
        *drained*: every CPU's buffer was emptied (each read() gives one page)."""
        out: List[Tuple[int, bytes]] = []
        drained = True
        for attempt in (0, 1):
            for cpu, fd in self.raw_fds.items():
                for _ in range(max_pages):
                    try:
                        b = os.read(fd, self.page_size)
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno in (errno.EINTR, errno.EAGAIN):
                            break
                        raise
                    if not b:
                        break
                    out.append((cpu, b))
                else:
                    drained = False
            if out or attempt or not timeout:
                return out, drained
            try:
                self._poll.poll(int(timeout * 1000))
            except InterruptedError:
                pass
        return out, drained

    def read(self, timeout: float = 0.1, size: int = 1 << 20) -> Tuple[str, bool]:
        """Whatever the kernel has (up to *size* bytes), waiting at most *timeout* seconds for
        the first byte. Returns ``(text, drained)``; *drained* is True when the buffer was
        emptied. (trace_pipe hands out at most a page per read(): tracing_read_pipe().)"""
        if self.fd is None:
            self.open_pipe()
        fd = self.fd
        assert fd is not None  # (open_pipe() opened it, or raised)
        chunks: List[bytes] = []
        n = 0
        waited = False
        while n < size:
            try:
                b = os.read(fd, 65536)
            except BlockingIOError:
                if chunks or waited or not timeout:
                    return b"".join(chunks).decode("utf-8", "replace"), True
                waited = True
                try:
                    self._poll.poll(int(timeout * 1000))
                except InterruptedError:
                    pass
                continue
            if not b:
                return b"".join(chunks).decode("utf-8", "replace"), True
            chunks.append(b)
            n += len(b)
        return b"".join(chunks).decode("utf-8", "replace"), False

    def stats(self) -> Dict[str, int]:
        """Sum of the per-CPU ring-buffer counters: entries, overrun, commit overrun, dropped events."""
        tot = {"entries": 0, "overrun": 0, "commit_overrun": 0, "dropped_events": 0}
        base = os.path.join(self.path, "per_cpu")
        try:
            cpus = os.listdir(base)
        except OSError:
            return tot
        for c in cpus:
            try:
                with open(os.path.join(base, c, "stats")) as f:
                    for line in f:
                        k, _, v = line.partition(":")
                        k = k.strip().replace(" ", "_")
                        if k in tot:
                            tot[k] += int(v.split()[0])
            except (OSError, ValueError):
                continue
        return tot

    # --- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        try:
            if os.path.isdir(self.path):
                try:
                    self._write("tracing_on", "0")
                except OSError:
                    pass
            if self.fd is not None:
                try:
                    os.close(self.fd)
                except OSError:
                    pass
                self.fd = None
            for fd in getattr(self, "raw_fds", {}).values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.raw_fds = {}
            for i in range(50):
                try:
                    os.rmdir(self.path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        break
                    time.sleep(0.02)
        finally:
            self._unmount()

    def __enter__(self) -> "Instance":
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False
