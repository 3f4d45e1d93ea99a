"""
Targets
-------
What the words on a command line name: pids, process names, systemd units
(``NAME.service``/``.scope``/``.socket``/``.mount``) or every process -- on the live system
(through the one /proc reader) or in a saved snapshot. One name rule (:func:`name_matches`)
and one unit rule (:func:`coredoctor.snapshot.proc.unit_from_cgroup`, the one the snapshot
uses for a process's ``unit``) serve both, so ``check NAME`` and ``check --from FILE NAME``
pick the same processes. A word that names nothing is a :class:`UsageError`.

Containers (``--container NAME|ID``): every process whose cgroup names that container
(:mod:`coredoctor.snapshot.containers`: the one container rule, the snapshot's ``container``
uses it too), by its name, its full id, or an id prefix of at least 12 hex digits; a prefix
that names two containers is a UsageError.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from coredoctor.errors import AccessDenied, NoSuchProcess, UsageError
from coredoctor.snapshot import containers as _containers, proc
from coredoctor.snapshot.proc import base

__all__ = ["classify", "is_unit", "name_matches", "find", "resolve_live", "resolve_offline", "unit_pids",
           "container_pids", "pick_containers"]

#: TASK_COMM_LEN - 1: the kernel keeps this much of a program's name as its comm
COMM_LEN = 15


def is_unit(word: str) -> bool:
    """Does *word* name a systemd unit (``NAME.service`` and the other suffixes)?"""
    return "." in word and word.endswith(proc.UNIT_SUFFIXES) and not word.startswith(".")


def classify(words: Iterable[str], pids: Iterable[int] = ()) -> Tuple[List[int], List[str], List[str]]:
    """Target words -> (pids, names, units)."""
    out_pids, names, units = list(pids), [], []
    for t in words:
        if t.isascii() and t.isdigit():
            # PID_MAX_LIMIT is 4194304 (include/linux/threads.h): a pid has at most 7 digits
            if len(t.lstrip("0")) > 7:
                raise UsageError(f"not a pid: {t[:20]}{'...' if len(t) > 20 else ''} (more than 7 digits)")
            out_pids.append(int(t))
        elif is_unit(t):
            units.append(t)
        else:
            names.append(t)
    return out_pids, names, units


def name_matches(name: str, comm: Optional[str], exe: Optional[str]) -> bool:
    """A process name names a process whose comm or executable's basename is that name (a
    name longer than a comm matches the comm it was cut to)."""
    if not name:
        return False
    comm = comm if isinstance(comm, str) else None
    base_exe = os.path.basename(exe).replace(" (deleted)", "") if isinstance(exe, str) and exe else None
    return name in (comm, base_exe) or (comm is not None and len(name) > COMM_LEN and name[:COMM_LEN] == comm)


def find(names: Sequence[str] = (), units: Sequence[str] = (), root: Optional[str] = None) -> Dict[str, List[int]]:
    """{word: [pids]} of the running processes each name or unit names (one scan: comm and exe
    for names, cgroup for units)."""
    r = root or base.root()
    found: Dict[str, List[int]] = {t: [] for t in list(names) + list(units)}
    for pid in base.list_pids(r):
        try:
            if names:
                comm = base.read(pid, "comm", base=r).rstrip("\n")
                try:
                    exe: Optional[str] = os.readlink(f"{r}/{pid}/exe")
                except OSError:
                    exe = None
                for n in names:
                    if name_matches(n, comm, exe):
                        found[n].append(pid)
            if units:
                unit = proc.unit_from_cgroup(base.read(pid, "cgroup", base=r))[0]
                if unit in found and unit in units:
                    found[unit].append(pid)
        except (NoSuchProcess, AccessDenied):
            continue
    return found


def unit_pids(units: Sequence[str], root: Optional[str] = None) -> List[int]:
    """The pids of every process of each unit; UsageError for a unit with none running."""
    found = find((), units, root)
    pids: List[int] = []
    for u in units:
        if not found.get(u):
            raise UsageError(f"no unit {u!r} is running")
        pids.extend(found[u])
    return pids


def pick_containers(word: str, found: Dict[str, Dict[str, Any]], missing: str = "is running") -> List[str]:
    """The keys of *found* ({key: container}) that selector *word* names: an exact name or id
    first (a name that is also another container's id prefix means the name), else the
    containers whose id starts with it; UsageError when nothing or more than one container is
    named, or the word cannot name one."""
    if not word or len(word) > 256:
        raise UsageError("--container takes a container's name or id (12 or more hex digits)")
    exact = [k for k, c in found.items() if word in (c.get("name"), c.get("id"))]
    hits = exact or [k for k, c in found.items() if _containers.matches(c, word)]
    if not hits:
        short = "" if len(word) >= 12 or not all(ch in "0123456789abcdef" for ch in word) else \
            " (an id prefix needs at least 12 hex digits)"
        raise UsageError(f"no container {word!r} {missing}{short}")
    if len(hits) > 1:
        names = ", ".join(sorted(_containers.label(found[k]) for k in hits)[:4])
        raise UsageError(f"--container {word!r} names {len(hits)} containers: {names}")
    return hits


def _key(c: Dict[str, Any]) -> str:
    return f"{c.get('runtime')}:{c.get('id')}"


def container_pids(words: Sequence[str], root: Optional[str] = None) -> List[int]:
    """The pids of every running process of each container named (one scan of every
    process's cgroup; the runtime's state read once per container)."""
    r = root or base.root()
    found: Dict[str, Dict[str, Any]] = {}
    members: Dict[str, List[int]] = {}
    cache: Dict[str, Any] = {}
    try:
        own_ns = os.readlink("/proc/self/ns/pid") if r == "/proc" else None
    except OSError:
        own_ns = None
    for pid in base.list_pids(r):
        try:
            c = _containers.from_cgroup(base.read(pid, "cgroup", base=r))
        except (NoSuchProcess, AccessDenied):
            continue
        if c is None and own_ns is not None:  # an nspawn machine no machined registered
            try:
                if os.readlink(f"/proc/{pid}/ns/pid") != own_ns:
                    c = _containers.add_monitor(None, pid, None, cache)
            except OSError:
                pass
        if c is None:
            continue
        k = _key(c)
        if k not in found:
            found[k] = _containers.complete(c, cache=cache) or c
        members.setdefault(k, []).append(pid)
    out: List[int] = []
    for w in words:
        for k in pick_containers(w, found):
            out.extend(members[k])
    return sorted(set(out))


def resolve_live(words: Sequence[str], pids: Sequence[int] = (), all_: bool = False,
                 root: Optional[str] = None, containers: Sequence[str] = ()) -> Optional[List[int]]:
    """Target words -> sorted pids on the live system; None for every process (*all_*).
    *containers*: ``--container`` selectors (every process of each)."""
    if all_:
        if words or pids or containers:
            raise UsageError("--all takes no other targets")
        return None
    r = root or base.root()
    out, names, units = classify(words, pids)
    if containers:
        out.extend(container_pids(containers, r))
    if not (out or names or units):
        raise UsageError("name a target: a process name, a pid, a unit (NAME.service), "
                         "--container NAME, or --all")
    for pid in out:
        if pid <= 0 or not os.path.isdir(f"{r}/{pid}"):
            raise UsageError(f"no such process: pid {pid}")
    if names or units:
        found = find(names, units, r)
        for t in names + units:
            if not found.get(t):
                kind = "unit" if t in units else "process named"
                raise UsageError(f"no {kind} {t!r} is running")
            out.extend(found[t])
    return sorted(set(out))


def resolve_offline(snap: Dict[str, Any], words: Sequence[str], pids: Sequence[int] = (),
                    all_: bool = False, containers: Sequence[str] = ()) -> List[int]:
    """Target words -> pids of a saved snapshot (its own targets when none are given)."""
    procs = {p["pid"]: p for p in snap["processes"]}
    if all_:
        if containers:
            raise UsageError("--all takes no other targets")
        return sorted(snap.get("targets") or procs)
    if not (words or pids or containers):
        return list(snap.get("targets") or [])
    out, names, units = classify(words, pids)
    if containers:
        found: Dict[str, Dict[str, Any]] = {}
        members: Dict[str, List[int]] = {}
        for p in procs.values():
            c = p.get("container")
            if isinstance(c, dict):
                found.setdefault(_key(c), c)
                members.setdefault(_key(c), []).append(p["pid"])
        for w in containers:
            for k in pick_containers(w, found):
                out.extend(members[k])
    for t in names + units:
        if t in units:
            m = [p["pid"] for p in procs.values() if p.get("unit") == t]
        else:
            m = [p["pid"] for p in procs.values() if name_matches(t, p.get("comm"), p.get("exe"))]
        if not m:
            raise UsageError(f"no process {t!r} in the snapshot")
        out.extend(m)
    for pid in out:
        if pid not in procs:
            raise UsageError(f"pid {pid} is not in the snapshot")
    return sorted(set(out))
