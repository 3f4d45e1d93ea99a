"""Command line: parse arguments and dispatch. Nothing else lives here."""

import argparse
import os
import sys

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
undecided), 2 bad usage or no such target.
"""


def _parser():
    p = argparse.ArgumentParser(prog="coredoctor", description="Why would a crash leave no core dump, "
                                "and what exactly to change so that it does.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"coredoctor {__version__}")
    sub = p.add_subparsers(dest="cmd")

    def targets(sp):
        sp.add_argument("target", nargs="*", help="process name, pid or unit (NAME.service)")
        sp.add_argument("-p", "--pid", type=int, action="append", default=[], help="a pid (repeatable)")
        sp.add_argument("--all", action="store_true", help="every process")
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

    e = sub.add_parser("explain-flags", help="decode an mm->flags value (decimal or 0x hex)")
    e.add_argument("value")
    e.add_argument("--json", action="store_true")
    return p


def main(argv=None):
    p = _parser()
    args = p.parse_args(argv)
    try:
        if args.cmd == "check":
            return cmd_check(args)
        if args.cmd == "snapshot":
            return cmd_snapshot(args)
        if args.cmd == "explain-flags":
            return cmd_explain_flags(args)
        p.print_help()
        return 2
    except Error as e:
        print(f"coredoctor: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _need_root(what):
    if os.geteuid() != 0:
        raise NotRoot(f"{what} needs root to read other processes' credentials, limits and "
                      "dumpability: run it with sudo (or evaluate a saved snapshot with --from FILE)")


def _resolve_live(args):
    """Target words -> pids, on the live system."""
    from coredoctor.snapshot import proc as procmod
    if args.all:
        if args.target or args.pid:
            raise UsageError("--all takes no other targets")
        return None
    pids = list(args.pid)
    names, units = [], []
    for t in args.target:
        if t.isdigit():
            pids.append(int(t))
        elif "." in t and t.rsplit(".", 1)[1] in ("service", "scope", "socket", "mount"):
            units.append(t)
        else:
            names.append(t)
    if not (pids or names or units):
        raise UsageError("name a target: a process name, a pid, a unit (NAME.service), or --all")
    for pid in pids:
        if pid <= 0 or not os.path.isdir(f"{procmod.PROC}/{pid}"):
            raise UsageError(f"no such process: pid {pid}")
    if names or units:
        found = _scan_names(names, units)
        for t in names + units:
            if not found.get(t):
                kind = "unit" if t in units else "process named"
                raise UsageError(f"no {kind} {t!r} is running")
            pids.extend(found[t])
    return sorted(set(pids))


def _scan_names(names, units):
    from coredoctor.snapshot import proc as procmod
    found = {t: [] for t in names + units}
    for pid in procmod.list_pids():
        base = f"{procmod.PROC}/{pid}"
        try:
            if names:
                with open(f"{base}/comm") as f:
                    comm = f.read().strip()
                try:
                    exe = os.path.basename(os.readlink(f"{base}/exe")).replace(" (deleted)", "")
                except OSError:
                    exe = None
                for n in names:
                    if n in (comm, exe) or (len(n) > 15 and n[:15] == comm):
                        found[n].append(pid)
            if units:
                with open(f"{base}/cgroup") as f:
                    cg = f.read()
                for u in units:
                    if f"/{u}\n" in cg or f"/{u}/" in cg:
                        found[u].append(pid)
        except OSError:
            continue
    return found


def _resolve_offline(args, snap):
    procs = {p["pid"]: p for p in snap["processes"]}
    if args.all:
        return sorted(snap.get("targets") or procs)
    if not (args.target or args.pid):
        return list(snap.get("targets") or [])
    pids = list(args.pid)
    for t in args.target:
        if t.isdigit():
            pids.append(int(t))
            continue
        m = [p["pid"] for p in procs.values()
             if t in (p.get("comm"), os.path.basename(p.get("exe") or ""), p.get("unit"))]
        if not m:
            raise UsageError(f"no process {t!r} in the snapshot")
        pids.extend(m)
    for pid in pids:
        if pid not in procs:
            raise UsageError(f"pid {pid} is not in the snapshot")
    return sorted(set(pids))


def _live_signal(name):
    """A signal name or number as this machine numbers it (SIGSEGV, segv, 11)."""
    import signal as pysignal
    from coredoctor.kernel.signal import normalize_signal
    table = {n: int(getattr(pysignal, n)) for n in dir(pysignal)
             if n.startswith("SIG") and not n.startswith(("SIG_", "SIGRT")) and isinstance(getattr(pysignal, n), int)}
    try:
        return normalize_signal(name, table)
    except ValueError as e:
        raise UsageError(str(e))


def cmd_check(args):
    if not args.from_file:
        _need_root("coredoctor check")
    from coredoctor import snapshot
    from coredoctor.kernel import gates
    from coredoctor.kernel.signal import normalize_signal
    from coredoctor.render import json as rjson, text as rtext

    if args.from_file:
        snap = snapshot.load(args.from_file)
        pids = _resolve_offline(args, snap)
    else:
        pids = _resolve_live(args)
        snap = snapshot.take(pids, signal=_live_signal(args.signal))
        pids = snap["targets"]
    try:
        sig = normalize_signal(args.signal, snap["kernel"]["signals"])
    except ValueError as e:
        raise UsageError(str(e))
    procs = {p["pid"]: p for p in snap["processes"]}
    results = []
    for pid in pids:
        p = procs[pid]
        try:
            results.append(gates.evaluate(snap, p, procs.get(p.get("ppid")), sig, args.how, procs))
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
    elif len(results) == 1 or (not args.all and len(results) <= 3) or args.verbose:
        print("\n\n".join(rtext.target_report(t) for t in results))
    else:
        print(rtext.summary_table(results, snap.get("skipped")))
    return 0 if all(t["dumps"] is True for t in results) else 1


def cmd_snapshot(args):
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


def cmd_explain_flags(args):
    import json
    from coredoctor.kernel.dumpable import decode_mm_flags
    from coredoctor.render import text as rtext
    try:
        v = int(args.value, 0)
    except ValueError:
        raise UsageError(f"not a number: {args.value!r} (decimal, or hex with 0x)")
    if v < 0:
        raise UsageError("mm->flags is never negative")
    d = decode_mm_flags(v)
    print(json.dumps(d, indent=2) if args.json else rtext.explain_flags(d))
    return 0
