"""
The watch loop
--------------
``coredoctor watch``: the tracer's machinery (:mod:`coredoctor.trace`) host-wide, for days. One
private tracefs instance with the tracer's events and kernel-side pre-filters (every process but
the watcher itself), read through the binary ``trace_pipe_raw`` reader when the kernel's format
files are understood; the transitions model (:class:`~coredoctor.trace.transitions.Tracker`)
follows every process's credentials and dumpable flag, and the gate predictor
(:class:`~coredoctor.trace.run.Predictor`) keeps a fresh reading of each service or container
process so that a crash has a verdict. Each loss of dumpability by a service or container
process and each fatal signal (with the prediction and the kernel's outcome) becomes one entry
(:mod:`.entries`) sent to the journal or syslog (:mod:`.sinks`).

Counters: each loss is added to ``coredoctor_dumpability_losses_total{unit}`` in the metrics
state (``STATE_DIR/metrics.json``, kept across restarts); with ``--textfile DIR`` the whole
exposition (:func:`coredoctor.metrics.collect`) is rewritten by a child process -- so that the
reader never waits for it -- after a loss (at most every ``MIN_WRITE`` seconds) and every
``interval`` seconds.

Signals, as the tracer: handlers only record (SIGINT/SIGTERM: stop; SIGHUP: reload) and
``set_wakeup_fd`` wakes the reader's poll(); the loop acts on them at its own points. The
instance is removed on every exit -- a stop, an exception, the reader failing -- by the one
``finally``; a killed watcher's instance is removed by the next run (tracefs.remove_stale).
"""

from __future__ import annotations

import os
import resource
import signal
import time

from coredoctor.errors import Error, UsageError
from coredoctor.trace import reads, tracefs
from coredoctor.trace.run import Predictor, StopRequest, _clock
from coredoctor.trace.run import Stop as Stop_
from coredoctor.trace.transitions import Tracker
from coredoctor.watch import entries as EN

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = ["run", "Unsupported", "ReaderFailed", "parse_config", "Config", "EXIT_UNSUPPORTED",
           "EXIT_READER", "DEFAULT_CONFIG"]

EXIT_READER = 1        # the trace reader failed (its instance is removed)
EXIT_UNSUPPORTED = 3   # no tracefs, or the kernel offers none of the events watch needs
DEFAULT_CONFIG = "/etc/coredoctor/watch.conf"
#: a loss schedules a textfile rewrite at most this often (seconds)
MIN_WRITE = 5.0
#: a unit looked up this long ago is looked up again before it decides a refresh (seconds)
UNIT_TTL = 1.0
#: the ring buffer's counters are read this often (seconds); a growth is one notice
STATS_EVERY = 5.0
READ_PAGES = 256
#: a record the kernel disagreed with is held at most this long for a later change to explain
#: it (the tracer holds it until the process stops changing; a daemon may never stop)
HOLD_MAX = 2.0

#: what each event family shows; when the kernel lacks all of one row's events, that is unknown
NEEDS = (
    ("losses by credential changes", ("syscalls/sys_exit_setuid", "syscalls/sys_exit_setresuid",
                                      "syscalls/sys_exit_setgid", "syscalls/sys_exit_setresgid")),
    ("losses by prctl(PR_SET_DUMPABLE)", ("syscalls/sys_exit_prctl",)),
    ("losses by the exec of set-id binaries", ("sched/sched_process_exec",)),
    ("fatal signals", ("signal/signal_deliver",)),
    ("the outcome of fatal signals", ("sched/sched_process_exit",)),
)


class Unsupported(Error):
    exit_code = EXIT_UNSUPPORTED


class ReaderFailed(Error):
    exit_code = EXIT_READER


class Config(dict):
    """``ignore_units`` (set), ``all_processes`` (bool), ``interval`` (seconds)."""


def parse_config(text: str, where: str = "config") -> Config:
    """``KEY = VALUE`` lines (``#`` comments): ``ignore-unit = NAME`` (repeatable: no entries and
    no counting for it), ``all-processes = yes|no`` (losses of processes outside services and
    containers too), ``interval = SECONDS`` (textfile rewrite period). UsageError names the line."""
    cfg = Config(ignore_units=set(), all_processes=None, interval=None)
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, eq, val = (x.strip() for x in line.partition("="))
        if not eq or not val:
            raise UsageError(f"{where}:{n}: not KEY = VALUE")
        if key == "ignore-unit":
            cfg["ignore_units"].add(val)
        elif key == "all-processes":
            if val not in ("yes", "no", "true", "false", "1", "0"):
                raise UsageError(f"{where}:{n}: all-processes wants yes or no")
            cfg["all_processes"] = val in ("yes", "true", "1")
        elif key == "interval":
            try:
                v = float(val)
            except ValueError:
                v = -1.0
            if not 1.0 <= v <= 86400.0:
                raise UsageError(f"{where}:{n}: interval wants seconds between 1 and 86400")
            cfg["interval"] = v
        else:
            raise UsageError(f"{where}:{n}: unknown key {key!r} (ignore-unit, all-processes, interval)")
    return cfg


def load_config(path: "Optional[str]", explicit: bool) -> Config:
    if not path:
        return parse_config("")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"--config {path}: no such file")
        return parse_config("")
    except OSError as e:
        raise UsageError(f"--config {path}: {e.strerror}")
    with os.fdopen(fd, "rb") as f:
        text = f.read(1 << 20).decode("utf-8", "replace")
    return parse_config(text, path)


class Signals(StopRequest):
    """The tracer's stop request (SIGINT, SIGTERM) plus a reload request (SIGHUP)."""

    def __init__(self) -> None:
        super().__init__()
        self.reload = False

    def _hup(self, signum: int, frame: "Any") -> None:
        self.reload = True

    def install(self) -> None:
        self._old_wakeup = signal.set_wakeup_fd(self.w)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        self._old[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hup)


def _raise_nofile() -> None:
    """A pidfd per followed process: the soft RLIMIT_NOFILE up to the hard one."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 1 << 20), hard))
    except (OSError, ValueError):
        pass


class Watch:
    def __init__(self, sink: "Any", textfile: "Optional[str]", cfg: Config, all_processes: bool,
                 interval: float, config_path: "Optional[str]", config_explicit: bool) -> None:
        self.sink = sink
        self.textfile = textfile
        self.config_path, self.config_explicit = config_path, config_explicit
        self.cli_all, self.cli_interval = all_processes, interval
        self.apply(cfg)
        self.units: "Dict[int, Tuple[Optional[str], str, float]]" = {}
        self.pending_losses: "Dict[str, int]" = {}
        self.writer: "Optional[int]" = None
        self.write_wanted = bool(textfile)
        self.last_write = self.last_flush = 0.0
        self.stats: "Dict[str, Any]" = {"events": 0, "dumpable_changes": 0, "losses": 0, "losses_logged": 0,
                      "fatal_signals": 0, "entries": 0, "lost": 0, "textfile_writes": 0, "reloads": 0}

    def apply(self, cfg: Config) -> None:
        self.ignore = set(cfg["ignore_units"])
        self.all_processes = self.cli_all if cfg["all_processes"] is None else cfg["all_processes"]
        self.interval = cfg["interval"] or self.cli_interval

    # --- units -------------------------------------------------------------------------------
    def unit_of(self, pid: int, fresh: bool = True) -> "Tuple[Optional[str], str]":
        from coredoctor.metrics import container_of
        now = time.monotonic()
        got = self.units.get(pid)
        if fresh and (got is None or now - got[2] > UNIT_TTL):  # a busy process: once a second
            u = reads.read_unit(pid)
            if u is not None:
                found = (u["unit"], container_of(u["cgroup"]), now)
                # an exiting task is moved to the root cgroup (cgroup_exit(), v1): its last unit stays
                if got is not None and (got[0] or got[1]) and not (found[0] or found[1]):
                    found = (got[0], got[1], now)
                self.units[pid] = found
        got = self.units.get(pid)
        return (got[0], got[1]) if got else (None, "")

    def observe(self, events: "List[Dict[str, Any]]", tracker: Tracker) -> None:
        """Units from the events themselves, before the tracker handles them: a task moved into
        a cgroup (cgroup_attach_task names the path) and a fork child (in its parent's cgroup
        until it moves) -- so that a process that drops privileges and exits within a few
        milliseconds is still named with its service."""
        from coredoctor.metrics import container_of
        from coredoctor.snapshot.proc import unit_from_cgroup
        now = time.monotonic()
        for ev in events:
            if ev.get("kind") != "tp":
                continue
            name, f = ev.get("name"), ev.get("fields") or {}
            if name == "cgroup_attach_task":
                pid, path = f.get("pid"), f.get("dst_path")
                if isinstance(pid, int) and isinstance(path, str) and path:
                    unit, cg = unit_from_cgroup(f"0::{path}\n")
                    container = container_of(cg)
                    if unit or container:  # another hierarchy's move (v1) says nothing of the unit
                        tgid = (tracker.tasks[pid].tgid if pid in tracker.tasks else pid)
                        self.units[tgid] = (unit, container, now)
            elif name == "sched_process_fork":
                child = f.get("child_pid")
                who = ev.get("pid")
                t = tracker.tasks.get(who) if isinstance(who, int) else None
                key = t.tgid if t is not None else (ev.get("tgid") or who)
                parent = self.units.get(key) if isinstance(key, int) else None
                if isinstance(child, int) and parent is not None and child not in self.units:
                    self.units[child] = parent

    def is_service(self, unit: "Optional[str]", container: str) -> bool:
        return bool(unit and unit.endswith(EN.SERVICE_SUFFIX)) or bool(container)

    # --- records -------------------------------------------------------------------------------
    def record(self, r: "Dict[str, Any]") -> None:
        ev = r.get("event")
        if ev not in ("dumpable-change", "fatal-signal"):
            return
        pid = r.get("pid")
        if not isinstance(pid, int):
            return
        unit, container = self.unit_of(pid, fresh=ev == "dumpable-change" or pid not in self.units)
        if ev == "dumpable-change" and EN.is_loss(r):
            self.stats["losses"] += 1
            if self.is_service(unit, container) and (unit or container) not in self.ignore:
                key = unit or container
                self.pending_losses[key] = self.pending_losses.get(key, 0) + 1
        if (unit or container) in self.ignore and (unit or container):
            return
        e = EN.classify(r, unit, container, self.all_processes)
        if e is None:
            return
        if e["kind"] == "dumpability-lost":
            self.stats["losses_logged"] += 1
        self.send(e)

    def send(self, e: "Dict[str, Any]") -> None:
        try:
            self.sink.send(e)
            self.stats["entries"] += 1
        except OSError as ex:  # a journal restarting: the entry is lost, the count says so
            self.stats.setdefault("send_errors", 0)
            self.stats["send_errors"] += 1
            self.stats["last_send_error"] = str(ex.strerror or ex)

    # --- counters and the textfile ---------------------------------------------------------------
    def flush_losses(self) -> bool:
        if not self.pending_losses:
            return False
        from coredoctor import metrics
        pend, self.pending_losses = self.pending_losses, {}

        def fn(st: "Dict[str, Any]") -> "Dict[str, Any]":
            losses = dict(st.get("losses") or {})
            for k, n in pend.items():
                losses[k] = int(losses.get(k, 0)) + n
            return dict(st, losses=losses)
        metrics.update_state(fn)
        self.write_wanted = bool(self.textfile)
        return True

    def maybe_write(self, now: float) -> None:
        if self.writer is not None:
            try:
                wpid, _st = os.waitpid(self.writer, os.WNOHANG)
            except ChildProcessError:
                wpid = self.writer
            if wpid == 0:
                return
            self.writer = None
            self.stats["textfile_writes"] += 1
        if not self.textfile:
            return
        due = now - self.last_write >= self.interval
        if not (due or (self.write_wanted and now - self.last_write >= MIN_WRITE)):
            return
        self.write_wanted = False
        self.last_write = now
        self.writer = _spawn_writer(self.textfile)

    def final_write(self) -> None:
        if self.writer is not None:
            try:
                os.waitpid(self.writer, 0)
            except ChildProcessError:
                pass
            self.writer = None
            self.stats["textfile_writes"] += 1
        if self.textfile:
            from coredoctor import metrics
            metrics.write_textfile(self.textfile, metrics.collect(with_crashes=False))
            self.stats["textfile_writes"] += 1

    def reload(self, tracker: Tracker) -> None:
        self.stats["reloads"] += 1
        try:
            cfg = load_config(self.config_path, self.config_explicit)
        except Error as e:
            self.send(EN.notice("watch-notice", f"reload: the configuration is not taken ({e}); "
                                "the previous one stays", notice_kind="reload-failed"))
            return
        self.apply(cfg)
        self.units.clear()
        n = attach_all(tracker)
        self.write_wanted = bool(self.textfile)
        self.last_write = 0.0
        self.send(EN.notice("watch-notice", f"reloaded: {len(self.ignore)} ignored unit(s), "
                            f"{n} process(es) newly followed", notice_kind="reloaded",
                            ignored_units=" ".join(sorted(self.ignore)), all_processes=self.all_processes))

    def forget(self, tracker: Tracker) -> None:
        for pid in [p for p in self.units if p not in tracker.procs]:
            del self.units[pid]


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536


def _spawn_writer(textfile: str) -> "Optional[int]":
    """A child that computes the exposition and writes DIR/coredoctor.prom (a few seconds:
    the reader goes on meanwhile)."""
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            # none of the parent's descriptors: an inherited trace_pipe_raw or pidfd would keep
            # the tracefs instance busy (rmdir: EBUSY) while a slow write outlives a stop
            os.closerange(3, _max_fd())
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            from coredoctor import metrics
            metrics.write_textfile(textfile, metrics.collect(with_crashes=True))
            code = 0
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def attach_all(tracker: Tracker) -> int:
    """Follow every process not followed yet, from the kernel's current state."""
    from coredoctor.snapshot import proc as procmod
    me = os.getpid()
    n = 0
    for pid in procmod.comms():
        if pid == me or pid in tracker.procs:
            continue
        tracker.attach(pid, reads_tids(pid), quiet=True)
        if pid in tracker.procs:
            n += 1
    return n


def reads_tids(pid: int) -> "List[int]":
    from coredoctor.snapshot import proc
    try:
        return proc.tids(pid) or [pid]
    except Error:
        return [pid]


def refresh(w: Watch, tracker: Tracker, predictor: Predictor, now: float, budget: int = 2,
            lookups: int = 200) -> None:
    """Keep a fresh reading of each changed service or container process (at most every half
    second each, *budget* per call), so that its crash has a verdict."""
    for p in list(tracker.procs.values()):
        if budget <= 0:
            break
        if p.exited or p.dying or not p.snap_dirty or (now - p.snap_at < 0.5 and not p.snap_urgent):
            continue
        got = w.units.get(p.tgid)
        if got is None or now - got[2] > UNIT_TTL:
            if lookups <= 0:
                continue
            lookups -= 1
            w.unit_of(p.tgid)
            got = w.units.get(p.tgid)
        if got is None or not (w.is_service(got[0], got[1]) or w.all_processes):
            continue
        predictor.refresh(p)
        p.snap_at = now
        budget -= 1


def run(textfile: "Optional[str]" = None, log: str = "auto", log_socket: "Optional[str]" = None, config: "Optional[str]" = None,
        all_processes: bool = False, interval: float = 60.0, buffer_kb: int = 16384,
        duration: "Optional[float]" = None, stats_out: "Optional[Dict[str, Any]]" = None,
        say: "Callable[[str], None]" = lambda s: None) -> int:
    """Watch until SIGTERM/SIGINT (or *duration*); returns the exit code (0 for a stop)."""
    from coredoctor.trace import raw as R
    from coredoctor.watch import sinks
    if textfile and not os.path.isdir(textfile):
        raise UsageError(f"--textfile {textfile}: no such directory")
    explicit = config is not None
    cfg = load_config(config or DEFAULT_CONFIG, explicit)
    kw = {log: log_socket} if log_socket else {}
    sink = sinks.open_sink(log, **kw)
    w = Watch(sink, textfile, cfg, all_processes, interval, config or DEFAULT_CONFIG, explicit)
    sig = Signals()
    sig.install()
    inst = None
    reason = "stopped"
    try:
        _raise_nofile()
        try:
            inst = tracefs.Instance(userstack=False, buffer_kb=buffer_kb)
        except tracefs.TracefsError as e:
            raise Unsupported(f"coredoctor watch cannot trace here: {e}; dumpability losses and fatal "
                              "signals are unknown")
        for name in inst.stale_removed:
            w.send(EN.notice("watch-notice", f"removed the tracefs instance {name} left by a killed run",
                             notice_kind="stale-instance"))
        sig.check()
        offset = _clock(inst)
        inst.setup(host=True, exclude=[os.getpid()])
        unknown = [what for what, evs in NEEDS if all(ev in inst.missing for ev in evs)]
        if len(unknown) == len(NEEDS):
            raise Unsupported("coredoctor watch: this kernel offers none of the events it needs "
                              f"({', '.join(inst.missing)}): dumpability losses and fatal signals are unknown")
        for what in unknown:
            w.send(EN.notice("watch-notice", f"{what} are unknown: this kernel does not offer the events "
                             "that show them", notice_kind="unknown"))
            say(f"coredoctor watch: {what} are unknown (the kernel does not offer their events)")
        decoder, why = inst.raw_decoder()
        predictor = Predictor(mono=offset is not None)

        def predict(p: "Any", t: "Any", signame: str, how: str, ts: "Any" = None) -> "Any":
            w.unit_of(p.tgid)  # while it is still there: the entry names its unit after its exit
            return predictor(p, t, signame, how, ts=ts)

        tracker = Tracker(predict=predict, symbolizer=None, mono=offset is not None,
                          clock_offset=offset or 0.0, direct_children={})
        if decoder is not None:
            parser: "Any" = R.RawReader(decoder, userstack=False)
            inst.open_raw(page_size=decoder.header.page_size, wake_fd=sig.r)

            def read(timeout: float) -> "Any":
                return inst.read_raw(timeout=timeout, max_pages=READ_PAGES)
        else:
            from coredoctor.trace import events as E
            parser = E.Parser(userstack=False)
            inst.open_pipe(wake_fd=sig.r)
            w.send(EN.notice("watch-notice", f"reading the text trace_pipe: {why}", notice_kind="reader"))

            def read(timeout: float) -> "Any":
                return inst.read(timeout=timeout, size=1 << 20)
        attach_all(tracker)
        sig.check()
        w.send(EN.notice("watch-started", f"coredoctor watch started: tracefs instance {inst.name}, "
                         f"{len(tracker.procs)} processes followed, reader "
                         f"{'raw' if decoder is not None else 'text'}", instance=inst.path,
                         reader="raw" if decoder is not None else "text", textfile=textfile or ""))
        sinks.notify("READY=1")
        start = time.monotonic()
        last_stats = last_forget = last_refresh = last_settle = start
        lost_seen = 0
        while True:
            began = time.monotonic()
            try:
                data, drained = read(0.2)
                if data or drained:
                    evs = parser.feed(data, drained=drained)
                    w.observe(evs, tracker)
                    tracker.handle(evs)
            except OSError as e:
                raise ReaderFailed(f"coredoctor watch: the trace reader failed: {e.strerror or e}")
            if drained and not parser.holding:
                tracker.drained(began)
            for r in tracker.confirm():
                w.record(r)
            if began - last_settle >= 1.0:
                for r in tracker.settle_held(older_than=HOLD_MAX):
                    w.record(r)
                last_settle = began
            if sig.requested:
                reason = f"signal {signal.Signals(sig.signum).name}" if sig.signum else "stopped"
                break
            now = time.monotonic()
            if duration is not None and now - start >= duration:
                reason = "--duration elapsed"
                break
            if sig.reload:
                sig.reload = False
                sinks.notify("RELOADING=1")
                w.reload(tracker)
                sinks.notify("READY=1")
            if now - last_refresh >= 0.25:
                refresh(w, tracker, predictor, now)
                last_refresh = now
            if w.pending_losses and now - w.last_flush >= MIN_WRITE:
                w.flush_losses()
                w.last_flush = now
            w.maybe_write(now)
            if now - last_stats >= STATS_EVERY:
                last_stats = now
                st = inst.stats()
                lost = st["overrun"] + st["dropped_events"] + st["commit_overrun"]
                if lost > lost_seen:
                    w.send(EN.notice("watch-notice", f"the kernel's ring buffer lost {lost - lost_seen} "
                                     "events: changes and signals in that time are unknown",
                                     notice_kind="lost", lost=lost - lost_seen))
                    lost_seen = lost
            if now - last_forget >= 10.0:
                w.forget(tracker)
                last_forget = now
            sig.clear_wakeups()
        # what the kernel still holds (bounded), then every pending record
        deadline = time.monotonic() + 2.0
        idle = 0
        while idle < 2 and time.monotonic() < deadline:
            data, drained = read(0.05)
            if data:
                evs = parser.feed(data, drained=drained)
                w.observe(evs, tracker)
                tracker.handle(evs)
                idle = 0
            else:
                idle += 1
        tracker.handle(parser.flush() if hasattr(parser, "flush") else [])
        for r in tracker.confirm(final=True):
            w.record(r)
        st = inst.stats()
        w.stats["lost"] = st["overrun"] + st["dropped_events"] + st["commit_overrun"]
        w.stats.update({k: tracker.counts[k] for k in ("events", "dumpable_changes", "fatal_signals")})
        if decoder is not None:
            w.stats["undecodable_records"] = decoder.bad
        rc = 0
    except Stop_:
        reason, rc = f"signal {signal.Signals(sig.signum).name}" if sig.signum else "stopped", 0
    except BaseException as e:
        reason = f"error: {e}"
        raise
    finally:
        try:
            sinks.notify("STOPPING=1")
            if inst is not None:
                inst.close()
            try:
                w.flush_losses()
                w.final_write()
            except (Error, OSError) as e:
                w.stats["textfile_error"] = str(e)
            if inst is not None:
                w.send(EN.notice("watch-stopped", f"coredoctor watch stopped ({reason}): {w.stats['events']} "
                                 f"events, {w.stats['losses']} losses of dumpability, {w.stats['fatal_signals']} "
                                 f"fatal signals, {w.stats['lost']} lost by the ring buffer", reason=reason,
                                 **{k: v for k, v in w.stats.items() if isinstance(v, int)}))
            if stats_out is not None:
                stats_out.update(w.stats)
            sink.close()
        finally:
            sig.restore()
    return rc

