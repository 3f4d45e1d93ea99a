"""
Transitions
-----------
The per-process state machine of ``coredoctor trace``: it follows each watched task's
credentials and its process's dumpable flag through the events tracefs recorded, applies the
kernel's rules (:mod:`coredoctor.kernel.cred`) to say what each syscall did, confirms the
result from the kernel once the syscall has returned, and reports each fatal signal with the
gate model's prediction and what the kernel then did.

Records (dicts, one per line in ``--json``):

- ``{"event": "dumpable-change", "pid", "tid", "comm", "syscall", "args", "ret", "creds_before",
  "creds_after", "suid_dumpable", "before", "after", "changed", "cause", "rule", "why", "stack",
  "stack_note", "confirmed", "time"}`` -- a path that sets the dumpable flag ran (``changed``
  says whether its value moved; ``stack_note``: why ``stack`` is empty, else None);
- ``{"event": "cred-change", ...}`` -- credentials changed without touching the flag;
- ``{"event": "fatal-signal", "pid", "comm", "signal", "signo", "how", "dumps_by_default",
  "predicted", "dumped", "exit_status", "outcome_source", "agrees", "destination", "stack",
  "stack_note", "time"}``;
- ``{"event": "attach", "pid", "comm", "creds", "dumpable"}`` and ``{"event": "exit", ...}``.

Names (``comm``) come from the kernel's own fields -- ``child_comm`` of sched_process_fork, the
basename of sched_process_exec's filename (what begin_new_exec() gives __set_task_comm()), and
/proc at attach, after prctl(PR_SET_NAME) and at each confirmation -- not from the comm tracefs
prints before each line. That one is looked up when the line is *read*, in the saved_cmdlines
cache, which is refreshed only at the task's next context switch: a daemon that execs and drops
privileges within one time slice is printed under its parent's old name.

All kernel reads go through the *kernel* object (by default :mod:`coredoctor.snapshot.task`)
and predictions through *predict*, so the state machine itself runs on recorded events too.
"""

import os
import signal as pysignal
import time

from coredoctor.kernel import cred as C
from coredoctor.kernel.signal import SIG_KERNEL_COREDUMP
from coredoctor.trace import reads as task_io

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported here at run time (start-up time)
    from typing import Any, Callable, Iterable, Literal, Optional, Union

    from coredoctor.trace.symbols import Symbolizer

    #: a record given out (attach, transition, fatal-signal, exit), as JSON
    Record = dict[str, Any]

__all__ = ["Tracker", "signal_name", "DEFAULT_IGNORED", "STOP_SIGNALS"]

#: signals whose default action is not to terminate (kernel/signal.c SIG_KERNEL_IGNORE_MASK,
#: SIG_KERNEL_STOP_MASK)
DEFAULT_IGNORED = ("SIGCHLD", "SIGCONT", "SIGURG", "SIGWINCH")
STOP_SIGNALS = ("SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU")
CRED_SYSCALLS = ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid",
                 "setgroups", "capset", "unshare", "setns")
#: syscalls whose only effect that matters here is on the gate model's other inputs
INVALIDATORS = ("prlimit64", "setrlimit", "umask", "chdir", "fchdir")
PR_SET_NAME = 15  # include/uapi/linux/prctl.h
#: how long a disagreement with the kernel is held, at least, for a later change to explain it
#: (seconds; a task preempted between changing and its syscall's exit event is in between)
HOLD = 0.25
ID_SYSCALLS = ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid")


def signal_name(signo: int) -> str:
    try:
        return pysignal.Signals(signo).name
    except ValueError:
        if pysignal.SIGRTMIN <= signo <= pysignal.SIGRTMAX:
            return f"SIGRTMIN+{signo - pysignal.SIGRTMIN}"
        return f"SIG{signo}"


_RULE_CACHE: "dict[Optional[str], dict[str, Any]]" = {}


def _rule(rid: "Optional[str]") -> "dict[str, Any]":
    if rid not in _RULE_CACHE:  # records share one citation object per rule (never mutated)
        r = (C.RULES.get(rid) if rid is not None else None) or {}
        _RULE_CACHE[rid] = {"id": rid, "kernel": r.get("kernel"), "file": r.get("file"), "versions": r.get("versions")}
    return _RULE_CACHE[rid]


def _pub_creds(c: "Optional[dict[str, Any]]") -> "Optional[dict[str, Any]]":
    """The published form of a model credential set; cached on it (a set is never changed after
    it was published: every syscall makes a new one)."""
    if c is None:
        return None
    pub = c.get("_pub")
    if pub is None:
        pub = {"uid": list(c["uid"]), "gid": list(c["gid"]), "cap_prm": f"{int(c.get('cap_prm') or 0):016x}",
               "cap_eff": f"{int(c.get('cap_eff') or 0):016x}"}
        c["_pub"] = pub
    return pub


def _show_args(name: "Optional[str]", args: "list[Any]") -> "list[Any]":
    if name in ID_SYSCALLS:
        return [-1 if a & 0xFFFFFFFF == 0xFFFFFFFF else a & 0xFFFFFFFF for a in args]
    return list(args)


def _exec_comm(filename: "Optional[str]") -> "Optional[str]":
    """The comm begin_new_exec() sets: kbasename(bprm->filename), cut to TASK_COMM_LEN - 1. None
    for an fexecve()/execveat(AT_EMPTY_PATH) path (/dev/fd/N): the kernel then names the task
    after the file's dentry (6.14+) or "N", so only /proc can tell."""
    if not filename or filename.startswith("/dev/fd/"):
        return None
    return os.path.basename(filename)[:15] or None


class Task:
    __slots__ = ("tid", "tgid", "creds", "pending", "comm")

    def __init__(self, tid: int, tgid: int, creds: "dict[str, Any]", comm: "Optional[str]" = None) -> None:
        self.tid, self.tgid, self.creds = tid, tgid, creds
        self.pending: "dict[str, dict[str, Any]]" = {}
        self.comm = comm


class Proc:
    def __init__(self, tgid: int, comm: "Optional[str]") -> None:
        self.tgid, self.comm = tgid, comm
        self.dumpable: "dict[str, Any]" = {"value": None, "candidates": [0, 1, 2], "source": "unknown"}
        self.pidfd: "Optional[int]" = None
        self.snap: "Optional[dict[str, Any]]" = None
        self.snap_at = 0.0
        self.snap_dirty = True
        self.snap_urgent = False
        # (start, end) of that reading, time.monotonic()
        self.snap_window: "Optional[tuple[float, float]]" = None
        # the reading before it
        self.prev_snap: "Optional[dict[str, Any]]" = None
        self.prev_window: "Optional[tuple[float, float]]" = None
        self.invalidated_at: "Optional[float]" = None  # trace time of the last setrlimit/umask/chdir entry
        self.dying = False  # found dumping core: not read again
        # (record, tid, trace ts) not yet read from the kernel
        self.unconfirmed: "list[tuple[Record, int, float]]" = []
        # records the kernel disagreed with, until a later change explains it or not
        self.held: "list[dict[str, Any]]" = []
        self.after_held: "list[Record]" = []  # records confirmed meanwhile: kept back to keep the order
        self.fatal: "Optional[Record]" = None
        self.exe: "Optional[str]" = None
        self.exited = False
        self.exit_seen: "Optional[float]" = None


class Tracker:
    """Feed parsed events (:meth:`handle`), then call :meth:`confirm` after each batch; both
    return the records that are complete."""

    def __init__(self, kernel: "Any" = task_io, predict: "Optional[Callable[..., Optional[dict[str, Any]]]]" = None,
                 symbolizer: "Optional[Symbolizer]" = None, clock_offset: float = 0.0,
                 direct_children: "Optional[dict[int, Optional[int]]]" = None, use_pidfd: bool = True,
                 on_fork: "Optional[Callable[[int], object]]" = None,
                 on_exit: "Optional[Callable[[int], object]]" = None, mono: bool = True) -> None:
        """*kernel*: what the tracker asks the kernel (:mod:`coredoctor.trace.reads`, or a stand-in
        with its functions); *predict*: called ``(proc, task, signal, how, ts=)`` at a fatal signal
        (:class:`coredoctor.trace.run.Predictor`); *direct_children*: pid -> waitpid() status (None
        until reaped) of the tracer's own children."""
        self.k = kernel
        self.mono = mono  # event times are CLOCK_MONOTONIC, comparable with time.monotonic()
        self.predict = predict
        self.sym = symbolizer
        self.clock_offset = clock_offset
        self.use_pidfd = use_pidfd
        self.tasks: "dict[int, Task]" = {}
        self.procs: "dict[int, Proc]" = {}
        self.direct = direct_children if direct_children is not None else {}
        self.on_fork = on_fork
        self.on_exit = on_exit
        self.finished: "list[int]" = []  # tgids whose exit outcome is pending
        self._sd_value: "Optional[int]" = None
        self.drained_from: "Optional[float]" = None  # see drained()
        self.counts = {"events": 0, "dumpable_changes": 0, "cred_changes": 0, "fatal_signals": 0}
        #: why this run has no user stacks at all (set by the tracer: the option is off, or the
        #: kernel writes no user_stack records): each record's ``stack_note`` then says it
        self.stack_note: "Optional[str]" = None

    # --- attaching --------------------------------------------------------------------------
    def attach(self, tgid: int, tids: "Optional[Iterable[int]]" = None,
               creds_override: "Optional[dict[str, Any]]" = None,
               dumpable_override: "Optional[dict[str, Any]]" = None, quiet: bool = False) -> "Optional[Record]":
        """Start following *tgid* (its threads *tids*) from the kernel's current state."""
        c = creds_override or self.k.read_creds(tgid)
        if c is None:
            return None
        p = self.procs.get(tgid) or Proc(tgid, c.get("comm"))
        self.procs[tgid] = p
        for tid in tids or [tgid]:
            tc = c if tid == tgid else (self.k.read_creds(tgid, tid) or c)
            self.tasks[tid] = Task(tid, tgid, _model_creds(tc), tc.get("comm"))
        if p.pidfd is None and self.use_pidfd:
            p.pidfd = self.k.open_pidfd(tgid)
        d = dumpable_override or self.k.read_dumpable(tgid, c, self.use_pidfd, p.pidfd)
        if d:
            p.dumpable = d
        if self.sym is not None:
            try:
                self.sym.capture(tgid)
            except Exception:  # the symbolizer is best effort: never lose the trace for it
                pass
        if quiet:
            return None
        return {"event": "attach", "pid": tgid, "comm": p.comm, "creds": _pub_creds(self.tasks[tgid].creds)
                if tgid in self.tasks else None, "dumpable": p.dumpable.get("value"),
                "dumpable_candidates": p.dumpable.get("candidates"), "dumpable_source": p.dumpable.get("source")}

    def _task(self, ev: "dict[str, Any]") -> "Optional[Task]":
        t = self.tasks.get(ev["pid"])
        if t is not None:
            return t
        tgid = ev.get("tgid")
        if not tgid:  # binary records name only the task (its user stack names the tgid)
            c0 = self.k.read_creds(ev["pid"])
            tgid = (c0 or {}).get("tgid") or ev["pid"]
        if tgid not in self.procs:
            self.attach(tgid, quiet=True)
        c = self.k.read_creds(tgid, ev["pid"])
        if c is None:
            return None
        t = Task(ev["pid"], tgid, _model_creds(c), c.get("comm") or ev.get("comm"))
        self.tasks[ev["pid"]] = t
        return t

    # --- events -----------------------------------------------------------------------------
    def handle(self, events: "Iterable[dict[str, Any]]") -> None:
        """Apply events; records are buffered until :meth:`confirm` has asked the kernel."""
        for ev in events:
            self.counts["events"] += 1
            kind = ev.get("kind")
            if kind == "enter":
                t = self._task(ev)
                if t is None:
                    continue
                if ev["syscall"] in INVALIDATORS:
                    p = self.procs.get(t.tgid)
                    if p is not None:
                        p.snap_dirty = p.snap_urgent = True
                        p.invalidated_at = ev["ts"]
                else:
                    t.pending[ev["syscall"]] = ev
            elif kind == "exit":
                self._sys_exit(ev)
            elif kind == "tp":
                name = ev["name"]
                if name == "sched_process_fork":
                    self._fork(ev)
                elif name == "sched_process_exec":
                    self._exec(ev)
                elif name == "signal_deliver":
                    self._deliver(ev)
                elif name == "sched_process_exit":
                    self._exit(ev)

    def _sd(self) -> "Optional[int]":
        """fs.suid_dumpable, read once per batch of events (the value commit_creds() copies)."""
        if self._sd_value is None:
            self._sd_value = self.k.suid_dumpable()
        return self._sd_value

    def _wall(self, ts: float) -> float:
        return round(ts + self.clock_offset, 6)

    def _stack(self, ev: "dict[str, Any]", tgid: int) -> "list[Any]":
        addrs = ev.get("ustack") or []
        if self.sym is not None and addrs:
            try:
                return self.sym.symbolize(tgid, addrs)
            except Exception:
                pass
        return [f"{a:#x}" for a in addrs]

    def _stack_fields(self, ev: "dict[str, Any]", tgid: int) -> "dict[str, Any]":
        """``stack`` and ``stack_note``: why an empty stack is unknown rather than a stack of
        nothing (None when there is a stack)."""
        st = self._stack(ev, tgid)
        if st:
            return {"stack": st, "stack_note": None}
        if self.stack_note:
            note = self.stack_note
        elif ev.get("ustack") is not None:
            note = ("unknown: the kernel's walk of the user stack found no frame (the user code keeps no "
                    "frame-pointer chain there)")
        elif ev.get("ustack_missing"):  # recorded with stacks, given out without one
            note = ("unknown: no user stack record came with this event (the kernel could not reserve one, "
                    "or committed it after the reader had waited over two empty reads)")
        else:  # read without user stacks: nothing was to come
            note = None
        return {"stack": st, "stack_note": note}

    def _comm(self, t: Task, ev: "Optional[dict[str, Any]]" = None) -> "Optional[str]":
        """The task's name: the tracker's own, else the printed one (a task first seen here)."""
        if t.comm is None and ev is not None and ev.get("comm"):
            t.comm = ev["comm"]
        return t.comm

    def _renamed(self, t: Task, kc: "Optional[dict[str, Any]]" = None) -> None:
        """Take the task's name from /proc (*kc*, or read now): after prctl(PR_SET_NAME), whose
        new name is in user memory, and at each confirmation (a write to /proc/PID/comm is not
        traced). The leader's name is the process's."""
        kc = kc or self.k.read_creds(t.tgid, t.tid)
        if kc and kc.get("comm"):
            t.comm = kc["comm"]
            p = self.procs.get(t.tgid)
            if p is not None and t.tid == t.tgid:
                p.comm = t.comm

    def _sys_exit(self, ev: "dict[str, Any]") -> None:
        t = self.tasks.get(ev["pid"])
        if t is None:
            return None
        enter = t.pending.pop(ev["syscall"], None)
        if enter is None:
            return None
        p = self.procs.get(t.tgid)
        if p is None:
            return None
        name, args, ret = ev["syscall"], enter.get("args") or [], ev["ret"]
        self._comm(t, ev)
        if name == "prctl":
            if args and args[0] == PR_SET_NAME:
                if ret == 0:
                    self._renamed(t)
                return None
            if args and args[0] == C.PR_SET_KEEPCAPS and ret == 0 and len(args) > 1:
                t.creds["keep_caps"] = bool(args[1])
                return None
            v = C.prctl_set_dumpable(args[0] if args else -1, args[1] if len(args) > 1 else -1, ret)
            if v is None:
                return None
            return self._record(p, t, enter, ev, "prctl", "prctl", t.creds, t.creds, v,
                                f"prctl(PR_SET_DUMPABLE, {v})", sd=None)
        if name not in CRED_SYSCALLS or ret < 0:
            return None
        before = t.creds
        new, rule, note = C.apply_syscall(name, args, before, ret)
        if new is None:
            # capset/setns: what changed is not in the arguments. capset never changes ids, so
            # only the capability sets are taken from the kernel (read now: maybe later values)
            kc = self.k.read_creds(t.tgid, t.tid)
            new = dict(before, uid=list(before["uid"]), gid=list(before["gid"]))
            new.pop("_pub", None)
            if kc:
                new["cap_prm"], new["cap_eff"] = kc["cap_prm"], kc["cap_eff"]
                if rule != "capset":
                    new["uid"], new["gid"] = list(kc["uid"]), list(kc["gid"])
        t.creds = new
        if rule in ("setgroups", "capset", "unshare", "unshare-userns"):
            if rule == "setgroups":
                return self._cred_record(p, t, enter, ev, before, new, rule,
                                         "supplementary groups only: dumpable is left alone")
            return None
        sd = self._sd()
        if rule == "setns-userns":
            kd = self.k.read_dumpable(t.tgid, None, self.use_pidfd, p.pidfd) or {}
            return self._record(p, t, enter, ev, "privilege-change", rule, before, new, kd.get("value"),
                                "setns(): the kernel's answer (cred_cap_issubset() depends on the namespace)",
                                sd=sd)
        resets, why = C.commit_creds(before, new, sd)
        if resets:
            return self._record(p, t, enter, ev, "privilege-change", rule, before, new, sd, why, sd=sd, note=note)
        if before["uid"] != new["uid"] or before["gid"] != new["gid"]:
            return self._cred_record(p, t, enter, ev, before, new, rule, why)
        return None

    def _record(self, p: Proc, t: Task, enter: "dict[str, Any]", ev: "dict[str, Any]", cause: str,
                rule: "Optional[str]", before: "dict[str, Any]", after_creds: "dict[str, Any]", after: "Optional[int]", why: str,
                sd: "Optional[int]", note: "Optional[str]" = None) -> None:
        prev = p.dumpable.get("value")
        prev_c = p.dumpable.get("candidates")
        r = {"event": "dumpable-change", "time": self._wall(enter["ts"]), "pid": t.tgid, "tid": t.tid,
             "comm": t.comm or p.comm, "syscall": enter.get("syscall") or ev.get("syscall"),
             "args": _show_args(ev.get("syscall"), enter.get("args") or []),
             "argnames": enter.get("argnames") or [], "ret": ev.get("ret"),
             "creds_before": _pub_creds(before), "creds_after": _pub_creds(after_creds),
             "suid_dumpable": sd, "before": prev, "before_candidates": prev_c, "after": after,
             "changed": None if prev is None or after is None else prev != after,
             "cause": cause, "rule": _rule(rule), "why": why, **self._stack_fields(enter, t.tgid),
             "confirmed": None}
        if note:
            r["note"] = note
        if r["changed"] is None and after is not None and prev_c and after not in prev_c:
            r["changed"] = True
        p.dumpable = {"value": after, "candidates": [after] if after is not None else [0, 1, 2],
                      "source": "model"}
        p.snap_dirty = True
        self.counts["dumpable_changes"] += 1
        p.unconfirmed.append((r, t.tid, enter["ts"]))
        return None

    def _cred_record(self, p: Proc, t: Task, enter: "dict[str, Any]", ev: "dict[str, Any]",
                     before: "dict[str, Any]", after: "dict[str, Any]", rule: "Optional[str]",
                     why: str) -> None:
        r = {"event": "cred-change", "time": self._wall(enter["ts"]), "pid": t.tgid, "tid": t.tid,
             "comm": t.comm or p.comm, "syscall": ev.get("syscall"),
             "args": _show_args(ev.get("syscall"), enter.get("args") or []),
             "argnames": enter.get("argnames") or [], "ret": ev.get("ret"),
             "creds_before": _pub_creds(before), "creds_after": _pub_creds(after), "dumpable": p.dumpable.get("value"),
             "rule": _rule(rule), "why": why, **self._stack_fields(enter, t.tgid), "confirmed": None}
        self.counts["cred_changes"] += 1
        p.snap_dirty = True
        p.unconfirmed.append((r, t.tid, enter["ts"]))
        return None

    def _fork(self, ev: "dict[str, Any]") -> None:
        f = ev["fields"]
        parent = self.tasks.get(ev["pid"]) or self._task(ev)
        child = f.get("child_pid")
        if parent is None or not isinstance(child, int):
            return
        creds = dict(parent.creds, uid=list(parent.creds["uid"]), gid=list(parent.creds["gid"]))
        ptgid = parent.tgid
        # the kernel's own copy of the name (the header's comm may be a stale cache entry)
        comm = f.get("child_comm") or parent.comm
        # a thread (CLONE_THREAD) or a process? /proc tells while the child lives
        kc = self.k.read_creds(child)
        tgid = kc.get("tgid", child) if kc else child
        if tgid != child:  # a new thread of the same process
            self.tasks[child] = Task(child, tgid, creds, comm)
            return
        pp = self.procs.get(ptgid)
        p = Proc(child, comm or (pp.comm if pp else None))
        if pp is not None:
            p.dumpable = dict(pp.dumpable)  # fork copies mm->flags' dumpable bits
            p.snap, p.snap_dirty, p.snap_window = pp.snap, True, pp.snap_window
            p.invalidated_at = pp.invalidated_at  # fork copies limits, umask and cwd
        self.procs[child] = p
        self.tasks[child] = Task(child, child, creds, comm)
        if self.use_pidfd:
            p.pidfd = self.k.open_pidfd(child)
        if self.sym is not None:
            try:
                self.sym.capture(child, parent=ptgid)  # the fork child shares its parent's layout
            except Exception:
                pass
        if self.on_fork:
            self.on_fork(child)

    def _exec(self, ev: "dict[str, Any]") -> None:
        f = ev["fields"]
        tid = f.get("pid", ev["pid"])
        old = f.get("old_pid", tid)
        t = self.tasks.get(old) or self.tasks.get(tid) or self._task(ev)
        if t is None:
            return
        if old != tid:  # a non-leader thread exec'd: it takes over the leader's pid
            self.tasks.pop(old, None)
            t.tid = tid
            self.tasks[tid] = t
        p = self.procs.get(t.tgid)
        if p is None:
            return
        before = t.creds
        # the new credentials from the binary's set-id bits (reading /proc now could show
        # later changes: daemons drop privileges right after exec)
        exe = self.k.exe_facts(f.get("filename") or "", t.tgid) if f.get("filename") else None
        after = C.exec_creds(before, exe, before.get("cap_bnd"))
        if after is None:  # file capabilities: only the kernel knows
            kc = self.k.read_creds(t.tgid)
            after = _model_creds(kc) if kc else dict(before)
        after["cap_bnd"] = before.get("cap_bnd")
        t.creds = after
        p.exe = f.get("filename")
        comm = _exec_comm(p.exe)
        if comm is None:  # fexecve(): the kernel's name for it is in /proc
            kc = self.k.read_creds(t.tgid)
            comm = (kc or {}).get("comm") or ev.get("comm") or t.comm
        t.comm = p.comm = comm
        if self.sym is not None:
            try:
                self.sym.forget(t.tgid)
                self.sym.capture(t.tgid)
            except Exception:
                pass
        sd = self._sd()
        # would_dump() on an unreadable binary is left to the kernel's confirmation: 6.18 was seen
        # to leave such a process dumpable (see kernel/dumpable.py)
        v, why = C.exec_dumpable(before, after, sd)
        prev = p.dumpable.get("value")
        p.snap_dirty = True
        if v == 1 and prev == 1:
            return  # an ordinary exec of a dumpable process: nothing to say
        enter = {"ts": ev["ts"], "syscall": "execve", "args": [p.exe], "argnames": ["filename"],
                 "ustack": ev.get("ustack"), "ustack_missing": ev.get("ustack_missing")}
        exit_ev = {"syscall": "execve", "ret": 0, "comm": p.comm}
        self._record(p, t, enter, exit_ev, "exec", "exec", before, after, v, why, sd=sd)
        p.unconfirmed[-1][0]["args"] = [p.exe]

    def _deliver(self, ev: "dict[str, Any]") -> None:
        f = ev["fields"]
        signo = f.get("sig")
        if not isinstance(signo, int) or f.get("sa_handler") not in (0, None):
            return
        name = signal_name(signo)
        if name in DEFAULT_IGNORED or name in STOP_SIGNALS:
            return
        t = self._task(ev)
        if t is None:
            return
        p = self.procs.get(t.tgid)
        if p is None or p.fatal is not None:
            return  # one fatal signal per process: siblings then get SIGKILL from the group exit
        code = f.get("code", 0)
        how = "fault" if isinstance(code, int) and code > 0 else "kill"
        r = {"event": "fatal-signal", "time": self._wall(ev["ts"]), "pid": t.tgid, "tid": t.tid,
             "comm": self._comm(t, ev) or p.comm, "signal": name, "signo": signo, "code": code, "how": how,
             "dumps_by_default": name in SIG_KERNEL_COREDUMP, "dumpable": p.dumpable.get("value"),
             "predicted": None, "dumped": None, "exit_status": None, "outcome_source": None, "agrees": None,
             "destination": None, **self._stack_fields(ev, t.tgid)}
        if self.predict is not None:
            try:
                pr = self.predict(p, t, name, how, ts=ev["ts"])
            except Exception as e:  # noqa: BLE001 -- a prediction failure must not stop the trace
                pr = {"dumps": None, "blocking_gate": None, "verdict": f"no prediction: {e}"}
            if pr:
                r["predicted"] = None if pr.get("stale") else pr.get("dumps")
                r["prediction"] = {"blocking_gate": pr.get("blocking_gate"), "verdict": pr.get("verdict"),
                                   "undecided_by": pr.get("undecided_by"), "read_at": pr.get("read_at"),
                                   "stale": bool(pr.get("stale"))}
                r["destination"] = pr.get("core_destination")
        p.fatal = r
        self.counts["fatal_signals"] += 1

    def _exit(self, ev: "dict[str, Any]") -> None:
        f = ev["fields"]
        pid = f.get("pid", ev["pid"])
        t = self.tasks.pop(pid, None)
        tgid = t.tgid if t else (ev.get("tgid") or pid)
        dead = f.get("group_dead")
        # text prints "true"/"false", binary records a bool; 6.1 has no group_dead
        group_dead = (dead is True or dead == "true") if dead is not None else (pid == tgid)
        if not group_dead:
            return
        p = self.procs.get(tgid)
        if p is None:
            return
        for tid in [k for k, v in self.tasks.items() if v.tgid == tgid]:
            self.tasks.pop(tid, None)
        p.exited = True
        p.exit_seen = time.monotonic()
        self.finished.append(tgid)
        if self.on_exit:
            self.on_exit(tgid)

    # --- after each batch -------------------------------------------------------------------
    def drained(self, started: float) -> None:
        """The reader emptied the trace buffer in a read that began at *started*
        (time.monotonic()): every event from before then has been handled."""
        if self.drained_from is None or started > self.drained_from:
            self.drained_from = started

    def confirm(self, final: bool = False) -> "list[Record]":
        """Confirm pending transitions from the kernel and settle exited processes' outcomes.
        Returns the records now complete, in time order.

        The kernel is read after each batch, so a task may have changed again in between. A
        record the kernel disagrees with is held until that is known: a later change of the
        same process traced before the read explains it (``agrees`` None, "changed again");
        if the buffer was emptied after the read (:meth:`drained`) and none came, the
        disagreement stands (``agrees`` False)."""
        out = []
        self._sd_value = None
        now = time.monotonic()
        for p in list(self.procs.values()):
            if not (p.unconfirmed or p.held):
                continue
            last_by_tid = {}
            for i, (r, tid, ts) in enumerate(p.unconfirmed):
                last_by_tid[tid] = i
            for i, (r, tid, ts) in enumerate(p.unconfirmed):
                if last_by_tid[tid] != i or p.exited:
                    r["confirmed"] = {"agrees": None, "source": None,
                                      "note": "not read: the process changed again or exited before "
                                              "the kernel could be asked"}
                else:
                    res = self._confirm_one(p, r, tid)
                    if res.get("agrees") is False and not final:
                        p.held.append({"record": r, "tid": tid, "res": res, "ts": ts, "read": time.monotonic()})
                        continue
                    r["confirmed"] = self._settled(res)
                p.after_held.append(r)
            if p.held:
                self._resolve_held(p, final, now)
            p.unconfirmed = []
            if not p.held:
                out.extend(p.after_held)
                p.after_held = []
        now = time.monotonic()
        for tgid in list(self.finished):
            found = self.procs.get(tgid)
            if found is None:
                self.finished.remove(tgid)
                continue
            p = found
            if p.held:  # its exit has been handled, so every event before it has been too
                self._resolve_held(p, True, now)
            out.extend(p.after_held)
            p.after_held = []
            done = self._settle(p, now, final)
            if done is not None:
                self.finished.remove(tgid)
                if done:
                    out.append(done)
                self._drop(p)
        out.sort(key=lambda r: r.get("time") or 0)
        return out

    def settle_held(self, older_than: float = 2.0) -> "list[Record]":
        """Settle the records held longer than *older_than* seconds as a final confirmation
        would, and return those now complete (with any kept back behind them). For a watcher that
        runs for days: a process that changes its credentials all the time would otherwise keep a
        held record, and every record behind it, until it exits (``coredoctor watch``)."""
        now = time.monotonic()
        out = []
        for p in list(self.procs.values()):
            if p.held and now - min(h["read"] for h in p.held) >= older_than:
                self._resolve_held(p, True, now)
                if not p.held:
                    out.extend(p.after_held)
                    p.after_held = []
        out.sort(key=lambda r: r.get("time") or 0)
        return out

    def _resolve_held(self, p: Proc, final: bool, now: float) -> None:
        """Settle *p*'s held records: explained by a later change of the process that was
        traced before the kernel was read, or, once nothing more can come, a disagreement."""
        keep = []
        for h in p.held:
            r, res = h["record"], h["res"]
            # the dumpable flag is the process's (any thread's change explains it), credentials
            # are the task's own
            changes = p.unconfirmed + [(q["record"], q["tid"], q["ts"]) for q in p.held]
            later = [(lr, ts) for lr, tid, ts in changes
                     if ("creds" not in res or tid == h["tid"]) and ts > h["ts"]
                     and (not self.mono or ts <= h["read"])]
            if later:
                lr, _ = min(later, key=lambda x: x[1])
                res["agrees"] = None
                res["note"] = (f"the process changed again ({lr.get('syscall')} at {lr.get('time')}) "
                               "before the kernel was read: " + res.pop("mismatch"))
                r["confirmed"] = res
                p.after_held.append(r)
            elif final or p.exited or (self.drained_from is not None and self.drained_from > h["read"]
                                       and now - h["read"] >= HOLD):
                r["confirmed"] = self._settled(res)
                newer = any(x.get("time", 0) > r["time"] for x in p.after_held) or \
                    any(ts > h["ts"] for _r, _t, ts in p.unconfirmed)
                if res.get("value") is not None and not newer:  # the kernel is the judge from now on
                    p.dumpable = {"value": res["value"], "candidates": [res["value"]], "source": res["source"]}
                p.after_held.append(r)
            else:
                keep.append(h)
        p.held = keep

    @staticmethod
    def _settled(res: "dict[str, Any]") -> "dict[str, Any]":
        """A confirmation as emitted: a disagreement nothing explains says what the kernel showed."""
        m = res.pop("mismatch", None)
        if res.get("agrees") is False and m:
            res["note"] = m + "; no later change of the process was traced"
        return res

    def _confirm_one(self, p: Proc, r: "Record", tid: int) -> "dict[str, Any]":
        kc = self.k.read_creds(p.tgid, tid)
        if kc is None:
            return {"agrees": None, "source": None, "note": "the task exited before it could be read"}
        t = self.tasks.get(tid)
        if t is not None:
            self._renamed(t, kc)
        want = r["creds_after"]
        if want and (kc["uid"] != want["uid"] or kc["gid"] != want["gid"]):
            return {"agrees": False, "source": "/proc/PID/task/TID/status", "value": None,
                    "creds": {"uid": kc["uid"], "gid": kc["gid"]},
                    "mismatch": f"the kernel shows uid {kc['uid']} gid {kc['gid']}"}
        kd = self.k.read_dumpable(p.tgid, kc, self.use_pidfd, p.pidfd)
        if not kd:
            return {"agrees": None, "source": None, "note": "the process exited before it could be read"}
        res = {"source": kd["source"], "value": kd.get("value"), "candidates": kd.get("candidates"),
               "evidence": kd.get("evidence")}
        if r["event"] == "cred-change":
            res["agrees"] = True
            return res
        after = r["after"]
        if after is None:
            res["agrees"] = None
            r["after"] = kd.get("value")
        elif kd["source"] == "unknown":
            res["agrees"] = None
            res["note"] = "the kernel offers no view of this process's dumpability (root-owned process)"
        else:
            res["agrees"] = after in kd["candidates"]
            if kd["value"] is None and res["agrees"]:
                res["note"] = "consistent, but /proc ownership cannot tell 0 from 2"
            elif not res["agrees"]:
                res["mismatch"] = f"the kernel shows dumpable {_cands(kd)}"
        if res["agrees"] is not False and kd.get("value") is not None and p.dumpable.get("source") == "model":
            p.dumpable = {"value": kd["value"], "candidates": [kd["value"]], "source": kd["source"]}
        return res

    def _settle(self, p: Proc, now: float, final: bool) -> "Union[Record, Literal[False], None]":
        """The outcome of an exited process's fatal signal; None while it is not known yet."""
        st, src = None, None
        if p.tgid in self.direct:  # our own child: its waitpid() status is exact
            if self.direct[p.tgid] is None and not final:
                return None
            if self.direct[p.tgid] is not None:
                st, src = self.direct[p.tgid], "waitpid"
        if st is None and p.pidfd is not None:
            st = self.k.exit_status(p.pidfd)
            src = "pidfd PIDFD_INFO_EXIT" if st is not None else None
        if st is None:
            z = self.k.zombie_status(p.tgid)
            if z is not None:
                st, src = z, "/proc/PID/stat exit_code of the zombie"
        waited = now - (p.exit_seen or now)
        if st is None and not final and waited < 1.0:
            return None
        r = p.fatal
        if r is None:
            return {"event": "exit", "time": None, "pid": p.tgid, "comm": p.comm,
                    "exit_status": st, "outcome_source": src} if st is not None and (st & 0x7F) else False
        r["exit_status"] = st
        r["outcome_source"] = src
        if st is None:
            r["dumped"] = None
            r["outcome_note"] = ("no exit status could be read: not our child, no PIDFD_INFO_EXIT on this "
                                 "kernel (6.15+), and it was reaped before /proc could be read")
        else:
            if st & 0x7F == 0:
                r["outcome_note"] = f"it exited normally (status {st >> 8}): the signal did not end it"
                r["dumped"] = False
                if r["signal"] == "SIGKILL":
                    return False  # a group exit's SIGKILL to a sibling thread, not a kill
            else:
                r["dumped"] = bool(st & 0x80)
                if signal_name(st & 0x7F) != r["signal"]:
                    r["outcome_note"] = f"it died of {signal_name(st & 0x7F)}"
        if r["predicted"] is not None and r["dumped"] is not None:
            r["agrees"] = r["predicted"] == r["dumped"]
        return r

    def _drop(self, p: Proc) -> None:
        if p.pidfd is not None:
            try:
                os.close(p.pidfd)
            except OSError:
                pass
            p.pidfd = None
        if self.sym is not None:
            try:
                self.sym.forget(p.tgid)
            except Exception:
                pass
        self.procs.pop(p.tgid, None)


def _cands(kd: "dict[str, Any]") -> str:
    v = kd.get("value")
    return str(v) if v is not None else " or ".join(map(str, kd.get("candidates") or []))


def _model_creds(c: "dict[str, Any]") -> "dict[str, Any]":
    return {"uid": list(c["uid"]), "gid": list(c["gid"]), "cap_prm": int(c.get("cap_prm") or 0),
            "cap_eff": int(c.get("cap_eff") or 0), "keep_caps": bool(c.get("keep_caps")),
            "cap_bnd": c.get("cap_bnd")}
