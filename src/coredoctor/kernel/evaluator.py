"""
The evaluator
-------------
Runs the gate table over a snapshot for one process. When a fact is not known exactly
(dumpability 0 or 2 on a kernel without the pidfd query) the gates are evaluated once per
possible value ("world") and the worlds are merged: an answer is given only when every world
agrees, otherwise ``dumps`` is ``None`` with the reason. The result is the ``targets[]`` entry
of coredoctor.check/1: gate results, reason records (composed into ``verdict`` by
:mod:`.reasons`) and fixes (records of :mod:`.remedies`).
"""

from typing import Any, Dict, List, Optional, Tuple

from coredoctor import origin, runtimes
from coredoctor.kernel import core_pattern, dumpable as dmod, handlers, landing, observed as O, reasons, remedies as R
from coredoctor.kernel.signal import FAULT_SIGNALS, SIG_KERNEL_COREDUMP, normalize_signal
from coredoctor.kernel.table import GATE_IDS, GATES, on_branch
from coredoctor.kernel.world import World, expand, make_world, parsed_pattern

__all__ = ["evaluate", "evaluate_targets"]

Target = Dict[str, Any]
Result = Dict[str, Any]
#: one possible world: (dumpable value, its facts, its gate results, _outcome() of them)
WorldRun = Tuple[int, World, List[Result], Tuple[Optional[bool], Optional[str]]]


def _run(w: Dict[str, Any], full: bool = False) -> List[Result]:
    """Gate results in order. The kernel stops at the first blocking failure; with *full* the
    later gates are still evaluated (marked ``reached: False``) so that several possible worlds
    can be compared gate by gate."""
    results = []
    stopped = False
    obs: Optional[O.Observed] = w.get("observed")
    got_past = O.passed(obs, GATE_IDS)
    refusal = obs.refusal if obs is not None else None
    for g in GATES:
        if not on_branch(g, w["kind"]):
            continue
        r = g.predicate(w)
        if refusal is not None and refusal.gate == g.id:
            r = _refused(r, refusal)
        elif r is not None and r["status"] == "fail" and g.id in got_past:
            r = O.settle(r, "pass", got_past[g.id])
        if r is None:
            continue
        r = dict(r, id=g.id, kernel_ref=g.kernel_ref, reached=not stopped)
        if r.get("reason"):
            r["reason"] = dict(r["reason"], gate=g.id)
        results.append(r)
        if r["status"] == "fail" and g.blocking:
            if not full:
                break  # the kernel stops here; later gates are not reached
            stopped = True
    if refusal is not None and refusal.gate in GATE_IDS and all(r["id"] != refusal.gate for r in results):
        # the kernel (or the handler) says it stopped at a gate this model did not reach
        r = _refused({"status": "unknown", "evidence": f"not on the {w['kind']} branch of this core_pattern, "
                      "or not reached"}, refusal)
        g = GATES[GATE_IDS.index(refusal.gate)]
        r = dict(r, id=g.id, kernel_ref=g.kernel_ref, reached=True)
        r["reason"] = dict(r["reason"], gate=g.id)
        results.append(r)
    return results


def _refused(r: Optional[Result], refusal: "O.Refusal") -> Result:
    line = f"{refusal.source} logged: {refusal.line}"
    return O.settle(r or {"status": "unknown", "evidence": "no facts to judge this gate by"}, "fail", line,
                    why=reasons.reason(refusal.gate, "text", text=f"{line} (observed)"))


def _outcome(results: List[Result]) -> Tuple[Optional[bool], Optional[str]]:
    for r in results:
        if r["status"] == "fail" and r["reached"]:
            return False, r["id"]
    if any(r["status"] == "unknown" and r["reached"] for r in results):
        return None, None
    return True, None


def _destination(snap: Dict[str, Any], proc: Dict[str, Any], dumpable_value: Optional[int], signo: Optional[int],
                 exp: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    parsed = parsed_pattern(snap)
    if exp is None:
        exp = expand(snap, proc, signo, dumpable_value, parsed)
    if parsed["kind"] == "pipe":
        return {"kind": "pipe", "path": " ".join(core_pattern.render(a) for a in exp["argv"]),
                "handler": handlers.identify(parsed["helper"])}
    if parsed["kind"] == "socket":
        return {"kind": "socket", "path": parsed["path"], "handler": handlers.identify(parsed["path"])}
    path = core_pattern.render(exp["parts"])
    if not exp["absolute"]:
        cwd = proc.get("cwd") or "."
        path = (cwd.rstrip("/") + "/" + path) if cwd else path
    out: Dict[str, Any] = {"kind": "file", "path": path, "handler": None}
    # both views: as the process sees it, and on the host (additive; kernel/landing.py)
    cs = proc.get("container_spec")
    spec = cs if isinstance(cs, dict) else {}
    out.update(landing.landing(path, proc, snap.get("mounts"), spec.get("autoremove"),
                               from_init_root=dumpable_value == dmod.SUID_DUMP_ROOT and exp["absolute"]))
    out["owner"] = landing.owner(proc, dumpable_value)
    return out


def _machine_names(snap: Dict[str, Any], by_pid: Dict[int, Dict[str, Any]],
                   proc: Dict[str, Any]) -> Optional["dmod.Names"]:
    """The user and group names of *proc*'s nspawn machine (its own /etc/passwd, /etc/group, read
    into the snapshot's ``units`` section), or None for a process of the host."""
    from coredoctor.origin import unitfile
    key = unitfile.unit_key(by_pid, proc)
    rec = (snap.get("units") or {}).get(key) if key else None
    if not isinstance(rec, dict) or not rec.get("manager_pid"):
        return None
    users, groups = rec.get("users"), rec.get("groups")
    if not isinstance(users, dict) or not isinstance(groups, dict):
        return None
    return users, groups, len(proc.get("nspid") or [1])


def _reason_of(r: Result) -> Dict[str, Any]:
    return r.get("reason") or reasons.reason(r["id"], "text", text=r["evidence"])


def evaluate(snap: Dict[str, Any], proc: Dict[str, Any], parent: Optional[Dict[str, Any]] = None,
             signal: str = "SIGSEGV", how: Optional[str] = None,
             by_pid: Optional[Dict[int, Dict[str, Any]]] = None, facts: Optional[Dict[str, Any]] = None,
             observed: Optional[O.Observed] = None) -> Target:
    """Evaluate every gate for *proc* and return the target's verdict (the ``targets[]`` entry of
    the ``coredoctor.check/1`` contract). *by_pid* (pid -> process entry of *snap*) and *facts*
    (:func:`coredoctor.kernel.remedies.facts_of` of *snap*) may be passed in when many targets of
    one snapshot are evaluated. *observed* (:class:`coredoctor.kernel.observed.Observed`): what
    was seen of a real crash or delivery; its sysctls (of the crash's time) replace the
    snapshot's, and each gate it settles says so in its evidence (``observed: ...``); the result
    then has an ``observed`` record (the observation, and the worlds it ruled out)."""
    k = snap["kernel"]
    now_sysctl = snap["sysctl"]
    if facts is None:
        facts = R.facts_of(snap)  # of the host today: remedies apply now, whatever was observed
    if observed is not None and observed.sysctls:
        snap = dict(snap, sysctl=dict(snap["sysctl"], **observed.sysctls))
    if signal not in SIG_KERNEL_COREDUMP:  # canonical names pass through (aliases: the CLI normalizes)
        signal = normalize_signal(signal, k["signals"])
    if how is None:
        how = "fault" if signal in FAULT_SIGNALS else "kill"
    d = proc.get("dumpable") or {}
    cands = d.get("candidates") or [0, 1, 2]
    if by_pid is None:
        by_pid = {p["pid"]: p for p in snap["processes"]}
    table = by_pid

    def parent_of(p: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        ppid = p.get("ppid")
        return table.get(ppid) if ppid is not None else None

    info = dmod.infer_cause(proc, parent_of, now_sysctl.get("fs.suid_dumpable"), d.get("value"),
                            names=_machine_names(snap, by_pid, proc))
    worlds: List[WorldRun] = []
    for v in cands:
        w = make_world(snap, proc, parent, signal, how, v, info, facts, observed)
        res = _run(w, full=len(cands) > 1)
        worlds.append((v, w, res, _outcome(res)))
    ruled_out: List[int] = []
    if observed is not None and observed.core_status == "missing" and len(worlds) > 1:
        # no core was left: a possible dumpable value under which the kernel would have written
        # one is ruled out by what was seen (the others stay)
        keep = [x for x in worlds if x[3][0] is False]
        if keep and len(keep) < len(worlds):
            ruled_out = [x[0] for x in worlds if x[3][0] is not False]
            worlds = keep
            cands = [x[0] for x in keep]
    dumps_set = {o[0] for _, _, _, o in worlds}
    dumps = dumps_set.pop() if len(dumps_set) == 1 else None
    gates = _merge([(v, [r for r in res if r["reached"]]) for v, _, res, _ in worlds])
    blocking = None
    if dumps is False:
        # a gate that fails whatever the unknown value is names the cause best; else the earliest
        failing = [{r["id"] for r in res if r["status"] == "fail"} for _, _, res, _ in worlds]
        common = [gid for gid in GATE_IDS if all(gid in f for f in failing)]
        blocking = common[0] if common else min((o[1] for _, _, _, o in worlds), key=GATE_IDS.index)
    fixes = _fixes(snap, proc, parent, signal, how, cands, info, worlds, dumps, blocking, facts)
    signo = k["signals"].get(runtimes.core_signal(proc.get("runtime"), signal, how), k["signals"].get(signal))
    dest_value = d.get("value") if d.get("value") is not None else max(cands)
    cause, cause_ev = info["cause"], info["evidence"]
    target = {
        "pid": proc["pid"], "comm": proc.get("comm"), "exe": proc.get("exe"), "unit": proc.get("unit"),
        "container": proc.get("container"),  # snapshot/containers.py (null on the host)
        "signal": signal, "how": how,
        "dumps": dumps, "blocking_gate": blocking,
        "core_destination": _destination(snap, proc, dest_value, signo,
                                         next((w["exp"] for v, w, _, _ in worlds if v == dest_value), None)),
        "dumpable": {"value": d.get("value"), "source": d.get("source", "unknown"), "cause": cause,
                     "evidence": d.get("evidence", "") + (f"; {cause_ev}" if cause_ev and cause else ""),
                     "candidates": cands},
        "gates": gates,
        "fixes": [R.public_fix(f) for f in fixes],
    }
    target["reasons"] = _reasons(target, worlds, dumps, blocking)
    target["verdict"] = reasons.verdict(target)
    if dumps is None:
        target["undecided_by"] = next((g["id"] for g in gates if g["status"] == "unknown"), None)
    if observed is not None:
        target["observed"] = dict(O.as_dict(observed) or {}, ruled_out=ruled_out)
        if ruled_out:
            target["dumpable"]["candidates"] = d.get("candidates") or [0, 1, 2]
            for g in gates:
                if g["id"] == "dumpable":
                    g["evidence"] = (f"observed: no core was left, which rules out dumpable="
                                     f"{' or '.join(map(str, ruled_out))} (the kernel would have written one); "
                                     + g["evidence"])
                    g["observed"] = True
    origin.attach(snap, proc, target)
    return target


def evaluate_targets(snap: Dict[str, Any], pids: List[int], signal: str = "SIGSEGV",
                     how: Optional[str] = None) -> List[Target]:
    """:func:`evaluate` for each of *pids* (processes of *snap*), once per set of processes
    whose facts differ only in the pid (:mod:`.batch`; a snapshot taken with ``COREDOCTOR_DISABLE=batch``: each alone)."""
    procs = {p["pid"]: p for p in snap["processes"]}
    facts = R.facts_of(snap)

    def ev(proc: Dict[str, Any], facts: Dict[str, Any]) -> Target:
        return evaluate(snap, proc, procs.get(proc.get("ppid")), signal, how, procs, facts)

    from coredoctor.kernel import batch
    return batch.evaluate_many(snap, [procs[pid] for pid in pids], facts, ev)


def _fixes(snap: Dict[str, Any], proc: Dict[str, Any], parent: Optional[Dict[str, Any]], signal: str, how: str,
           cands: List[int], info: Dict[str, Any], worlds: List[WorldRun], dumps: Optional[bool],
           blocking: Optional[str], facts: Dict[str, Any]) -> List[Dict[str, Any]]:
    fixes: List[Dict[str, Any]] = []
    seen: set = set()

    def add(f: Dict[str, Any], summary: Optional[str] = None) -> None:
        s = summary or f["summary"]
        if s not in seen:
            seen.add(s)
            fixes.append(dict(f, summary=s))

    for _, _, res, _ in worlds:
        for r in res:
            if r["status"] in ("fail", "warn") or (r["status"] == "unknown" and dumps is None):
                for f in r.get("fixes") or []:
                    add(f)
    if blocking == "dumpable" and dmod.SUID_DUMP_ROOT not in cands:
        # what the process would meet once fs.suid_dumpable=2 is in force after a restart
        w2 = make_world(snap, proc, parent, signal, how, dmod.SUID_DUMP_ROOT, info, facts)
        for r in _run(w2):
            if r["status"] == "fail" and r["id"] not in ("dumpable", "suid-path"):
                for f in r.get("fixes") or []:
                    add(f, f"Then, for the restarted process (dumped as root): {f['summary']} "
                           f"({r['id']}: {r['evidence']})")
    # what is in place already is left out: check shows, and fix plans, what is still to do
    out = []
    for f in fixes:
        acts = [a for a in f["actions"] if not R.settled(a, facts)]
        if acts or not f["actions"]:
            out.append(dict(f, actions=acts))
    return out


def _reasons(t: Target, worlds: List[WorldRun], dumps: Optional[bool],
             blocking: Optional[str]) -> List[Dict[str, Any]]:
    if dumps is True:
        return []
    if dumps is False:
        rs = []
        for _, _, res, o in worlds:
            for r in res:
                if r["id"] == blocking and r["status"] == "fail":
                    rs.append(_reason_of(r))
                    break
            else:
                rs.extend(_reason_of(r) for r in res if r["id"] == o[1])
        return reasons.dedup(rs)
    d = t["dumpable"]
    if d["value"] is None and len(d["candidates"]) > 1:
        return [reasons.reason("dumpable", "dumpable-candidates", candidates=d["candidates"], evidence=d["evidence"])]
    g = next((g for g in t["gates"] if g["status"] == "unknown"), None)
    return [reasons.reason(g["id"], "text", text=g["evidence"])] if g else []


def _merge(world_results: List[Tuple[int, List[Result]]]) -> List[Result]:
    """One gate list for the target: identical results merge; differing ones become 'unknown'
    with each world's answer in the evidence."""
    if len(world_results) == 1:
        return [_public(r) for r in world_results[0][1]]
    order: List[str] = []
    by_id: Dict[str, Dict[int, Result]] = {}
    for v, res in world_results:
        for r in res:
            if r["id"] not in by_id:
                by_id[r["id"]] = {}
                order.append(r["id"])
            by_id[r["id"]][v] = r
    out = []
    for gid in sorted(order, key=GATE_IDS.index):
        rs = by_id[gid]
        vals = list(rs.values())
        if len(rs) == len(world_results) and len({(r["status"], r["evidence"]) for r in vals}) == 1:
            out.append(_public(vals[0]))
            continue
        statuses = {r["status"] for r in vals}
        status = statuses.pop() if len(statuses) == 1 else "unknown"
        ev = "; ".join(f"if dumpable={v}: {r['status']} -- {r['evidence']}" for v, r in sorted(rs.items()))
        missing = [v for v, _ in world_results if v not in rs]
        if missing:
            ev += "; " + "; ".join(f"if dumpable={v}: not reached" for v in missing)
        m = _public(vals[0])
        m.pop("observed", None)
        m.pop("model_status", None)
        m.update(status=status, evidence=ev)
        seen = [v for v, r in sorted(rs.items()) if r.get("observed")]
        if seen:  # the dumpable values whose answer an observation settled (additive)
            m["observed_in"] = seen
        out.append(m)
    return out


def _public(r: Result) -> Result:
    fix = r.get("fixes") or []
    out: Result = {"id": r["id"], "status": r["status"], "evidence": r["evidence"], "kernel_ref": r["kernel_ref"],
           "fix": "; ".join(f["summary"] for f in fix) if fix else None}
    if r.get("observed"):  # settled by an observation (evaluate(observed=...)); additive
        out["observed"] = True
        if r.get("model_status"):
            out["model_status"] = r["model_status"]
    return out
