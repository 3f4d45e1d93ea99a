"""
Origins: the configuration behind a verdict
-------------------------------------------
The gates say *that* the kernel will refuse (dumpable 0 after a credential change, RLIMIT_CORE 0,
a relative pattern in an unwritable cwd, a runtime that catches SIGSEGV); an origin says *what
made it so* outside the kernel: the process's own option (argv words), a daemon's config line
(file:line), a systemd directive (unit file or drop-in, file:line) and the ``Environment=`` /
``EnvironmentFile=`` chain that fed it, a wrapper script, the parent a limit was inherited from,
a language runtime, a crash handler's policy, a container runtime's setting.

Pure, like the gate model: finders read only the snapshot (the snapshot layer collected the files
and words they need). Knowledge lives in tables, one per daemon, runtime and handler family, each
row citing its source.

The ``origin`` object (coredoctor.check/1, additive) -- on a gate result whose status is ``fail``
or ``warn`` (``gates[].origin``) and on the dumpability cause (``dumpable.origin``)::

    {"kind":    "argv" | "config" | "unit" | "environment" | "limits" | "inherited"
                | "runtime" | "handler" | "container",
     "summary": one sentence, for people,
     "program": the knowledge row's program (e.g. "ovs-vswitchd") or null,
     "file": path or null, "line": 1-based line number or null,
     "text": the line or words exactly as found (or null),
     "argv": the exact argv words of an option (or null),
     "via": [origin, ...]  -- the chain that fed it, nearest first (may be empty): the daemon's
                              --user option, via the wrapper's --ovs-user, via ExecStart=, via the
                              EnvironmentFile= line that set the variable,
     "source": the citation of the table row (program's source file and function, or manual)}

A finder is ``finder(snap, proc, target) -> Found``: origins by key (a gate id, or
``"dumpable"``) and fixes (records of :mod:`coredoctor.kernel.remedies`) with a smaller blast
radius than the host-wide ones (a daemon's own switch, a unit drop-in). For one key, the first
finder's origin is the origin (the most specific: the process's own option or config line, so
the argv/config finders come first) and each later finder's origin is appended to its ``via``
(the unit or environment that fed it), with its own ``via`` after it; an origin equal to one
already in the chain is not repeated. Fixes are appended after the kernel model's, in finder order.
"""

from typing import Any, Callable, Dict, List, NamedTuple

__all__ = ["Found", "FINDERS", "attach", "origin"]

Origin = Dict[str, Any]
KINDS = ("argv", "config", "unit", "environment", "limits", "inherited", "runtime", "handler", "container")


class Found(NamedTuple):
    origins: Dict[str, Origin]
    fixes: List[Dict[str, Any]]


Finder = Callable[[Dict[str, Any], Dict[str, Any], Dict[str, Any]], Found]

# in order of precedence; each module adds its finder here (one line each)
FINDERS: List[Finder] = []


def origin(kind: str, summary: str, source: str, program: Any = None, file: Any = None,
           line: Any = None, text: Any = None, argv: Any = None, via: Any = None) -> Origin:
    """One origin record (see the module's docstring)."""
    if kind not in KINDS:
        raise ValueError(f"origin kind {kind!r}")
    return {"kind": kind, "summary": summary, "program": program, "file": file, "line": line,
            "text": text, "argv": list(argv) if argv is not None else None, "via": list(via or []),
            "source": source}


def _same(a: Origin, b: Origin) -> bool:
    return all(a.get(k) == b.get(k) for k in ("kind", "file", "line", "text", "argv"))


def attach(snap: Dict[str, Any], proc: Dict[str, Any], target: Dict[str, Any]) -> None:
    """Put each finder's origins on *target*'s failing/warned gates and its dumpability cause, and
    its fixes after the model's. A finder that fails on a malformed snapshot entry is skipped (the
    verdict stands without an origin)."""
    wanted = {g["id"] for g in target.get("gates", ()) if g.get("status") in ("fail", "warn")}
    if target.get("dumpable", {}).get("cause"):
        wanted.add("dumpable")
    if not wanted:
        return
    named: Dict[str, Origin] = {}
    extra: List[Dict[str, Any]] = []
    for finder in FINDERS:
        try:
            found = finder(snap, proc, target)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            continue
        for key, o in found.origins.items():
            if key not in wanted:
                continue
            if key not in named:
                named[key] = dict(o, via=list(o.get("via") or []))
                continue
            chain = [named[key]] + named[key]["via"]
            for x in [dict(o, via=[])] + list(o.get("via") or []):
                if not any(_same(x, y) for y in chain):
                    named[key]["via"].append(x)
                    chain.append(x)
        extra.extend(found.fixes)
    for g in target.get("gates", ()):
        if g["id"] in named:
            g["origin"] = named[g["id"]]
    if "dumpable" in named:
        target["dumpable"]["origin"] = named["dumpable"]
    seen = {f["summary"] for f in target.get("fixes", ())}
    for f in extra:
        if f["summary"] not in seen:
            seen.add(f["summary"])
            target.setdefault("fixes", []).append(f)


# the finders, in order of precedence (one line each): the process's own option or config line
# first, then the container runtime's settings, then systemd units, limits and working directories
# (each appended to the chain of the one before), then the language runtimes
from coredoctor.origin import daemons as _daemons  # noqa: E402
from coredoctor.origin import containers as _containers  # noqa: E402
from coredoctor.origin import units as _units  # noqa: E402
from coredoctor.origin import runtimes as _runtimes  # noqa: E402

FINDERS.append(_daemons.find)
FINDERS.append(_containers.find)
FINDERS.append(_units.find)
FINDERS.append(_runtimes.find)
