"""
The crashes report
------------------
Read every source present on the host, correlate (:mod:`.crashes`), then for each crash find
its core and, when it did not survive, the most likely reason as one of check's gate ids with
its evidence. Reading happens here and in the source modules; the kernel's rules come from
:mod:`coredoctor.kernel` (core_pattern expansion, handler policy, the gate evaluator on a running
instance of the same program).

Core status: ``present`` (an ELF core of that pid, or a core a handler says it kept),
``truncated`` (shorter than its program headers say, or a handler says so), ``empty`` (0 bytes),
``missing`` (where it should be, it is not; or the kernel/handler/systemd said none was
written), ``unknown`` (the place cannot be known: a relative pattern whose directory cannot be
recovered, an unknown pipe helper, a socket server).
"""

import os
import time

from coredoctor.errors import Error
from coredoctor.history import Skips
from coredoctor.history import apport, audit, cores, crashes as corr, daemonlog, journal, kmsg, stores, syslog
from coredoctor.history import supervisors, sysctl_history
from coredoctor.kernel import core_pattern, handlers

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

    from coredoctor.history import OnSkip
    from coredoctor.history.kmsg import Event
    from coredoctor.kernel.observed import Observed

__all__ = ["SCHEMA", "build", "gather", "records", "core_of", "likely_reason", "observe", "SOURCES"]

SCHEMA = "coredoctor.crashes/1"
SOURCES = ("kmsg", "journal", "syslog", "audit", "apport", "systemd-coredump", "daemons")


def _classify(ident: "str | None", pid: "int | str | None", message: str,
              when: "float | None") -> "Event | None":
    return daemonlog.parse_message(ident, pid, message, when)


def _linked(events: "Iterable[Event]") -> "list[Event]":
    return daemonlog.link(list(events))


def gather(since: "float | None" = None, root: str = "/", only: "Iterable[str] | None" = None,
           log_files: "list[str] | None" = None,
           skips: "Skips | None" = None) -> "tuple[list[dict[str, Any]], dict[str, str]]":
    """``(events, read)``: classified events of every source present, and for each source what
    was read or why it was not (``{"kmsg": "read", "journal": "absent: ..."}``). *skips*: a
    :class:`~coredoctor.history.Skips` that counts the records left out, per source."""
    classify = _classify
    events: "list[dict[str, Any]]" = []
    read: "dict[str, str]" = {}
    want = set(only or SOURCES)
    skips = Skips() if skips is None else skips

    def take(name: str, fn: "Callable[[OnSkip], Iterable[dict[str, Any]]]") -> None:
        if name not in want:
            return
        try:
            got = list(fn(skips.bind(name)))
        except (OSError, Error) as e:
            read[name] = f"unreadable: {getattr(e, 'strerror', None) or e}"
            return
        events.extend(got)
        if name not in read:
            read[name] = f"read ({len(got)} events)"

    if log_files:  # --log FILE: classic syslog files given by hand, instead of the host's
        want.discard("syslog")
        want.add("log")
        # syslog-format files, and supervisors' own logs (nginx's error.log) in their own formats
        take("log", lambda sk: list(_linked(syslog.read(log_files, since=since, skipped=sk)))
             + [e for e in supervisors.read(log_files, skipped=sk, long_lines=False)
                if since is None or e["time"] is None or e["time"] >= since])
    if root == "/":
        take("kmsg", lambda sk: (e for e in _linked(kmsg.read_kmsg(user=classify, skipped=sk))
                                 if since is None or e["time"] is None or e["time"] >= since))
        ok, why = journal.available()
        if ok:
            take("journal", lambda sk: _linked(journal.read(since=since, classify=classify, skipped=sk)))
        elif "journal" in want:
            read["journal"] = f"absent: {why}"
    if "syslog" in want:
        files = syslog.log_files(root=root)
        if files:
            take("syslog", lambda sk: _linked(syslog.read(files, since=since, skipped=sk)))
        else:
            read["syslog"] = "absent: no kern.log, syslog or messages files"
    if "daemons" in want and root is not None:
        files = supervisors.log_files(root)
        if files:
            take("daemons", lambda sk: (e for e in supervisors.read(files, skipped=sk)
                                        if since is None or e["time"] is None or e["time"] >= since))
        else:
            read["daemons"] = "absent: no supervisor log (nginx, openvswitch, apache2, postgresql, php-fpm, supervisor)"
    if "audit" in want:
        files = audit.log_files(root)
        if files:
            take("audit", lambda sk: audit.read(files, since=since, skipped=sk))
        else:
            read["audit"] = "absent: no audit.log"
    if "apport" in want:
        def ap(sk: "OnSkip") -> "Iterator[dict[str, Any]]":
            yield from apport.read_reports(root, since, skipped=sk)
            yield from stores.apport_cores(root, skipped=sk)
            yield from apport.read_log(root=root, since=since, skipped=sk)
        take("apport", ap)
    if "systemd-coredump" in want:
        got, how = stores.systemd_coredump(since, root, skipped=skips.bind("systemd-coredump"))
        events.extend(got)
        read["systemd-coredump"] = f"read through {how} ({len(got)} cores)"
    return events, read


# -- where the core went ---------------------------------------------------------------------

def _file_candidates(crash: "dict[str, Any]", parsed: "dict[str, Any]", signals: "dict[str, int]",
                     base_dirs: "list[str]") -> "tuple[str, list[str]]":
    signo = crash.get("signo") or signals.get(crash.get("signal") or "")
    ctx = {"pid": crash["pid"], "pid_ns": crash["pid"], "comm": crash.get("comm"), "exe": crash.get("exe"),
           "signo": signo, "tid": None, "tid_ns": None}
    exp = core_pattern.expand(parsed, ctx)
    name = core_pattern.render(exp["parts"])
    if exp["absolute"]:
        return name, [name]
    return name, [os.path.join(d, name) for d in base_dirs]


def core_of(crash: "dict[str, Any]", env: "dict[str, Any]") -> "dict[str, Any]":
    """The core status of one crash record (see the module doc)."""
    for s in crash["stored"]:
        if s.get("handler") == "apport" and s.get("core") == "present" and s.get("path", "").endswith(".crash"):
            return {"status": "present", "path": s["path"], "size": env.get("size", cores.size)(s["path"]), "handler": "apport",
                    "why": "apport embedded the core in its report (CoreDump)"}
        if s.get("path"):
            size = env.get("size", cores.size)(s["path"])
            if size is None:
                vac = (" (systemd-coredump deletes the oldest cores to stay within MaxUse= and KeepFree= of "
                       "coredump.conf)") if s.get("handler") == "systemd-coredump" else ""
                return {"status": "missing", "path": s["path"], "size": None, "handler": s.get("handler"),
                        "why": f"{s.get('handler')} stored it, and it has been removed since{vac}"}
            cut = s.get("truncated") or crash.get("handler_truncated") is not None
            status = "truncated" if cut else ("empty" if size == 0 else "present")
            out: "dict[str, Any]" = {"status": status, "path": s["path"], "size": size, "handler": s.get("handler")}
            if cut:
                out["why"] = f"{s.get('handler')} says the core was truncated" + (
                    f" to {crash['handler_truncated']} bytes" if crash.get("handler_truncated") else "")
            return out
    said_none = _said_no_core(crash)
    parsed = env["parsed"]
    if parsed["kind"] == "pipe":
        name = handlers.identify(parsed["helper"])
        if crash["pid"] is None:
            return {"status": "unknown", "path": None, "size": None, "handler": name,
                    "why": "the crash's pid is not known"}
        if name in ("systemd-coredump", "apport", "discard") or said_none:
            kept = [e for e in crash["events"] if e["event"] == "handler-stored"]
            why = said_none or (f"{name} logged that it kept it ({kept[0]['line']}), and it is not in its store "
                                "now (removed or vacuumed since)" if kept else
                                f"{name} has no core of pid {crash['pid']} from that time")
            return {"status": "missing", "path": None, "size": None, "handler": name, "why": why}
        return {"status": "unknown", "path": None, "size": None, "handler": name,
                "why": f"the pipe helper {parsed['helper']} keeps cores where coredoctor cannot look"}
    if parsed["kind"] == "socket":
        return {"status": "missing" if said_none else "unknown", "path": None, "size": None,
                "why": said_none or f"cores went to the socket server at {parsed.get('path')}"}
    if crash["pid"] is None:
        return {"status": "missing" if said_none else "unknown", "path": None, "size": None,
                "why": said_none or "the crash's pid is not known"}
    dirs, where = env["base_dirs"](crash)
    name, cands = _file_candidates(crash, parsed, env["signals"], dirs)
    for c in cands:
        got = env.get("find", cores.find)(c.replace("*", "?*"), crash)
        if got:
            return got
    if not parsed["absolute"]:
        if said_none:
            return {"status": "missing", "path": name, "size": None, "why": said_none}
        looked = f"; looked in {', '.join(where)}" if where else ""
        return {"status": "unknown", "path": name, "size": None,
                "why": "the pattern is relative: the core went to the crashed process's cwd, which is "
                       f"not known{looked}"}
    then = " (the core_pattern in force then, from the fix journal)" if env.get("pattern_then") else \
        " (today's core_pattern)"
    return {"status": "missing", "path": cands[0] if cands else name, "size": None,
            "why": said_none or "no ELF core of this pid there" + then}


def _said_no_core(crash: "dict[str, Any]") -> "str | None":
    """Someone said no core was written: systemd's unit result code=killed for a core signal,
    a kernel or handler refusal."""
    if crash["refusals"]:
        r = crash["refusals"][0]
        return f"{r['source']}: {r['evidence']}"
    if crash["unit_result"] == "killed":
        return "systemd: the unit's main process was killed without a core (code=killed)"
    sup = crash.get("supervisor") or {}
    if sup.get("dumped") is False:
        return (f"{sup['program']}: {sup['line']} (its supervisor says no core was dumped: "
                "WCOREDUMP was clear)")
    return None


def _wcoredump(core: "dict[str, Any]", crash: "dict[str, Any]") -> "dict[str, Any]":
    """A supervisor that saw "core dumped" (WCOREDUMP): the kernel wrote a core, so one that is
    not found was lost after it, and where the place is unknown it was written there."""
    sup = crash.get("supervisor") or {}
    if sup.get("dumped") and core["status"] in ("missing", "unknown"):
        core["wcoredump"] = True
        core["why"] = ((core.get("why") or "") + f"; {sup['program']} saw it dump core ({sup['line']})"
                       + (": the kernel wrote it, and it is gone since" if core["status"] == "missing" else ""))
    elif sup.get("dumped") is False:
        core["wcoredump"] = False
    return core


# -- why not ---------------------------------------------------------------------------------

def _gate_id(name: str) -> str:
    """A gate id of :mod:`coredoctor.kernel.table`, checked when the module is loaded."""
    from coredoctor.kernel.table import GATE_IDS
    if name not in GATE_IDS:
        raise AssertionError(f"not a gate: {name}")
    return name


DUMPABLE = _gate_id("dumpable")
HANDLER_POLICY = _gate_id("handler-policy")


def observe(crash: "dict[str, Any]", core: "dict[str, Any]", env: "dict[str, Any]",
            instance: "dict[str, Any] | None" = None) -> "Observed":
    """What was observed of one crash, as the gate evaluator's ``observed`` input
    (:class:`coredoctor.kernel.observed.Observed`): the signal that killed it, its core as found,
    the first refusal line tied to a gate (the kernel's or the handler's; a handler that says it
    cut the core counts as one), the sysctls of the crash's time from the fix journal, and the pid
    of the running instance whose facts stand in for it."""
    from coredoctor.kernel import observed as O
    said = [r for r in crash["refusals"] if r["gate"]]  # the kernel's or the handler's own words
    refusal = None
    if said:
        refusal = O.Refusal(said[0]["gate"], said[0]["source"], said[0]["evidence"])
    elif core["status"] == "truncated" and core.get("handler"):
        # the handler cut it (systemd-coredump: ExternalSizeMax=, ProcessSizeMax=, or KeepFree= space)
        refusal = O.Refusal(HANDLER_POLICY, str(core["handler"]),
                            core.get("why") or f"{core['handler']} truncated the core")
    sysctls: "dict[str, Any]" = {}
    notes: "dict[str, str]" = {}
    for key, then in (("kernel.core_pattern", env.get("pattern_then")), ("fs.suid_dumpable",
                                                                          env.get("suid_dumpable_then"))):
        if then:
            ch = then["change"]
            sysctls[key] = then["value"]
            notes[key] = f"{_changed(ch)} to {ch['after']} at {_when(ch['time'])}"
    return O.Observed(signal=crash.get("signal"), core_status=core.get("status"), core_size=core.get("size"),
                      expected_size=core.get("expected_size"), core_path=core.get("path"), refusal=refusal,
                      sysctls=sysctls, sysctl_notes=notes, instance=(instance or {}).get("pid"))


def _gate_list(gates: "list[dict[str, Any]]") -> "list[dict[str, Any]]":
    """The gate results a likely reason rests on: the failing, the undecided, and the settled."""
    return [{k: g[k] for k in ("id", "status", "evidence", "observed", "model_status") if k in g}
            for g in gates if g["status"] in ("fail", "unknown") or g.get("observed")]


def likely_reason(crash: "dict[str, Any]", core: "dict[str, Any]",
                  env: "dict[str, Any]") -> "dict[str, Any]":
    """``{"gate", "evidence", "fix", "gates", "observed"}`` for a core that did not survive (or
    survived cut): the gates evaluated with the crash's observed facts (:func:`observe`) and a
    running instance's facts standing in for the crashed process (``instance``); without an
    instance, what the observation alone settles, and what became unknown."""
    from coredoctor.kernel import evaluator, observed as O
    inst = env["instance"](crash)
    obs = observe(crash, core, env, inst)
    facts = env["instance_facts"](inst) if inst and env.get("instance_facts") else None
    if facts is not None:
        snap, p = facts
        procs = {q["pid"]: q for q in snap["processes"]}
        t = evaluator.evaluate(snap, p, procs.get(p.get("ppid")), crash.get("signal") or "SIGSEGV", None, procs,
                               observed=obs)
        return _from_target(t, crash, inst, env)
    seen = O.settled_without_facts(obs)
    base = {"gates": seen, "observed": O.as_dict(obs)}
    lost = ("no running instance of the program could be read, so its facts (credentials, limits, cwd, "
            "umask) are unknown" if not inst else
            f"the running instance pid {inst['pid']} could not be read again, so its facts are unknown")
    if obs.refusal is not None:
        r = obs.refusal
        return dict(base, gate=r.gate, evidence=f"{r.source} logged: {r.line}", fix=None)
    if seen:
        return dict(base, gate=None, evidence=f"{seen[0]['evidence'].split('; ')[0]}; which of "
                    f"{', '.join(g['id'] for g in seen)} did it is unknown: {lost}", fix=None)
    pol = env["policy"](crash) if env.get("policy") else None
    if pol and pol[0] == "fail":  # kernel.handlers.policy of the handler today, for this executable
        st, ev, fix = pol
        return {"gate": "handler-policy", "evidence": f"now: {ev}", "fix": (fix or {}).get("commands"),
                "gates": [{"id": HANDLER_POLICY, "status": st, "evidence": f"now: {ev}"}], "observed": base["observed"]}
    d = env.get("missing_dir")
    if d:  # an absolute directory: the same for every process of the host root
        ev = f"the core directory {d} does not exist now ({lost})"
        return {"gate": "core-dir", "evidence": ev, "fix": [f"mkdir -m 1777 {d}"],
                "gates": [{"id": _gate_id("core-dir"), "status": "fail", "evidence": ev}],
                "observed": base["observed"]}
    if crash["unit_result"] == "killed":
        return dict(base, gate=None, evidence="systemd saw the main process killed without a core (code=killed); "
                    f"the kernel logged no refusal and {lost}", fix=None)
    return dict(base, gate=None, evidence=f"the kernel logged no refusal, and {lost}: the silent gates "
                "(dumpable, RLIMIT_CORE, the core directory) leave no trace", fix=None)


def _from_target(t: "dict[str, Any]", crash: "dict[str, Any]", inst: "dict[str, Any]",
                 env: "dict[str, Any]") -> "dict[str, Any]":
    """A likely reason from check's gates evaluated for the running instance *inst* with what was
    observed of *crash*."""
    pid = inst["pid"]
    out: "dict[str, Any]" = {"gates": _gate_list(t["gates"]), "observed": t.get("observed"), "instance": pid}
    if t["dumps"] is False:
        gid = t["blocking_gate"]
        g = next((g for g in t["gates"] if g["id"] == gid), None)
        ev = g["evidence"] if g else t["verdict"]
        out.update(gate=gid, evidence=f"the running instance pid {pid}, whose facts stand in for the crashed "
                   f"process: {ev}", fix=[c for f in t.get("fixes") or [] for c in f["commands"]] or None)
        sdt = env.get("suid_dumpable_then")
        if gid == DUMPABLE and sdt and "fs.suid_dumpable" in ((t.get("observed") or {}).get("sysctls") or {}) \
                and g and (g.get("observed") or g.get("observed_in")):
            # settled by what fs.suid_dumpable was then (in every world, or in those the
            # instance's "0 or 2" leaves open, all failing here): the fix changed it since
            out.update(fixed_by=sdt["change"]["fix"], fix=None)  # changed since: the instance dumps now
        return out
    if t["dumps"] is None:
        g = next((g for g in t["gates"] if g["id"] == t.get("undecided_by")), None)
        out.update(gate=None, fix=None, evidence=f"unknown: the gates for the running instance pid {pid} with what "
                   f"was observed cannot decide ({t.get('undecided_by')}: {g['evidence'] if g else t['verdict']})")
        return out
    out.update(gate=None, fix=None, evidence=f"the kernel logged no refusal, and the running instance pid {pid} "
               f"would dump now, with what was observed of this crash ({t['verdict']}): what stopped this "
               "crash's core (core_pattern, limits, dumpability of that process) differed then")
    return out


def handler_policy(parsed: "dict[str, Any]", facts: "dict[str, Any]", page_size: int = 4096
                   ) -> "Callable[[dict[str, Any]], tuple[str, str, Optional[dict[str, Any]]]]":
    """check's handler-policy model (kernel.handlers.policy) for one crashed program: the
    crash's RLIMIT_CORE and size are gone, its executable may be known."""
    name = handlers.identify(parsed["helper"])
    return lambda crash: handlers.policy(name, facts, parsed.get("tokens", [])[1:], None, page_size, None,
                                         exe=crash.get("exe"))


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _changed(ch: "dict[str, Any]") -> str:
    return f"fix {ch['fix']} changed it" if ch["how"] == "applied" else f"the rollback of fix {ch['fix']} put it back"


def pattern_env(pattern: str, kernel: "dict[str, Any]") -> "dict[str, Any]":
    """``{"parsed", "policy", "missing_dir"}`` for a core_pattern: its parse, the handler's
    policy for a pipe, and its directory when that is absolute and missing now."""
    from coredoctor.snapshot import handlers as shandlers
    parsed = core_pattern.parse(pattern, kernel["features"].get("socket_pattern", False))
    pol = None
    if parsed["kind"] == "pipe" and parsed.get("helper"):
        pol = handler_policy(parsed, shandlers.read_handler(parsed), os.sysconf("SC_PAGE_SIZE"))
    missing_dir = None
    if parsed["kind"] == "file":
        exp = core_pattern.expand(parsed, {"pid": 0, "pid_ns": 0, "comm": "x", "exe": None, "signo": None,
                                           "tid": None, "tid_ns": None})
        d = os.path.dirname(core_pattern.render(exp["parts"]))
        if exp["absolute"] and d and "*" not in d and not os.path.isdir(d):
            missing_dir = d
    return {"parsed": parsed, "policy": pol, "missing_dir": missing_dir}


HISTORY_KEYS = ("kernel.core_pattern", "fs.suid_dumpable")


def build(since: "float | None" = None, only: "Iterable[str] | None" = None,
          log_files: "list[str] | None" = None) -> "dict[str, Any]":
    """The ``coredoctor.crashes/1`` document for the live host, newest first."""
    from coredoctor.fix import journal as fix_journal
    from coredoctor.snapshot import sysctl
    kernel = sysctl.read_kernel()
    now = sysctl.read_sysctls()
    pattern = str(now.get("kernel.core_pattern") or "")  # a str: the sysctl is text
    skips = Skips()
    events, read = gather(since, only=only, log_files=log_files, skips=skips)
    penv = pattern_env(pattern, kernel)
    host = cores.Host(penv["parsed"])
    hist = {k: sysctl_history.changes(fix_journal.list_all(), k) for k in HISTORY_KEYS}
    from coredoctor.history import kmsg as kmsg_reader
    boot = kmsg_reader.boot_id()
    env = dict(penv, signals=kernel["signals"], base_dirs=host.base_dirs, instance=host.instance,
               complete_container=host.complete_container, live_container=host.live_container,
               gone_container=cores.podman_died,
               container_core=lambda crash, ct, parsed: cores.container_core(
                   crash, ct, parsed, host.container_member(crash, ct),
                   gone=_gone_why(ct)),
               instance_facts=_instance_facts(),
               then=lambda crash: {k: sysctl_history.value_at(hist[k], crash.get("time"), str(now.get(k, "")),
                                                              kmsg_seq=crash.get("kmsg_seq"), boot_id=boot)
                                   for k in HISTORY_KEYS},
               pattern_env=lambda p: pattern_env(p, kernel))
    from coredoctor.history import witness
    return {"schema": SCHEMA, "core_pattern": pattern, "read": read, "crashes": records(events, env, since),
            "skipped": dict(skips.counts), "skipped_why": {k: list(v) for k, v in skips.reasons.items()},
            "kernel_log": witness.kernel_log(now, kernel["machine"], position=kmsg_reader.position())}  # additive: can it witness a fault


def _gone_why(ct: "dict[str, Any]") -> "str | None":
    """What is known of the end of a container no process of which runs."""
    if ct.get("format") != "podman-events":
        return None
    if ct.get("removed") is not None:
        return (f"podman removed the container at {_when(ct['removed'])} (--rm, or podman rm), and with it "
                "its own filesystem (the overlay upper layer a core in it lands in)")
    return f"the container's main process died at {_when(ct['died'])} and no process of it runs now"


def _instance_facts() -> "Callable[[dict[str, Any]], Optional[Tuple[dict[str, Any], dict[str, Any]]]]":
    """``(snap, proc)`` of a running instance (snapshot.take of its pid), once per pid; None when
    it cannot be read (gone, or access denied)."""
    from coredoctor import snapshot
    cache: "dict[int, Optional[Tuple[dict[str, Any], dict[str, Any]]]]" = {}

    def facts(inst: "dict[str, Any]") -> "Optional[Tuple[dict[str, Any], dict[str, Any]]]":
        pid = inst["pid"]
        if pid not in cache:
            cache[pid] = None
            try:
                snap = snapshot.take([pid])
            except Error:
                return None
            p = next((q for q in snap["processes"] if q["pid"] == pid), None)
            if p is not None:
                cache[pid] = (snap, p)
        return cache[pid]
    return facts


def _env_then(c: "dict[str, Any]", env: "dict[str, Any]") -> "dict[str, Any]":
    """The environment to judge crash *c* in: today's, or with the core_pattern and
    fs.suid_dumpable the fix journal says were in force at its time."""
    then = env["then"](c) if env.get("then") else {}
    cenv = env
    pat, ch = then.get("kernel.core_pattern", (None, None))
    if ch is not None:
        cenv = dict(env, **env["pattern_env"](pat), pattern_then={"value": pat, "change": ch})
    sd, sch = then.get("fs.suid_dumpable", (None, None))
    if sch is not None:
        cenv = dict(cenv, suid_dumpable_then={"value": sd, "change": sch})
    return cenv


def container_of(crash: "dict[str, Any]", env: "dict[str, Any]") -> "tuple[Any, str | None]":
    """``(container, how it is known)`` of a crash (``container`` of coredoctor.crashes/1, see
    :mod:`coredoctor.snapshot.containers`): from a cgroup a source recorded with it
    (systemd-coredump's COREDUMP_CGROUP, the logging monitor's _SYSTEMD_CGROUP), else from the
    crashed pid while it is still there (``env["live_container"]``: the same pid, started before
    the crash), else from the running instance that stands in for it (a restarted program: the
    container it runs in now, when that container was there before the crash). ``(None, None)`` on the host or when nothing tells."""
    from coredoctor.snapshot import containers
    complete = env.get("complete_container") or (lambda c: c)
    for e in crash["events"]:
        cg = e.get("cgroup")
        if isinstance(cg, str) and cg and not e.get("untrusted"):
            c = containers.from_path(cg)
            src = (e.get("sources") or ["?"])[0]
            return (complete(c), f"{src}: the cgroup {cg}") if c else (None, None)
    if crash.get("pid") and env.get("live_container"):
        got = env["live_container"](crash)
        if got is not None:
            return got, f"the cgroup of pid {crash['pid']}, still there"
    inst = env["instance"](crash) if env.get("instance") else None
    if inst and inst.get("container"):
        since, when = inst.get("container_since"), crash.get("time")
        if since is not None and when is not None and since > when + 1.0:
            return None, None  # that container started after the crash: not where it happened
        return inst["container"], f"the cgroup of the running instance pid {inst['pid']}"
    signo = crash.get("signo") or (env.get("signals") or {}).get(crash.get("signal") or "")
    gone = env["gone_container"](dict(crash, signo=signo)) if env.get("gone_container") and signo else None
    if gone is not None and isinstance(signo, int):
        how = (f"{gone['state'][0]}: podman container {gone.get('name') or gone['id'][:12]} died with exit code "
               f"{128 + signo} (its main process killed by signal {signo}) at {_when(gone['died'])}")
        if gone.get("removed") is not None:
            how += f" and was removed at {_when(gone['removed'])}"
        return gone, how
    return None, None


def _container_core(c: "dict[str, Any]", rec: "dict[str, Any]", core: "dict[str, Any]",
                    cenv: "dict[str, Any]", env: "dict[str, Any]") -> None:
    """A crash in a container, a file pattern: where its core went on the host (``core``
    gains ``container_path``, ``host_path``, ``found``, ``landing``; additive), looked up
    there (never through a symlink, nothing deleted). The pattern is the one in force then (the
    fix journal), else today's, said in ``pattern_from``."""
    ct = rec.get("container")
    parsed = cenv.get("parsed") or {}
    if not isinstance(ct, dict) or parsed.get("kind") != "file" or not env.get("container_core"):
        return
    got = env["container_core"](c, ct, parsed)
    core["pattern_from"] = ("the fix journal: the core_pattern in force then" if cenv.get("pattern_then")
                            else "today's core_pattern (no change of it is on record since the crash)")
    for k in ("container_path", "host_path", "found", "landing", "landing_evidence"):
        core[k] = got.get(k)
    if got.get("found"):
        core.update(status=got.get("status") or "present", path=got["host_path"], size=got["size"])
        if got.get("expected_size"):
            core["expected_size"] = got["expected_size"]
        core["why"] = got.get("why") or f"in container {ct.get('name') or ct.get('id')}: at its host path"
        if got.get("survives") is False:
            core["why"] += "; it goes with the container (see landing)"
    elif core.get("status") in ("missing", "unknown"):
        core["path"] = got.get("host_path")  # not the host's own path of the pattern: the container's
        core["why"] = f"in container {ct.get('name') or ct.get('id')}: {got.get('why')}" + (
            f"; {core['why']}" if core.get("why") and core["status"] == "missing" and
            not core["why"].startswith("no ELF core of this pid") else "")


def records(events: "Iterable[dict[str, Any]]", env: "dict[str, Any]",
            since: "float | None" = None) -> "list[dict[str, Any]]":
    """Crash records from classified events, newest first, each with its core and, when the core
    did not survive whole, the likely reason. *env*: ``parsed`` (core_pattern.parse of today's
    pattern), ``signals`` ({name: number}), ``base_dirs(crash)`` and ``instance(crash)`` (what
    the live host knows), ``policy`` (handlers.policy of today's handler or None) and
    ``missing_dir``."""
    recs = corr.correlate(events)
    if since is not None:
        recs = [c for c in recs if c["time"] is None or c["time"] >= since]
    recs.sort(key=lambda c: c["time"] or 0, reverse=True)
    names = {v: k for k, v in env["signals"].items()}
    out: "list[dict[str, Any]]" = []
    for c in recs:
        if c["signal"] is None and c["signo"] is not None:
            c["signal"] = names.get(c["signo"])
        cenv = _env_then(c, env)
        core = _wcoredump(core_of(c, cenv), c)
        pt = cenv.get("pattern_then")
        if pt:
            ch = pt["change"]
            core["core_pattern"] = pt["value"]
            core["pattern_note"] = (f"kernel.core_pattern was {pt['value']!r} at this crash: {_changed(ch)} "
                                    f"to {ch['after']!r} at {_when(ch['time'])}")
            if core["status"] == "unknown" and core.get("why"):
                core["why"] += f" ({core['pattern_note']})"
        rec: "dict[str, Any]" = {"time": c["time"], "pid": c["pid"], "comm": c["comm"], "exe": c["exe"], "unit": c["unit"], "uid": c.get("uid"),
               "signal": c["signal"], "signo": c["signo"], "sources": c["sources"], "core": core,
               "likely_reason": None, "unit_result": c["unit_result"], "evidence": c["events"],
               "untrusted": None}
        if c.get("supervisor"):
            rec["supervisor"] = c["supervisor"]  # additive: the supervisor's line and its WCOREDUMP
        if c.get("fault"):
            rec["fault"] = c["fault"]  # additive (arm64): the ESR decoded, see history.esr
        if c.get("kmsg_seq") is not None:
            rec["kmsg_seq"] = c["kmsg_seq"]  # additive: its kernel line's number (orders it against fixes)
        if c["events"] and all(ev.get("untrusted") for ev in c["events"]):
            rec["untrusted"] = c["events"][0]["untrusted"]  # nothing but lines anyone could have written
        rec["container"], rec["container_from"] = container_of(c, env)
        _container_core(c, rec, core, cenv, env)
        if isinstance(rec["container"], dict):  # what only served to find it stays out of the object
            rec["container"] = {k: v for k, v in rec["container"].items() if k not in ("died", "removed")}
        if core["status"] in ("missing", "empty", "truncated"):
            rec["likely_reason"] = likely_reason(c, core, cenv)
            inst = env["instance"](c) if rec["unit"] is None else None
            if inst and inst.get("unit"):
                rec["unit"] = inst["unit"]
                rec["unit_from"] = f"the cgroup of the running instance pid {inst['pid']}"
        out.append(rec)
    return out
