"""
The tracer's main loop
----------------------
Sets up the private tracefs instance, starts ``-- CMD`` (held until the kernel filters are in
place), attaches to the watched processes, then reads ``trace_pipe`` in large non-blocking
reads, feeds the events through :class:`~coredoctor.trace.transitions.Tracker` and writes each
completed record. It ends when the command exits (with its exit code), after ``--duration``,
when every watched pid has exited (pids only), or on SIGINT/SIGTERM -- and removes its instance
in every one of those cases.
"""

import copy
import os
import signal
import time
from types import FrameType
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from coredoctor.errors import Error, UsageError
from coredoctor.kernel.observed import Observed
from coredoctor.trace import events as E
from coredoctor.trace import tracefs
from coredoctor.trace.transitions import Proc, Task, Tracker

from coredoctor.trace.symbols import Symbolizer

__all__ = ["run", "Stop"]

READ_SIZE = 1 << 20

#: why a run has no user stacks although options/userstacktrace is set: events came and no
#: user_stack record with any of them. ftrace_trace_userstack() (kernel/trace/trace.c) is an
#: empty stub without CONFIG_USER_STACKTRACE_SUPPORT, which arm64 does not select (Debian 12's
#: arm64 6.1: the option is offered, no record is ever written)
NO_KERNEL_STACKS = ("unknown: this kernel writes no user stack records (options/userstacktrace is "
                    "set, yet none came with {n} events: ftrace_trace_userstack() is empty without "
                    "CONFIG_USER_STACKTRACE_SUPPORT{arch})")
#: events without a user stack before the tracer concludes the kernel writes none
NO_STACKS_AFTER = 2


#: the default per-CPU ring buffer of a trace (KiB; tracefs buffer_size_kb)
BUFFER_KB = 8192


def lost_of(buf: Dict[str, int]) -> int:
    """Events the ring buffer lost, from the per-CPU ``stats`` sums (:meth:`tracefs.Instance.stats`):
    with ``options/overwrite`` 0 a full buffer drops new events (``dropped events``); ``overrun``
    and ``commit overrun`` count the ones overwritten."""
    return buf.get("overrun", 0) + buf.get("dropped_events", 0) + buf.get("commit_overrun", 0)


def lost_notice(buf: Dict[str, int], seen: int, buffer_kb: int) -> Optional[Dict[str, Any]]:
    """A ``notice`` record when the ring buffer lost more events than *seen* (the count already
    reported): a missing witness -- transitions and fatal signals of that time may be absent --
    and the switch that keeps them (``--buffer-kb``: the instance's buffer_size_kb)."""
    lost = lost_of(buf)
    if lost <= seen:
        return None
    n = lost - seen
    return {"event": "notice", "kind": "events-lost", "lost": n, "lost_total": lost,
            "buffer_kb": buffer_kb, "switch": "buffer_size_kb",
            "what": (f"the kernel's ring buffer was full and lost {n} event(s) ({lost} in all; per-CPU "
                     f"stats: dropped events {buf.get('dropped_events', 0)}, overrun {buf.get('overrun', 0)}): "
                     "dumpable changes and fatal signals of that time may be missing from this trace, "
                     "and the states after it rest on what was read back from the kernel; a larger "
                     f"buffer keeps them: --buffer-kb (tracefs buffer_size_kb, now {buffer_kb} KiB "
                     "per CPU)")}


#: seconds the tracer goes on reading after its targets are gone or it was asked to stop
DRAIN_S = 3.0


def unread_notice(unread: int, drain_s: float) -> Dict[str, Any]:
    """A ``notice`` for events the kernel recorded and the tracer never read: still in the ring
    buffer (per-CPU ``stats``: ``entries``) when its bounded drain ended -- a missing witness as
    much as a lost event, though the kernel lost nothing (a slow machine, a burst at the end)."""
    return {"event": "notice", "kind": "events-unread", "unread": unread,
            "what": (f"{unread} event(s) were still unread in the kernel's ring buffer when the trace "
                     f"stopped (it reads on for {drain_s:g} s after its targets end): dumpable changes "
                     "and fatal signals among them are missing from this trace")}


def kernel_writes_no_stacks(parser: Any, machine: str) -> Optional[str]:
    """The note for a run whose kernel writes no user stacks, once *parser* (a RawReader or a
    text Parser, counting ``stacks`` and ``stackless``) has seen enough events without any."""
    if parser.stacks or parser.stackless < NO_STACKS_AFTER:
        return None
    arch = ", which arm64 does not select" if machine in ("aarch64", "arm64") else ""
    return NO_KERNEL_STACKS.format(n=parser.stackless, arch=arch)


class Stop(BaseException):
    """A stop was asked for (SIGINT, SIGTERM, SIGHUP): raised only at the loop's own check
    points (:meth:`StopRequest.check`), never from a signal handler. A BaseException, so that
    the best-effort ``except Exception`` around symbolizing and predicting cannot swallow it."""


#: the signals that stop the tracer (each gives exit code 130, as Ctrl-C)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequest:
    """Signal handlers that only record the request and wake the loop.

    A handler that raised (KeyboardInterrupt, or an exception of ours) would raise at whatever
    bytecode runs when the signal comes -- inside an import-lock callback it is printed as
    "Exception ignored" and lost, and the tracer runs on (seen in the 6.1 guest). Here the
    handler sets :attr:`signum`; ``signal.set_wakeup_fd`` writes a byte to a pipe that the
    reader's poll() watches, so a blocked wait ends at once; :meth:`check` raises :class:`Stop`
    at points of the tracer's choosing (between start-up steps, once per loop)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.count = 0
        self.r, self.w = os.pipe()
        for fd in (self.r, self.w):
            os.set_blocking(fd, False)
        self._old: Dict[int, Any] = {}
        self._old_wakeup: Optional[int] = None

    def _handler(self, signum: int, frame: Optional[FrameType]) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum

    def install(self) -> None:
        self._old_wakeup = signal.set_wakeup_fd(self.w)
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old = {}
        signal.set_wakeup_fd(self._old_wakeup if self._old_wakeup is not None else -1)
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        if self.signum is not None:
            raise Stop()

    def clear_wakeups(self) -> None:
        try:
            while os.read(self.r, 512):
                pass
        except OSError:
            pass


def _tids(pid: int) -> List[int]:
    from coredoctor.snapshot import proc
    try:
        return proc.tids(pid)
    except Error:
        return []


def _clock(inst: tracefs.Instance) -> Optional[float]:
    """Use the instance's ``mono`` trace clock (CLOCK_MONOTONIC) so event times map to wall time."""
    try:
        inst._write("trace_clock", "mono")
        return time.time() - time.monotonic()
    except OSError:
        return None


class Predictor:
    """The gate model's answer for a process at the moment it gets a fatal signal: the latest
    snapshot of it, with the dumpable flag and credentials the trace followed since."""

    def __init__(self, mono: bool = True) -> None:
        from coredoctor import snapshot
        from coredoctor.kernel import gates
        self.snapshot, self.gates = snapshot, gates
        self.mono = mono  # event times are CLOCK_MONOTONIC (trace_clock "mono"): comparable

    def refresh(self, p: Proc) -> bool:
        """Read *p* again. A reading that finds it dumping core (``CoreDumping: 1`` in
        /proc/PID/status, 4.15+: the signal came before this loop saw it) is thrown away: it
        would find the core file being written and call it in the way."""
        start = time.monotonic()
        try:
            s = self.snapshot.take([p.tgid], strict=True)
        except Error:
            return False
        except OSError:
            return False
        me = next((q for q in s["processes"] if q["pid"] == p.tgid), None)
        if me is not None and me.get("core_dumping"):
            p.dying = True
            return False
        if p.snap is not None:
            p.prev_snap, p.prev_window = p.snap, p.snap_window
        p.snap, p.snap_at, p.snap_dirty, p.snap_urgent = s, time.monotonic(), False, False
        p.snap_window = (start, p.snap_at)
        return True

    def _before(self, p: Proc, ts: Optional[float]
                ) -> Tuple[Optional[Dict[str, Any]], Optional[Tuple[float, float]]]:
        """The latest reading made wholly before the fatal signal at trace time *ts*: the
        reader may have read the process after the signal (its events are read in batches),
        while the kernel was writing its core (seen under 6.1 in qemu: "core.N already
        exists")."""
        if ts is None or not self.mono:
            return p.snap, None
        for snap, window in ((p.snap, p.snap_window), (p.prev_snap, p.prev_window)):
            if snap is not None and (window is None or window[1] <= ts):
                return snap, window
        return None, None

    def __call__(self, p: Proc, t: Task, signame: str, how: Optional[str],
                 ts: Optional[float] = None) -> Optional[Dict[str, Any]]:
        # never re-read a process that got its fatal signal: it is dying (its mm, files and root
        # go away in do_exit()), so its /proc view is partial. The last reading before it counts.
        if p.snap is None:
            return {"dumps": None, "blocking_gate": None,
                    "verdict": "no prediction: the process could not be read before it died"}
        snap, window = self._before(p, ts)
        if snap is None:
            return {"dumps": None, "blocking_gate": None,
                    "verdict": "no prediction: it was last read after its fatal signal had come (while "
                               "it was dying), and no earlier reading is kept"}
        if window is not None:  # did it change its limits, umask or cwd after that reading began?
            # (a window is only returned for a time ts)
            stale = p.invalidated_at is not None and ts is not None and window[0] < p.invalidated_at <= ts
        else:
            stale = p.snap_dirty and p.snap_urgent
        procs = {q["pid"]: q for q in snap["processes"]}
        entry = procs.get(p.tgid)
        if entry is None:  # a fork child not read yet: its parent's facts, which fork copied
            src = procs.get(snap["targets"][0]) if snap["targets"] else None
            if src is None:
                return None
            entry = dict(copy.deepcopy(src), pid=p.tgid, ppid=src["pid"])
        else:
            entry = copy.deepcopy(entry)
        d = p.dumpable
        entry["dumpable"] = {"value": d.get("value"), "candidates": list(d.get("candidates") or [0, 1, 2]),
                             "source": d.get("source") if d.get("source") != "model" else "trace",
                             "evidence": "followed by coredoctor trace"}
        entry["creds"] = dict(entry["creds"], uid=list(t.creds["uid"]), gid=list(t.creds["gid"]),
                              cap_eff=f"{t.creds.get('cap_eff', 0):016x}", cap_prm=f"{t.creds.get('cap_prm', 0):016x}")
        procs = dict(procs)
        procs[p.tgid] = entry
        # the kernel delivered it to SIG_DFL: an observation for the signal gate (whatever the
        # masks, handlers or tracer of the snapshot said, the default action runs)
        res = self.gates.evaluate(snap, entry, procs.get(entry.get("ppid")), signame, how, procs,
                                  observed=Observed(signal=signame))
        res["read_at"] = snap.get("taken_at")
        if stale:  # changed (limits, umask, cwd, ...) since it was read: no guess
            res["stale"] = True
            res["verdict"] = ("no prediction: it changed its limits, umask or cwd after it was last read, "
                              "and it was gone before it could be read again; the last reading said: "
                              + str(res.get("verdict")))
        return res


def run(pids: Iterable[int] = (), names: Sequence[str] = (), cmd: Optional[List[str]] = None,
        duration: Optional[float] = None, emit: Callable[[Dict[str, Any]], object] = print,
        userstack: bool = True, buffer_kb: Optional[int] = None,
        stats_out: Optional[Dict[str, Any]] = None) -> int:
    """Trace; *emit* gets each record (a dict). Returns the exit code (the command's, with CMD)."""
    pids = sorted(set(pids))
    if not (pids or names or cmd):
        raise UsageError("name what to trace: -- CMD, --pid PID, --name NAME or --unit UNIT")
    from coredoctor.trace import raw as R  # imported before any signal can be recorded
    stop = StopRequest()
    stop.install()
    inst = None
    child = None
    go_w = None
    rc = 0
    try:
        try:
            buffer_kb = buffer_kb or BUFFER_KB
            inst = tracefs.Instance(userstack=userstack, buffer_kb=buffer_kb)
        except tracefs.TracefsError as e:
            raise UsageError(str(e))
        if inst.stale_removed:  # said before any stop is acted on: they are gone either way
            emit({"event": "notice", "what": "removed tracefs instances left by killed runs: "
                                             + ", ".join(inst.stale_removed)})
        stop.check()  # a stop during start-up: the instance is removed below
        offset = _clock(inst)
        if cmd:
            go_r, go_w = os.pipe()
            child = os.fork()
            if child == 0:  # pragma: no cover - the child
                try:
                    signal.set_wakeup_fd(-1)
                    for sig in STOP_SIGNALS:
                        signal.signal(sig, signal.SIG_DFL)
                    os.close(go_w)
                    os.close(stop.r)
                    os.close(stop.w)
                    if os.read(go_r, 1) != b"g":  # the tracer stopped before it was ready
                        os._exit(128 + signal.SIGTERM)
                    os.close(go_r)
                    os.execvp(cmd[0], cmd)
                except OSError as e:
                    os.write(2, f"coredoctor trace: cannot run {cmd[0]}: {e.strerror}\n".encode())
                os._exit(127)
            os.close(go_r)
        watch = list(pids) + ([child] if child else [])
        tids = sorted({t for p in watch for t in (_tids(p) or [p])})
        inst.setup(pids=tids, names=names)
        stop.check()
        for ev in inst.missing:
            emit({"event": "notice", "what": f"{ev} is not offered by this kernel: not traced"})
        want_stack = bool(inst.options.get("userstacktrace") and userstack)
        decoder, why = inst.raw_decoder()
        if decoder is None:
            emit({"event": "notice", "what": f"reading the text trace_pipe: {why} (binary records "
                                             "cannot be read here; a process name that looks like a "
                                             "trace line could mislead the text reader)"})
        else:
            for n in why:
                emit({"event": "notice", "what": n})
        predictor = Predictor(mono=offset is not None)
        stack_off = None if want_stack else (
            "unknown: user stacks are not recorded (" + ("--no-stack" if not userstack else
                                                         "this kernel offers no options/userstacktrace") + ")")
        direct: Dict[int, Optional[int]] = {child: None} if child else {}
        tracker = Tracker(predict=predictor, symbolizer=Symbolizer(), mono=offset is not None,
                          clock_offset=offset or 0.0, direct_children=direct,
                          on_fork=(lambda c: inst.follow([c])) if names else None,
                          on_exit=(lambda c: inst.unfollow([c])) if names else None)
        tracker.stack_note = stack_off
        machine = os.uname().machine

        def handle(evs: List[Dict[str, Any]]) -> None:
            """The parsed events to the tracker -- first noting a kernel that writes no user
            stacks (then no event waits for one any more)."""
            if tracker.stack_note is None and parser.userstack:
                note = kernel_writes_no_stacks(parser, machine)
                if note is not None:
                    tracker.stack_note = note
                    parser.userstack = False
                    emit({"event": "notice", "what": "user stacks: " + note})
            tracker.handle(evs)
        from coredoctor.snapshot.proc import task as task_io
        mine = task_io.self_dumpable()
        for p in watch:
            over = None
            if p == child and mine is not None:  # fork copied our own flag, which prctl() tells exactly
                over = {"value": mine, "candidates": [mine], "source": "prctl(PR_GET_DUMPABLE) of the tracer "
                        "that forked it", "evidence": "fork copies the dumpable flag"}
            r = tracker.attach(p, _tids(p) or [p], dumpable_override=over)
            if r is not None:
                emit(r)
            if tracker.procs.get(p) is not None:
                predictor.refresh(tracker.procs[p])
            stop.check()
        if names:
            from coredoctor.snapshot import proc as procmod
            for pid, comm in procmod.comms().items():
                if comm in [n[:15] for n in names] and pid != os.getpid() and pid not in tracker.procs:
                    r = tracker.attach(pid, _tids(pid) or [pid])
                    if r is not None:
                        emit(r)
                        predictor.refresh(tracker.procs[pid])
        stop.check()
        if decoder is not None:
            parser: Union[R.RawReader, E.Parser] = R.RawReader(
                decoder, userstack=want_stack and decoder.stack is not None)
            inst.open_raw(page_size=decoder.header.page_size, wake_fd=stop.r)

            def read(timeout: float) -> Tuple[Any, bool]:  # (pages or text: what parser.feed takes, drained)
                return inst.read_raw(timeout=timeout, max_pages=READ_SIZE // decoder.header.page_size)
        else:
            parser = E.Parser(userstack=want_stack)
            inst.open_pipe(wake_fd=stop.r)

            def read(timeout: float) -> Tuple[Any, bool]:
                return inst.read(timeout=timeout, size=READ_SIZE)
        stop.check()
        if go_w is not None:
            os.write(go_w, b"g")
            os.close(go_w)
            go_w = None
        start = time.monotonic()
        child_status: Optional[int] = None
        lost_seen, lost_checked = 0, start

        def check_lost() -> None:  # the per-CPU stats: a full buffer said when it happens
            nonlocal lost_seen
            n = lost_notice(inst.stats(), lost_seen, buffer_kb or BUFFER_KB)
            if n is not None:
                lost_seen = n["lost_total"]
                emit(n)

        while True:
            began = time.monotonic()
            text, drained = read(0.1)
            if text or drained:  # an empty drained read may complete an event kept for its stack
                handle(parser.feed(text, drained=drained))
            if drained and not parser.holding:  # every event from before *began* is handled
                tracker.drained(began)
            for r in tracker.confirm():
                emit(r)
            if child and child_status is None:
                wpid, st = os.waitpid(child, os.WNOHANG)
                if wpid == child:
                    child_status = st
                    direct[child] = st
            if child_status is not None:
                break
            if stop.requested:
                rc = 130
                break
            if duration is not None and time.monotonic() - start >= duration:
                break
            if not cmd and not names and pids and not any(
                    os.path.exists(f"/proc/{p}") for p in list(tracker.procs) + pids):
                break
            _refresh(tracker, predictor)
            if time.monotonic() - lost_checked >= 1.0:
                lost_checked = time.monotonic()
                check_lost()
            stop.clear_wakeups()  # a wakeup byte of no stop must not keep poll() from waiting
        # drain: the kernel may still hold events of the last moments (bounded: a busy process
        # must not keep a stopping tracer alive)
        asked = stop.count
        stop.clear_wakeups()
        idle = 0
        deadline = time.monotonic() + DRAIN_S
        while idle < 2 and time.monotonic() < deadline and stop.count == asked:  # a new stop: at once
            text, drained = read(0.05)
            if text:
                handle(parser.feed(text, drained=drained))
                idle = 0
            else:
                idle += 1
        handle(parser.flush())
        deadline = time.monotonic() + (0.3 if stop.requested else 1.5)
        while tracker.finished and time.monotonic() < deadline:
            for r in tracker.confirm():
                emit(r)
            time.sleep(0.05)
        for r in tracker.confirm(final=True):
            emit(r)
        check_lost()
        buf = inst.stats()
        unread = buf.get("entries", 0)  # per-CPU stats "entries": events still in the buffer, never read
        if unread > 0:
            emit(unread_notice(unread, DRAIN_S))
        summary = {"event": "summary", "events": tracker.counts["events"],
                   "dumpable_changes": tracker.counts["dumpable_changes"],
                   "cred_changes": tracker.counts["cred_changes"], "fatal_signals": tracker.counts["fatal_signals"],
                   "lost": lost_of(buf), "buffer": buf, "buffer_kb": buffer_kb,
                   "unparsed_lines": parser.unparsed, "reader": "raw" if decoder is not None else "text",
                   "user_stacks": parser.stacks, "stack_note": tracker.stack_note, "unread": unread}
        if decoder is not None:
            summary["undecodable_records"] = decoder.bad
            summary["pages_after_loss"] = decoder.missed_pages
        emit(summary)
        if stats_out is not None:
            stats_out.update(summary)
        if child_status is not None:
            rc = os.waitstatus_to_exitcode(child_status) if hasattr(os, "waitstatus_to_exitcode") else \
                (os.WEXITSTATUS(child_status) if os.WIFEXITED(child_status) else -os.WTERMSIG(child_status))
            if rc < 0:
                rc = 128 - rc
    except (KeyboardInterrupt, Stop):
        rc = 130
    finally:
        try:
            if go_w is not None:
                os.close(go_w)
            if inst is not None:
                inst.close()
        finally:
            stop.restore()
    if stop.requested:
        rc = 130
    return rc


def _refresh(tracker: Tracker, predictor: Predictor, budget: int = 3) -> None:
    """Re-read a few changed processes so a prediction is ready before they die (at most every
    quarter second each)."""
    now = time.monotonic()
    for p in list(tracker.procs.values()):
        if budget <= 0:
            break
        if p.snap_dirty and not p.exited and not p.dying and (p.snap_urgent or now - p.snap_at > 0.25):
            predictor.refresh(p)
            p.snap_at = now
            budget -= 1
