"""Command line: parse arguments and dispatch. Nothing else lives here."""

import argparse
import os
import sys
from types import ModuleType
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from coredoctor import __version__
from coredoctor.errors import Error, NotRoot, UsageError

EPILOG = """\
examples:
  sudo coredoctor check ovs-vswitchd          a process name, a pid, or a unit (NAME.service)
  sudo coredoctor check --all                 every process on the host
  sudo coredoctor check --pid 24441 --json    for scripts (schema coredoctor.check/1)
  coredoctor snapshot --all > host.json       on the customer's machine
  coredoctor check --from host.json           anywhere else, offline
  coredoctor explain-flags 204                decode an mm->flags value read with crash/drgn

exit status of check: 0 every target would dump, 1 at least one would not (or is
undecided), 2 bad usage, no such target, or a snapshot that is not one (too big, too deep,
a bad field: the error names it). Every subcommand: 130 interrupted, 70 an internal error
(a bug: one line names it), never a traceback.
"""


WATCH_EPILOG = """\
examples:
  sudo coredoctor watch --textfile /var/lib/prometheus/node-exporter    what the service runs
  sudo coredoctor watch --log json --duration 60                        a minute, JSON lines on stdout

exit status: 0 stopped (SIGTERM, SIGINT, --duration); 1 the trace reader failed; 2 bad usage;
3 no tracefs here, or the kernel offers none of the events watch needs. SIGHUP reloads.
"""

TRACE_EPILOG = """\
examples:
  sudo coredoctor trace -- ovs-ctl --ovs-user=openvswitch start    run a command under trace
  sudo coredoctor trace --name ovs-vswitchd              also processes not started yet
  sudo coredoctor trace --pid 24441 --unit nginx.service --json

exit status: the command's, with -- CMD; otherwise 0 (2 bad usage, 130 interrupted).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coredoctor", description="Why would a crash leave no core dump, "
                                "and what exactly to change so that it does.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"coredoctor {__version__}")
    sub = p.add_subparsers(dest="cmd")

    def targets(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("target", nargs="*", help="process name, pid or unit (NAME.service)")
        sp.add_argument("-p", "--pid", type=int, action="append", default=[], help="a pid (repeatable)")
        sp.add_argument("--all", action="store_true", help="every process")
        sp.add_argument("--container", action="append", default=[], metavar="CONTAINER",
                        help="every process of this container: its name, id, or an id prefix of 12+ hex "
                        "digits (podman, docker, containerd, CRI-O, LXC, nspawn; repeatable)")
        sp.add_argument("-s", "--signal", default="SIGSEGV", help="the fatal signal to predict (default SIGSEGV)")
        sp.add_argument("--how", choices=("fault", "kill"), default=None,
                        help="raised by a fault (default for SEGV/BUS/ILL/FPE/TRAP) or sent with kill()")

    c = sub.add_parser("check", help="predict whether a crash now would leave a core",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    targets(c)
    c.add_argument("--from", dest="from_file", metavar="FILE", help="evaluate a saved snapshot (- for stdin)")
    c.add_argument("--json", action="store_true", help="machine-readable output (coredoctor.check/1)")
    c.add_argument("-v", "--verbose", action="store_true", help="with --all: full report for each process")

    s = sub.add_parser("snapshot", help="save everything check needs as JSON (coredoctor.snapshot/1)")
    targets(s)
    s.add_argument("-o", "--output", default="-", help="file to write (default stdout)")

    fx = sub.add_parser("fix", help="plan (and with --apply make) the smallest change that lets the "
                        "target's next crash leave a core; reversible")
    targets(fx)
    fx.add_argument("--apply", action="store_true", help="make the changes (journaled; prints a fix id)")
    fx.add_argument("--daemon", action="store_true",
                    help="also edit the daemon's own config file where that is its fix (journaled)")
    fx.add_argument("--list", action="store_true", help="fixes applied on this host")
    fx.add_argument("--rollback", metavar="ID", help="restore exactly what was there before fix ID")
    fx.add_argument("--json", action="store_true", help="machine-readable output (coredoctor.fix/1)")

    cr = sub.add_parser("crashes", help="crashes that already happened (kernel log, journal, syslog, audit, apport, "
                        "handler stores), whether their core "
                        "survived, and why not")
    cr.add_argument("--since", help="only crashes after this time ('2 days ago', or ISO 8601)")
    cr.add_argument("--json", action="store_true", help="machine-readable output (coredoctor.crashes/1)")
    cr.add_argument("--source", action="append", choices=("kmsg", "journal", "syslog", "audit", "apport",
                                                          "systemd-coredump", "daemons"),
                    help="read only this source (repeatable; default: every source present)")
    cr.add_argument("--container", action="append", default=[], metavar="CONTAINER",
                    help="only crashes in this container (name, id or 12+ hex id prefix; repeatable)")
    cr.add_argument("--log", action="append", metavar="FILE",
                    help="also read this syslog file (kern.log, messages, .gz rotations) or a supervisor's own "
                         "log (nginx error.log, ovs-vswitchd.log; repeatable)")

    k = sub.add_parser("canary", help="prove it: a throwaway process with the target's credentials "
                       "faults for real; where did its core land?")
    k.add_argument("--like", type=int, metavar="PID", help="reproduce this process's ids, limits, cwd, umask")
    k.add_argument("--user", help="the user to switch to (from root, as a daemon does)")
    k.add_argument("--group", help="the group to switch to (default: the user's)")
    k.add_argument("--keep", action="store_true", help="keep the canary's core")
    k.add_argument("--json", action="store_true", help="machine-readable output (coredoctor.canary/1)")

    tr = sub.add_parser("trace", help="watch, live, every change of a process's dumpable flag and every "
                        "fatal signal (tracefs; -- CMD runs a command under trace)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=TRACE_EPILOG)
    tr.add_argument("-p", "--pid", type=int, action="append", default=[], help="a pid (repeatable)")
    tr.add_argument("--name", action="append", default=[], help="processes of this name, also ones not "
                    "started yet (repeatable)")
    tr.add_argument("--unit", action="append", default=[], help="the processes of a systemd unit (repeatable)")
    tr.add_argument("--container", action="append", default=[], metavar="CONTAINER",
                    help="the processes running in this container now (name, id or 12+ hex id prefix; repeatable)")
    tr.add_argument("--json", action="store_true", help="one JSON object per line")
    tr.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    tr.add_argument("-o", "--output", metavar="FILE", help="write the trace here (default: stdout; "
                    "stderr when a command runs, so its own output passes through)")
    tr.add_argument("--no-stack", action="store_true", help="no user-space stacks (options/userstacktrace)")
    tr.add_argument("--buffer-kb", type=int, default=8192, metavar="KB",
                    help="ring buffer per CPU (tracefs buffer_size_kb; default 8192): raise it when "
                    "the trace says events were lost")
    tr.add_argument("command", nargs="*", help="-- CMD [ARGS...]: run CMD under trace")

    m = sub.add_parser("metrics", help="the host's core-dump readiness and lost cores as Prometheus metrics "
                       "(the text exposition; --textfile DIR for node_exporter)")
    m.add_argument("--textfile", metavar="DIR", help="write DIR/coredoctor.prom atomically instead of stdout "
                   "(Debian's node_exporter reads /var/lib/prometheus/node-exporter)")
    m.add_argument("--no-crashes", action="store_true", help="do not read the crash history (faster)")

    w = sub.add_parser("watch", help="run for days: log every loss of dumpability by a service or container "
                       "process and every fatal signal (journal or syslog), keep the metrics file current",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=WATCH_EPILOG)
    w.add_argument("--textfile", metavar="DIR", help="keep DIR/coredoctor.prom current (as metrics --textfile)")
    w.add_argument("--log", choices=("auto", "journal", "syslog", "json"), default="auto",
                   help="where entries go (auto: the journal, else /dev/log, else JSON lines on stdout)")
    w.add_argument("--log-socket", metavar="PATH", help="the journal's or syslog's socket (default "
                   "/run/systemd/journal/socket, /dev/log)")
    w.add_argument("--config", metavar="FILE", help="ignore-unit/all-processes/interval lines, re-read on "
                   "SIGHUP (default /etc/coredoctor/watch.conf when it exists)")
    w.add_argument("--all-processes", action="store_true", help="also log losses of processes outside "
                   "services and containers")
    w.add_argument("--interval", type=float, default=60.0, metavar="SECONDS",
                   help="rewrite the textfile at least this often (default 60)")
    w.add_argument("--buffer-kb", type=int, default=16384, metavar="KB", help="ring buffer per CPU (default 16384)")
    w.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")

    e = sub.add_parser("explain-flags", help="decode an mm->flags value (decimal or 0x hex)")
    e.add_argument("value")
    e.add_argument("--json", action="store_true")
    return p


#: exit codes of every subcommand (besides its own, documented in its epilog)
EXIT_USAGE = 2       # bad usage, no such target, a file that is not what it should be (a snapshot)
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70   # EX_SOFTWARE: a bug in coredoctor; one line names the exception and where
MAX_ERROR_LINE = 1000  # an error line quotes input: never more than this many characters


def _say(msg: str) -> None:
    """One line on stderr, whatever *msg* holds (control characters, lone surrogates, length)."""
    from coredoctor.render.safe import escape
    line = escape(f"coredoctor: {msg}")
    if len(line) > MAX_ERROR_LINE:
        line = line[:MAX_ERROR_LINE - 3] + "..."
    try:
        print(line, file=sys.stderr)
    except (OSError, ValueError):  # stderr closed: the exit code still tells
        pass


def _backstop_streams() -> None:
    """Text output never fails on a character the terminal cannot encode (escaping at the
    renderers' boundary is the first line; this is the backstop)."""
    for stream in (sys.stdout, sys.stderr):
        reconf = getattr(stream, "reconfigure", None)
        if reconf is not None:
            try:
                reconf(errors="backslashreplace")
            except (ValueError, OSError, TypeError):
                pass


def _where(e: BaseException) -> str:
    """file:line in function where *e* was raised (no import: it may run after a privilege drop)."""
    tb = e.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{os.path.basename(code.co_filename)}:{tb.tb_lineno} in {code.co_name}"


def main(argv: Optional[List[str]] = None) -> int:
    """Parse, dispatch from :data:`COMMANDS`, and turn whatever escapes into one stderr line
    and the documented exit code (argparse's own errors exit 2 as argparse does)."""
    _backstop_streams()
    p = _parser()
    args = p.parse_args(argv)
    handler = COMMANDS.get(args.cmd)
    if handler is None:
        p.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except Error as e:
        _say(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `coredoctor check --all | head`: not an error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except OSError as e:  # a system refusal nobody foresaw: still one line, never a traceback
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        _say(f"{e.strerror or e}{where}")
        return EXIT_USAGE
    except Exception as e:  # a bug: one line naming it and where, never a traceback
        _say(f"internal error: {e.__class__.__name__} at {_where(e)}: {e}")
        return EXIT_INTERNAL


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise NotRoot(f"{what} needs root to read other processes' credentials, limits and "
                      "dumpability: run it with sudo (or evaluate a saved snapshot with --from FILE)")


def _resolve_live(args: argparse.Namespace) -> Optional[List[int]]:
    """Target words -> pids, on the live system (snapshot/targets.py)."""
    from coredoctor.snapshot import targets
    return targets.resolve_live(args.target, args.pid, args.all, containers=args.container)


def _scan_names(names: Sequence[str], units: Sequence[str]) -> Dict[str, List[int]]:
    from coredoctor.snapshot import targets
    return targets.find(names, units)


def _resolve_offline(args: argparse.Namespace, snap: Dict[str, Any]) -> List[int]:
    from coredoctor.snapshot import targets
    return targets.resolve_offline(snap, args.target, args.pid, args.all, containers=args.container)


def _live_signal(name: str) -> str:
    """A signal name or number as this machine numbers it (SIGSEGV, segv, 11)."""
    import signal as pysignal
    from coredoctor.kernel.signal import normalize_signal
    table = {n: int(getattr(pysignal, n)) for n in dir(pysignal)
             if n.startswith("SIG") and not n.startswith(("SIG_", "SIGRT")) and isinstance(getattr(pysignal, n), int)}
    try:
        return normalize_signal(name, table)
    except ValueError as e:
        raise UsageError(str(e))


def cmd_check(args: argparse.Namespace) -> int:
    """:func:`_check` without cyclic garbage collection: the snapshot and the results are trees,
    freed by reference counting, and the collector's passes over 2,000 processes' dicts were
    ~25 ms of check --all (re-enabled after, for callers that go on: cli.main() in tests)."""
    import gc
    was = gc.isenabled()
    gc.disable()
    try:
        return _check(args)
    finally:
        if was:
            gc.enable()


def _check(args: argparse.Namespace) -> int:
    if not args.from_file:
        _need_root("coredoctor check")
    from coredoctor import snapshot
    from coredoctor.kernel import gates
    from coredoctor.kernel.signal import normalize_signal
    from coredoctor.render import json as rjson

    if args.from_file:
        snap = snapshot.load(args.from_file)
        pids = _resolve_offline(args, snap)
    else:
        live = _resolve_live(args)  # (None: every process)
        snap = snapshot.take(live, signal=_live_signal(args.signal))
        pids = snap["targets"]
    try:
        sig = normalize_signal(args.signal, snap["kernel"]["signals"])
    except ValueError as e:
        raise UsageError(str(e))
    try:
        results = gates.evaluate_targets(snap, pids, sig, args.how)
    except (KeyError, TypeError, ValueError) as e:
        if args.from_file:
            from coredoctor.errors import SnapshotError
            raise SnapshotError(f"{args.from_file}: snapshot is corrupt ({e.__class__.__name__}: {e})")
        raise
    if not results:
        raise UsageError("no process to check")
    if args.json:
        print(rjson.dumps(rjson.check_document(snap["kernel"]["release"], results, snap.get("skipped")),
                          pretty=sys.stdout.isatty() or len(results) == 1))
        return 0 if all(t["dumps"] is True for t in results) else 1
    from coredoctor.render import safe, text as rtext  # (not for --json: start-up time)
    if len(results) == 1 or (not args.all and len(results) <= 3) or args.verbose:
        print("\n\n".join(rtext.target_report(safe.clean(t)) for t in results))
    else:
        print(rtext.summary_table(safe.clean(results), safe.clean(snap.get("skipped"))))
    return 0 if all(t["dumps"] is True for t in results) else 1


def cmd_snapshot(args: argparse.Namespace) -> int:
    _need_root("coredoctor snapshot")
    from coredoctor import snapshot
    pids = _resolve_live(args)
    snap = snapshot.take(pids, signal=_live_signal(args.signal))
    if args.output == "-":
        snapshot.dump(snap, sys.stdout)
    else:
        tmp = args.output + ".tmp"
        with open(tmp, "w") as f:
            snapshot.dump(snap, f)
        os.replace(tmp, args.output)
    return 0


def cmd_explain_flags(args: argparse.Namespace) -> int:
    import json
    from coredoctor.kernel.dumpable import decode_mm_flags, parse_mm_flags
    from coredoctor.render import safe, text as rtext
    try:
        v = parse_mm_flags(args.value)
    except ValueError as e:
        shown = args.value if len(args.value) <= 40 else args.value[:37] + "..."
        raise UsageError(f"explain-flags {shown!r}: {e}")
    d = decode_mm_flags(v)
    print(json.dumps(d, indent=2) if args.json else rtext.explain_flags(safe.clean(d)))
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    _need_root("coredoctor canary")
    import json
    from coredoctor import canary, snapshot
    from coredoctor.kernel import gates
    from coredoctor.render import safe, text as rtext
    if bool(args.like) == bool(args.user):
        raise UsageError("name what to imitate: --like PID, or --user USER [--group GROUP]")
    if args.like:
        snap = snapshot.take([args.like])
        spec = canary.spec_like({p["pid"]: p for p in snap["processes"]}[args.like])
    else:
        spec = canary.spec_for_user(args.user, args.group)

    def evaluate(pid: int) -> Dict[str, Any]:
        s = snapshot.take([pid])
        procs = {p["pid"]: p for p in s["processes"]}
        return gates.evaluate(s, procs[pid], procs.get(procs[pid]["ppid"]), "SIGSEGV", "fault", procs)

    report = canary.run(spec, evaluate, keep=args.keep)
    report["schema"] = "coredoctor.canary/1"
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(rtext.canary_report(safe.clean(report)))
    if report["agrees"] is False:
        return 4
    return 0 if report["dumped"] else 1


def cmd_fix(args: argparse.Namespace) -> int:
    _need_root("coredoctor fix")
    import json
    from coredoctor.fix import actions, journal
    from coredoctor.render import safe, text as rtext
    if args.list:
        entries = journal.list_all()
        fixes: List[Dict[str, Any]] = [
            {"id": e["id"], "created": e.get("created"), "state": e.get("state"), "target": e.get("target"),
             "targets": actions.entry_targets(e),
             "actions": [dict(r["action"], done=r.get("done"), error=r.get("error")) for r in e.get("actions", [])]}
            for e in entries]
        doc = {"schema": "coredoctor.fix/1", "fixes": fixes}
        print(json.dumps(doc, indent=2) if args.json else rtext.fix_list(fixes))
        return 0
    if args.rollback:
        entry, notes = actions.rollback(args.rollback)
        doc = {"schema": "coredoctor.fix/1", "id": entry["id"], "state": entry["state"],
               "restored": [actions.describe(r["action"]) for r in reversed(entry["actions"])
                            if not r.get("reported")], "notes": notes}
        print(json.dumps(doc, indent=2) if args.json else rtext.fix_rollback(doc))
        return 0
    doc, targets = _plan_fix(args)
    if args.apply:
        actions.apply_document(doc, targets)
    print(json.dumps(doc, indent=2) if args.json else rtext.fix_plan(_clean_but_actions(safe, doc)))
    return 0


def _clean_but_actions(safe: ModuleType, doc: Dict[str, Any]) -> Dict[str, Any]:
    """Names escaped for text; the actions' commands and file contents shown exactly."""
    return dict(safe.clean({k: v for k, v in doc.items() if k != "actions"}), actions=doc["actions"])


def _plan_fix(args: argparse.Namespace) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    from coredoctor import snapshot
    from coredoctor.fix import conflicts, plan as fplan
    from coredoctor.kernel import gates
    from coredoctor.snapshot import proc as procmod
    pids = _resolve_live(args)
    if pids is None:
        raise UsageError("fix takes targets (a name, a pid or a unit), not --all")
    sig = _live_signal(args.signal)
    snap = snapshot.take(pids, signal=sig)
    targets = gates.evaluate_targets(snap, snap["targets"], sig, args.how)
    found = conflicts.find(fplan.SYSCTL_FILE, {"fs.suid_dumpable": "2"})
    return fplan.document(snap, targets, found, running=set(procmod.comms().values()),
                          daemon=bool(getattr(args, "daemon", False))), targets


def cmd_crashes(args: argparse.Namespace) -> int:
    _need_root("coredoctor crashes")
    import json
    from coredoctor.history import crashes as hist, report
    from coredoctor.render import safe, text as rtext
    try:
        since = hist.parse_since(args.since) if args.since else None
    except ValueError as e:
        raise UsageError(str(e))
    for f in args.log or []:
        if not os.path.isfile(f):
            raise UsageError(f"--log {f}: no such file")
    doc = report.build(since, only=args.source or None, log_files=args.log or None)
    if args.container:
        from coredoctor.snapshot import targets
        found = {f"{c['runtime']}:{c['id']}": c for c in (r.get("container") for r in doc["crashes"]) if c}
        keep = {k for w in args.container for k in targets.pick_containers(w, found, "has a crash on record")}
        doc["crashes"] = [r for r in doc["crashes"] if r.get("container")
                          and f"{r['container']['runtime']}:{r['container']['id']}" in keep]
    print(json.dumps(doc, indent=2) if args.json else rtext.crashes_report(safe.clean(doc)))
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    _need_root("coredoctor trace")
    import json
    from coredoctor.render import safe, trace as rtrace
    from coredoctor.trace import run as trun
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.duration is not None and not 0 < args.duration < float("inf"):  # also NaN
        raise UsageError("--duration must be a positive number of seconds")
    pids = list(args.pid)
    for pid in pids:
        if pid <= 0 or not os.path.isdir(f"/proc/{pid}"):
            raise UsageError(f"no such process: pid {pid}")
    if args.unit:
        from coredoctor.snapshot import targets
        pids.extend(targets.unit_pids(args.unit))
    if args.container:
        from coredoctor.snapshot import targets
        pids.extend(targets.container_pids(args.container))
    for n in args.name:
        if not n or "\n" in n:
            raise UsageError(f"not a process name: {n!r}")
    if not (pids or args.name or cmd):
        raise UsageError("name what to trace: -- CMD, --pid PID, --name NAME, --unit UNIT or --container NAME")
    if not 64 <= args.buffer_kb <= 1 << 21:
        raise UsageError("--buffer-kb must be between 64 and 2097152")
    out: TextIO
    if args.output:
        try:
            out = open(args.output, "w", buffering=1)
        except OSError as e:
            raise UsageError(f"cannot write {args.output}: {e.strerror}")
    else:
        out = sys.stderr if cmd else sys.stdout

    def emit(r: Dict[str, Any]) -> None:
        if args.json:
            out.write(json.dumps(r, separators=(",", ":")) + "\n")
        else:
            text = rtrace.line(safe.clean(r))
            if text is None:
                return
            try:
                out.write(text + "\n")
            except UnicodeEncodeError:  # a terminal that cannot show a name: escape what it cannot
                enc = getattr(out, "encoding", None) or "ascii"
                out.write(text.encode(enc, "backslashreplace").decode(enc, "replace") + "\n")
        out.flush()

    what = " ".join(cmd) if cmd else ", ".join([f"pid {p}" for p in pids] + [f"name {n}" for n in args.name])
    if not args.json:
        out.write(f"coredoctor trace: watching {what}: dumpable transitions and fatal signals (Ctrl-C stops)\n")
    try:
        return trun.run(pids=pids, names=args.name, cmd=cmd or None, duration=args.duration, emit=emit,
                        userstack=not args.no_stack, buffer_kb=args.buffer_kb)
    finally:
        if args.output:
            out.close()


def cmd_watch(args: argparse.Namespace) -> int:
    _need_root("coredoctor watch")
    from coredoctor.watch import run as wrun
    for name, v, lo in (("--interval", args.interval, 1.0), ("--duration", args.duration, 0.0)):
        if v is not None and not lo < v < float("inf"):
            raise UsageError(f"{name} must be a number of seconds above {lo:g}")
    if not 64 <= args.buffer_kb <= 1 << 21:
        raise UsageError("--buffer-kb must be between 64 and 2097152")
    if args.log_socket and args.log not in ("journal", "syslog"):
        raise UsageError("--log-socket wants --log journal or --log syslog")
    return wrun.run(textfile=args.textfile, log=args.log, log_socket=args.log_socket, config=args.config, all_processes=args.all_processes,
                    interval=args.interval, buffer_kb=args.buffer_kb, duration=args.duration, say=_say)


def cmd_metrics(args: argparse.Namespace) -> int:
    _need_root("coredoctor metrics")
    from coredoctor import metrics
    text = metrics.collect(with_crashes=not args.no_crashes)
    if args.textfile:
        metrics.write_textfile(args.textfile, text)
    else:
        sys.stdout.write(text)
    return 0


#: subcommand -> handler (argparse's ``dest="cmd"``)
COMMANDS = {
    "check": cmd_check,
    "snapshot": cmd_snapshot,
    "explain-flags": cmd_explain_flags,
    "canary": cmd_canary,
    "fix": cmd_fix,
    "crashes": cmd_crashes,
    "trace": cmd_trace,
    "metrics": cmd_metrics,
    "watch": cmd_watch,
}
