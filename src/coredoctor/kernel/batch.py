"""
Evaluating many processes at once
---------------------------------
``check --all`` evaluates the gates for every process of a snapshot, and most of a machine's
processes present the gates with the same facts (2,000 workers of one service: same
credentials, limits, signal dispositions, cwd, umask, dumpability, existing-core facts). The
evaluation is a pure function of (snapshot, process entry, parent entry, signal, how), so
processes whose entries are identical apart from their pid get the same result apart from
where the pid shows. This module groups them:

* the **fingerprint** of a process is its whole snapshot entry (every fact, not a chosen
  subset: a fact left out would be a wrong verdict) with only the pid taken out -- ``pid``
  and the host entry of ``nspid`` -- and ``mem`` reduced to the one value the gates read
  (:func:`coredoctor.kernel.world.estimate_core_size`). ``ppid`` stays in, so a group shares
  its parent and every ancestor :func:`coredoctor.kernel.dumpable.infer_cause` may follow.
* one member is evaluated as itself, and once more with a sentinel pid (a number that occurs
  nowhere in the snapshot); the sentinel result, with the sentinel put back to the member's
  pid, must equal the direct result, or the group is evaluated process by process. Every other
  member gets the sentinel result with its own pid put in (``pid``, ``%p``/``%P``/``%i``/``%I``
  in the destination, ``prlimit --pid``, ``/proc/PID/...`` in fixes, ...).
* pid 1 (``is_global_init()``) and single processes are evaluated alone.

Parts of a result that do not hold the pid are shared between the members' results: results
are read, not changed, after evaluation.
"""

import marshal
from typing import Any, Callable, Dict, List, Optional, Tuple

from coredoctor.kernel.world import estimate_core_size

__all__ = ["fingerprint", "group", "Rebinder", "Bound", "pick_sentinels", "evaluate_many"]

Target = Dict[str, Any]


def fingerprint(proc: Dict[str, Any]) -> Optional[bytes]:
    """Everything of *proc* the gates can read, except its pid; None: evaluate it alone."""
    pid = proc.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return None
    d = dict(proc)
    del d["pid"]
    ns = d.get("nspid")
    if isinstance(ns, list) and ns and ns[0] == pid and type(ns[0]) is int:
        d["nspid"] = ["PID"] + ns[1:]
    if "mem" in d:
        try:
            d["mem"] = ("est", estimate_core_size(proc))
        except Exception:  # noqa: BLE001 -- a malformed entry: leave it to evaluate() alone
            return None
    try:
        # marshal (version 2: no back-references) writes equal bytes only for equal values;
        # a value it cannot write (not from a snapshot): evaluate alone
        return marshal.dumps(d, 2)
    except ValueError:
        return None


def group(procs: List[Dict[str, Any]]) -> Tuple[Dict[bytes, List[int]], List[int]]:
    """(fingerprint -> indexes into *procs* sharing it, indexes to evaluate alone)."""
    groups: Dict[bytes, List[int]] = {}
    alone: List[int] = []
    for i, p in enumerate(procs):
        fp = fingerprint(p)
        if fp is None:
            alone.append(i)
        else:
            groups.setdefault(fp, []).append(i)
    return groups, alone


def pick_sentinels(text: str, n: int = 1) -> List[int]:
    """*n* pids that occur nowhere in *text* (the snapshot's facts): all ten digits, none twice,
    so that one occurrence cannot overlap another or be read out of neighbouring digits."""
    out = []
    for cand in (4718296305, 5829307416, 6930418527, 7041529638, 8152630749, 9263741850,
                 3607185924, 2596074813):
        if str(cand) not in text:
            out.append(cand)
            if len(out) == n:
                return out
    raise ValueError("no sentinel pid free")


class Bound(Dict[str, Any]):
    """A result handed out by a :class:`Rebinder` for *pid*: the dict itself, and where it came
    from, so that the JSON renderer may write it as the template's text with the pid put in
    (render/json.py, which checks that this gives the same text once per template)."""
    __slots__ = ("rebinder", "pid")

    def __init__(self, d: Dict[str, Any], rebinder: "Rebinder", pid: int) -> None:
        super().__init__(d)
        self.rebinder = rebinder
        self.pid = pid


class Rebinder:
    """A result computed with the sentinel pid *sentinel*, to be handed out with other pids."""

    def __init__(self, template: Target, sentinel: int) -> None:
        self.sentinel = sentinel
        self.s = str(sentinel)
        self.template = template
        build = self._compile(template)
        self._build: Callable[[int, str], Any] = build if build is not None else (lambda pid, ps: dict(template))

    def bind(self, pid: int) -> Target:
        """The result for *pid*: new containers where the pid shows, the rest shared (a
        :class:`Bound`)."""
        return Bound(self._build(pid, str(pid)), self, pid)

    def _compile(self, v: Any) -> Optional[Callable[[int, str], Any]]:
        """A function (pid, str(pid)) -> a copy of *v* with the sentinel replaced, or None when
        *v* does not hold the sentinel (it is then shared as it is)."""
        s, n = self.s, self.sentinel
        if isinstance(v, str):
            return (lambda pid, ps: v.replace(s, ps)) if s in v else None
        if isinstance(v, int) and not isinstance(v, bool):
            return (lambda pid, ps: pid) if v == n else None
        if isinstance(v, dict):
            if any(self._compile(k) is not None for k in v):
                # the pid in a key (not in any result today): rebuild the whole dict
                items = [(self._compile(k), self._compile(x), k, x) for k, x in v.items()]
                return lambda pid, ps: {(fk(pid, ps) if fk else k): (fx(pid, ps) if fx else x)
                                        for fk, fx, k, x in items}
            changed = [(k, f) for k, f in ((k, self._compile(x)) for k, x in v.items()) if f is not None]
            if not changed:
                return None

            def build_dict(pid: int, ps: str) -> Dict[Any, Any]:
                d = v.copy()
                for k, f in changed:
                    d[k] = f(pid, ps)
                return d
            return build_dict
        if isinstance(v, (list, tuple)):
            changed_i = [(i, f) for i, f in ((i, self._compile(x)) for i, x in enumerate(v)) if f is not None]
            if not changed_i:
                return None
            tup = isinstance(v, tuple)

            def build_seq(pid: int, ps: str) -> Any:
                out = list(v)
                for i, f in changed_i:
                    out[i] = f(pid, ps)
                return tuple(out) if tup else out
            return build_seq
        return None


def evaluate_many(snap: Dict[str, Any], members: List[Dict[str, Any]], facts: Dict[str, Any],
                  ev: Callable[[Dict[str, Any], Dict[str, Any]], Target]) -> List[Target]:
    """``[ev(p, facts) for p in members]``, evaluating once per set of identical facts.
    *ev(proc, facts)* evaluates one process entry of *snap* (its parent looked up by ppid).
    A snapshot taken with ``COREDOCTOR_DISABLE=batch`` (recorded in ``kernel.disabled``) is
    evaluated process by process."""
    disabled = (snap.get("kernel") or {}).get("disabled") or ()
    if len(members) < 3 or (isinstance(disabled, list) and "batch" in disabled):
        return [ev(p, facts) for p in members]
    groups, alone = group(members)
    out: List[Optional[Target]] = [None] * len(members)
    for i in alone:
        out[i] = ev(members[i], facts)
    multi = []
    for fp, ix in groups.items():
        if len(ix) == 1:
            out[ix[0]] = ev(members[ix[0]], facts)
        else:
            multi.append((fp, ix))
    if multi:
        try:
            (sentinel,) = pick_sentinels(repr({k: v for k, v in snap.items() if k != "processes"}) +
                                         repr([members[ix[0]] for _, ix in multi]))
        except ValueError:
            sentinel = None
        # remedies.settled() looks the running limits up by pid: the sentinel has the group's
        limits = dict(facts.get("limits") or {})
        sfacts = dict(facts, limits=limits)
        for _, ix in multi:
            rep = members[ix[0]]
            direct = ev(rep, facts)
            out[ix[0]] = direct
            rb = None
            if sentinel is not None:
                sproc = dict(rep, pid=sentinel)
                ns = rep.get("nspid")
                if isinstance(ns, list) and ns and ns[0] == rep["pid"]:
                    sproc["nspid"] = [sentinel] + ns[1:]
                limits[sentinel] = limits.get(rep["pid"])
                rb = Rebinder(ev(sproc, sfacts), sentinel)
                if rb.bind(rep["pid"]) != direct:
                    rb = None  # the pid shows where the sentinel cannot stand for it: one by one
            for i in ix[1:]:
                out[i] = rb.bind(members[i]["pid"]) if rb is not None else ev(members[i], facts)
    return out  # type: ignore[return-value]
