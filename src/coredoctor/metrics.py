"""
Prometheus metrics
------------------
``coredoctor metrics`` prints the Prometheus text exposition (format 0.0.4) of one host: what
``check --all`` predicts for every process, per service and container whether its next crash
would leave a core, the crashes ``crashes`` found with the fate of their core, and the losses of
dumpability ``watch`` saw. ``--textfile DIR`` writes ``DIR/coredoctor.prom`` atomically (a
temporary file in DIR, then a rename) for node_exporter's textfile collector.

No sample carries a pid label (pids are unbounded cardinality) or a timestamp (the textfile
collector rejects them). Counters live across runs in ``STATE_DIR/metrics.json``
(``COREDOCTOR_STATE_DIR``, default ``/var/lib/coredoctor``, as the fix journal), updated under
an flock so that the timer's runs and ``watch`` never lose each other's increments.

The rendering (:func:`render`, :func:`families`, :func:`count_crashes`) is pure; only
:func:`collect` reads the system, through the snapshot and history layers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

__all__ = ["STATE_FILE", "TEXTFILE_NAME", "state_dir", "render", "families", "count_crashes",
           "container_of", "collect", "write_textfile", "update_state", "load_state"]

TEXTFILE_NAME = "coredoctor.prom"
STATE_FILE = "metrics.json"
#: label values quote names that processes, units and containers chose: never more than this
MAX_LABEL = 200
#: crash keys remembered so a crash still in the logs is not counted twice (newest kept)
MAX_SEEN = 50000

#: (name, type, help) of every family, in output order (the issue #13 contract)
FAMILIES = (
    ("coredoctor_processes", "gauge",
     "Processes by what a SIGSEGV now would do: verdict core, no_core or undecided, and the first "
     "gate that blocks (none when it would dump)."),
    ("coredoctor_target_would_dump", "gauge",
     "1 when every process of the service or container would leave a core on a SIGSEGV now, else 0."),
    ("coredoctor_crashes_total", "counter",
     "Crashes found in the logs since coredoctor first ran, by the fate of their core and the gate "
     "that cost it (unknown when no gate is known)."),
    ("coredoctor_dumpability_losses_total", "counter",
     "Times coredoctor watch saw a process of a service or container lose its dumpable flag."),
    ("coredoctor_last_run_timestamp_seconds", "gauge",
     "Unix time at which coredoctor last computed these metrics."),
    ("coredoctor_run_duration_seconds", "gauge",
     "Seconds the last computation of these metrics took."),
    ("coredoctor_info", "gauge", "The coredoctor version and the running kernel's release."),
)

CORE_STATES = ("present", "missing", "truncated", "empty", "unknown")

#: container scopes in a cgroup path, by runtime (the id the runtime names it by)
#: -- docker: docker-<id>.scope (systemd driver) or /docker/<id> (cgroupfs driver)
#: -- podman: libpod-<id>.scope, libpod-conmon-<id>.scope is the monitor, not the container
#: -- containerd/CRI: cri-containerd-<id>.scope; CRI-O: crio-<id>.scope
#: -- LXC: /lxc.payload.<name>/ (LXC 4+) or /lxc/<name>/; systemd-nspawn: machine-<name>.scope
def state_dir() -> str:
    return os.environ.get("COREDOCTOR_STATE_DIR", "/var/lib/coredoctor")


def container_of(cgroup: "Optional[str]") -> str:
    """The container a cgroup path places a process in ('' for none), by the one table of
    container cgroup formats (:data:`coredoctor.snapshot.containers.FORMATS`); ids cut to 12
    characters as ``docker ps`` and ``podman ps`` show them."""
    from coredoctor.snapshot.containers import from_path
    c = from_path(cgroup) if isinstance(cgroup, str) else None
    if c is None or not isinstance(c.get("id"), str):
        return ""
    cid = c["id"]
    return cid[:12] if re.fullmatch(r"[0-9a-f]{13,64}", cid) else cid


def _label(v: "Any") -> str:
    """A label value: valid UTF-8 (undecodable bytes as \\xNN text), at most MAX_LABEL
    characters, escaped as the exposition format wants (backslash, double quote, newline)."""
    s = "" if v is None else str(v)
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(s) > MAX_LABEL:
        s = s[:MAX_LABEL - 3] + "..."
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(x: float) -> str:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "+Inf" if x > 0 else "-Inf"
    if float(x).is_integer() and abs(x) < 2 ** 53:
        return str(int(x))
    return repr(float(x))


def render(fams: "Dict[str, List[Tuple[Dict[str, str], float]]]") -> str:
    """The exposition text: every family of :data:`FAMILIES` with HELP and TYPE (also one with
    no samples yet), samples sorted by their labels so that two runs diff cleanly."""
    out = []
    for name, typ, help_ in FAMILIES:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {typ}")
        rows = []
        for labels, v in fams.get(name, ()):
            lab = ",".join(f'{k}="{_label(labels[k])}"' for k in sorted(labels))
            rows.append((f"{name}{{{lab}}}" if lab else name, _value(v)))
        for series, text in sorted(rows):
            out.append(f"{series} {text}")
    return "\n".join(out) + "\n"


#: a crash's time read twice differs when it comes from the kernel log (boot time + monotonic
#: stamp, recomputed each run): the same pid, name and signal within this many seconds is one crash
SAME_CRASH_S = 30.0


def _key(c: "Dict[str, Any]") -> str:
    return json.dumps([c.get("pid"), c.get("comm"), c.get("signo")], separators=(",", ":"))


def count_crashes(state: "Dict[str, Any]", crashes: "List[Dict[str, Any]]") -> "Dict[str, Any]":
    """Add the crashes (``coredoctor.crashes/1`` records) not counted before to the state's
    counters; returns the new state. A crash is counted once however many runs see it: it is
    known when a crash of the same pid, name and signal was counted within SAME_CRASH_S."""
    counts = dict(state.get("crashes") or {})
    seen = {k: list(v) for k, v in (state.get("seen") or {}).items()}
    for c in crashes:
        k = _key(c)
        t = c.get("time")
        t = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and t == t else 0.0
        if any(abs(t - s) <= SAME_CRASH_S for s in seen.get(k, ())):
            continue
        core = (c.get("core") or {}).get("status")
        core = core if core in CORE_STATES else "unknown"
        reason = (c.get("likely_reason") or {}).get("gate") or "unknown"
        ck = f"{core}|{reason}"
        counts[ck] = int(counts.get(ck, 0)) + 1
        seen.setdefault(k, []).append(t)
    flat = sorted(((t, k) for k, ts in seen.items() for t in ts), reverse=True)[:MAX_SEEN]
    kept: "Dict[str, List[float]]" = {}
    for t, k in flat:
        kept.setdefault(k, []).append(t)
    return dict(state, crashes=counts, seen=kept)


def families(targets: "List[Dict[str, Any]]", units: "Dict[int, Tuple[str, str]]", state: "Dict[str, Any]",
             version: str, kernel: str, started: float, now: float) -> "Dict[str, List[Tuple[Dict[str, str], float]]]":
    """The samples, from check results (*targets*), each pid's (unit, container), the counters'
    state, and the times of this run."""
    procs: "Dict[Tuple[str, str], int]" = {}
    would: "Dict[Tuple[str, str], int]" = {}
    for t in targets:
        d = t.get("dumps")
        verdict = "core" if d is True else "no_core" if d is False else "undecided"
        gate = t.get("blocking_gate") or "none"
        procs[(verdict, gate)] = procs.get((verdict, gate), 0) + 1
        unit, container = units.get(t.get("pid") or 0, ("", ""))
        if unit or container:
            k = (unit, container)
            would[k] = min(would.get(k, 1), 1 if d is True else 0)
    fams: "Dict[str, List[Tuple[Dict[str, str], float]]]" = {
        "coredoctor_processes": [({"verdict": v, "gate": g}, n) for (v, g), n in procs.items()],
        "coredoctor_target_would_dump": [({"unit": u, "container": c}, v) for (u, c), v in would.items()],
        "coredoctor_crashes_total": [],
        "coredoctor_dumpability_losses_total": [({"unit": u}, int(n))
                                                for u, n in (state.get("losses") or {}).items()],
        "coredoctor_last_run_timestamp_seconds": [({}, round(now, 3))],
        "coredoctor_run_duration_seconds": [({}, round(max(0.0, now - started), 6))],
        "coredoctor_info": [({"version": version, "kernel": kernel}, 1)],
    }
    for ck, n in (state.get("crashes") or {}).items():
        core, _, reason = ck.partition("|")
        fams["coredoctor_crashes_total"].append(({"core": core, "reason": reason}, int(n)))
    return fams


# --- state: counters across runs -------------------------------------------------------------

def load_state(path: "Optional[str]" = None) -> "Dict[str, Any]":
    """The counters' state; an absent or unreadable file is an empty state (counters restart
    from zero, which Prometheus' rate() takes as a counter reset)."""
    path = path or os.path.join(state_dir(), STATE_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        with os.fdopen(fd, "rb") as f:
            doc = json.loads(f.read(64 << 20))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    out: "Dict[str, Any]" = {}
    def num(b: "Any") -> bool:
        return isinstance(b, (int, float)) and not isinstance(b, bool) and b == b and abs(b) < 1e18
    for k in ("crashes", "losses"):
        v = doc.get(k)
        if isinstance(v, dict):
            out[k] = {str(a): int(b) for a, b in v.items() if num(b) and b >= 0}
    v = doc.get("seen")
    if isinstance(v, dict):
        out["seen"] = {str(a): [float(t) for t in ts if num(t)] for a, ts in v.items() if isinstance(ts, list)}
    return out


@contextlib.contextmanager
def _locked(d: str) -> "Iterator[None]":
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(d, ".metrics.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _atomic(path: str, data: bytes, mode: int) -> None:
    """*data* to *path* through a fresh temporary file in the same directory (O_EXCL and
    O_NOFOLLOW: a name planted in a shared directory is never written through) and a rename."""
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.write(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def update_state(fn: "Callable[[Dict[str, Any]], Dict[str, Any]]") -> "Dict[str, Any]":
    """Load, change with *fn*, save -- under the state directory's lock; returns the new state."""
    d = state_dir()
    with _locked(d):
        new = fn(load_state(os.path.join(d, STATE_FILE)))
        _atomic(os.path.join(d, STATE_FILE), json.dumps(new, separators=(",", ":")).encode(), 0o600)
    return new


def add_loss(unit: str, n: int = 1) -> "Dict[str, Any]":
    """Count a loss of dumpability by a process of *unit* (watch)."""
    def fn(st: "Dict[str, Any]") -> "Dict[str, Any]":
        losses = dict(st.get("losses") or {})
        losses[unit] = int(losses.get(unit, 0)) + n
        return dict(st, losses=losses)
    return update_state(fn)


# --- the live host ---------------------------------------------------------------------------

def collect(with_crashes: bool = True) -> str:
    """Read the host (every process, the crash history) and return the exposition text."""
    from coredoctor import __version__, snapshot
    from coredoctor.kernel import gates
    started = time.time()
    snap = snapshot.take(None, signal="SIGSEGV")
    sig = snap["kernel"]["signals"].get("SIGSEGV", 11)
    results = gates.evaluate_targets(snap, snap["targets"], sig, None)
    units = {}
    for p in snap["processes"]:
        units[p["pid"]] = (p.get("unit") or "", container_of(p.get("cgroup")))
    crashes: "List[Dict[str, Any]]" = []
    if with_crashes:
        from coredoctor.history import report
        crashes = report.build().get("crashes") or []
    state = update_state(lambda st: count_crashes(st, crashes))
    fams = families(results, units, state, __version__, str(snap["kernel"].get("release") or ""),
                    started, time.time())
    return render(fams)


def write_textfile(directory: str, text: str) -> str:
    """``DIR/coredoctor.prom``, atomically; returns its path."""
    if not os.path.isdir(directory):
        from coredoctor.errors import UsageError
        raise UsageError(f"--textfile {directory}: no such directory")
    path = os.path.join(directory, TEXTFILE_NAME)
    _atomic(path, text.encode("utf-8"), 0o644)
    return path
