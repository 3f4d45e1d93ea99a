"""
The systemd unit, the limits and the working directory behind a verdict (pure)
-------------------------------------------------------------------------------
A finder (:data:`coredoctor.origin.FINDERS`) that reads the snapshot's ``units`` and
``limits_conf`` sections (:mod:`coredoctor.snapshot.units`) and names, file:line:

- ``dumpable`` (a credential change): the ``ExecStart=`` word that carried the user, and the
  ``Environment=``/``EnvironmentFile=`` line that set its variable (which file wins, which ones are
  missing); else ``User=``/``Group=``/``DynamicUser=``/``SupplementaryGroups=`` and the
  capability settings;
- ``rlimit-core`` / ``rlimit-fsize``: ``LimitCORE=``/``LimitFSIZE=`` of the unit or drop-in, else
  ``DefaultLimitCORE=`` of system.conf(.d); for a process outside a service: the ancestor it
  inherited the limit from (named, walking ppid in the snapshot), ending at the unit or the
  limits.conf/limits.d line that set it;
- ``core-dir`` (a relative core_pattern): ``WorkingDirectory=`` or systemd's default ``/`` for
  system units, with a ``WorkingDirectory=`` drop-in as the smaller fix (reported, not applied:
  it moves the daemon's relative paths).

:func:`variable` is the chain for one variable, for other finders (a daemon's wrapper option
that came from ``${VAR}``).
"""

import os
import shlex
from typing import Any, Dict, List, Optional, Tuple

from coredoctor.kernel import remedies as R
from coredoctor.origin import Found, Origin, origin
from coredoctor.origin import unitfile as U

__all__ = ["find", "variable", "unit_of", "SOURCES"]

#: the manual sections each origin cites
SOURCES = {
    "User": "systemd.exec(5) \"Credentials\": User=, Group=",
    "DynamicUser": "systemd.exec(5) \"Credentials\": DynamicUser=",
    "SupplementaryGroups": "systemd.exec(5) \"Credentials\": SupplementaryGroups=",
    "Capabilities": "systemd.exec(5) \"Capabilities\": CapabilityBoundingSet=, AmbientCapabilities=",
    "Limit": "systemd.exec(5) \"Process Properties\": LimitCORE=, LimitFSIZE= (setrlimit(2))",
    "DefaultLimit": "systemd-system.conf(5): DefaultLimitCORE=, DefaultLimitFSIZE=",
    "WorkingDirectory": "systemd.exec(5) \"Paths\": WorkingDirectory= (default: / for system units)",
    "Environment": "systemd.exec(5) \"Environment\": Environment=, EnvironmentFile= (files override "
                   "Environment=, later files override earlier ones)",
    "ExecStart": "systemd.service(5) \"Command lines\": $VAR splits into words, ${VAR} replaces in place",
    "limits": "limits.conf(5), pam_limits(8): pam_limits.c parse_config_file() (user > @group > %group > *)",
    "inherited": "fork(2)/execve(2): resource limits are inherited (getrlimit(2))",
}
_ITEMS = {"rlimit-core": ("core", "LimitCORE", "RLIMIT_CORE"), "rlimit-fsize": ("fsize", "LimitFSIZE", "RLIMIT_FSIZE")}

_CACHE: Dict[int, Tuple[Any, Dict[int, Dict[str, Any]]]] = {}
_PARSED: Dict[int, Tuple[Dict[str, Any], Optional["Unit"]]] = {}


def _by_pid(snap: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    procs = snap.get("processes") or []
    hit = _CACHE.get(id(snap))
    if hit is not None and hit[0] is procs:
        return hit[1]
    m = {p["pid"]: p for p in procs}
    _CACHE.clear()
    _CACHE[id(snap)] = (procs, m)
    return m


class Unit:
    """A unit's effective settings, from its snapshot record."""

    def __init__(self, rec: Dict[str, Any]) -> None:
        self.rec = rec
        self.name: str = rec["unit"]
        self.files = [f for f in rec.get("files") or [] if f.get("text") is not None]
        self.eff = U.merge([(f["path"], f["text"]) for f in self.files])
        self.env, self.env_files = U.environment(self.eff, rec.get("env") or {}, self.name)
        self.manager = rec.get("manager_pid")

    def inside(self) -> str:
        """For a machine's unit: where its files are (the root of the machine's systemd)."""
        if not self.manager:
            return ""
        return f" (files in the root of pid {self.manager}, {self.rec.get('manager_comm') or 'its systemd'})"

    def main_file(self) -> Optional[str]:
        return next((f["path"] for f in self.rec.get("files") or [] if f.get("kind") == "unit"), None)

    def listed(self) -> str:
        return ", ".join(f["path"] for f in self.files) or "no unit file found"

    def system(self) -> Dict[str, List[U.Setting]]:
        return U.merge([(f["path"], f["text"]) for f in self.rec.get("system") or []
                        if f.get("text") is not None], section="Manager")


def unit_of(snap: Dict[str, Any], proc: Dict[str, Any]) -> Optional[Unit]:
    """The process's unit record of the snapshot (None when it has none)."""
    key = U.unit_key(_by_pid(snap), proc)
    rec = (snap.get("units") or {}).get(key) if key else None
    if not rec or rec.get("error"):
        return None
    hit = _PARSED.get(id(rec))
    if hit is not None and hit[0] is rec:  # parsed once per unit of a snapshot (check --all)
        return hit[1]
    u: Optional[Unit] = Unit(rec)
    if u is not None and not u.files:
        u = None  # no unit file read: nothing to name (a scope, a transient unit)
    if len(_PARSED) > 4096:
        _PARSED.clear()
    _PARSED[id(rec)] = (rec, u)
    return u


def _last(eff: Dict[str, List[U.Setting]], key: str) -> Optional[U.Setting]:
    xs = eff.get(key) or []
    return xs[-1] if xs else None


def _setting(u: Unit, st: U.Setting, summary: str, src: str, kind: str = "unit", via: Any = None) -> Origin:
    return origin(kind, summary, SOURCES[src], file=st.file, line=st.line, text=st.text,
                  program=u.name, via=via)


def _var_origin(u: Unit, v: U.Var) -> Origin:
    via: List[Origin] = []
    if v.via is not None:
        via.append(_setting(u, v.via, f"{v.via.key}={v.via.value} in {v.via.file}:{v.via.line} reads "
                            f"{v.file}", "Environment"))
    for old in v.overridden:
        via.append(origin("environment", f"overridden: {old.name}={old.value} in {old.file}:{old.line}",
                          SOURCES["Environment"], program=u.name, file=old.file, line=old.line, text=old.text))
    missing = [(st, p) for st, p, miss in u.env_files if miss]
    for st, p in missing:
        err = (u.rec.get("env_errors") or {}).get(p) or "missing"
        via.append(origin("environment", f"{st.key}={st.value} ({st.file}:{st.line}): {p} is {err}"
                          + (" (allowed by '-')" if st.value.lstrip().startswith("-") or f"-{p}" in st.value
                             else ""), SOURCES["Environment"], program=u.name, file=st.file, line=st.line,
                          text=st.text))
    wins = (f", overriding {v.overridden[0].value!r} from {v.overridden[0].file}:{v.overridden[0].line}"
            if v.overridden else "")
    return origin("environment", f"{v.name}={v.value} is set in {v.file}:{v.line}{wins}, "
                  f"for {u.name}", SOURCES["Environment"], program=u.name, file=v.file,
                  line=v.line, text=v.text, via=via)


def variable(snap: Dict[str, Any], proc: Dict[str, Any], name: str) -> Optional[Origin]:
    """The line that set *name* in the environment of *proc*'s unit (the ``EnvironmentFile=``
    or ``Environment=`` line that wins, with the directive that read it, the values it
    overrides and the optional files that are missing in its ``via``), or None."""
    u = unit_of(snap, proc)
    if u is None or name not in u.env:
        return None
    return _var_origin(u, u.env[name])


def _ids(proc: Dict[str, Any], u: Optional[Unit] = None) -> List[str]:
    """The names and numbers the process now runs as (a machine's names from its own files)."""
    c = proc.get("creds") or {}
    out = [x for x in (c.get("user"), c.get("group")) if x]
    if u is not None and u.manager:
        uid, gid = str(c.get("uid", [None, None])[1]), str(c.get("gid", [None, None])[1])
        out = [x for x in ((u.rec.get("users") or {}).get(uid), (u.rec.get("groups") or {}).get(gid)) if x]
    out += [str(c.get("uid", [None, None])[1]), str(c.get("gid", [None, None])[1])]
    return [x for x in out if x and x != "None"]


def _dumpable(u: Unit, proc: Dict[str, Any]) -> Optional[Origin]:
    ids = _ids(proc, u)
    user = ids[0] if ids else None
    values = {k: v.value for k, v in u.env.items()}
    for st in u.eff.get("ExecStart", []):
        _, words = U.exec_words(st.value, values, u.name)
        for i, w in enumerate(words):
            if not w.names or not any(x in w.word.replace(":", " ").replace("=", " ").split() for x in ids):
                continue
            via: List[Origin] = []
            for n in w.names:  # one flat chain, nearest first: the variable's line, then what fed it
                if n in u.env:
                    vo = _var_origin(u, u.env[n])
                    via += [dict(vo, via=[])] + vo["via"]
            argv = [w.word]
            return origin("unit", f"ExecStart= in {st.file}:{st.line} passes {w.word!r} (from "
                          f"{w.raw}) to the program, which switched to {user}", SOURCES["ExecStart"],
                          program=u.name, file=st.file, line=st.line, text=st.text, argv=argv, via=via)
    for st in u.eff.get("ExecStart", []):
        _, words = U.exec_words(st.value, values, u.name)
        for w in words[1:]:
            if user and any(x in w.word.replace(":", " ").replace("=", " ").split() for x in ids):
                return origin("unit", f"ExecStart= in {st.file}:{st.line} passes {w.word!r} to "
                              f"the program, which switched to {user}", SOURCES["ExecStart"], program=u.name,
                              file=st.file, line=st.line, text=st.text, argv=[w.word])
    found: List[Origin] = []
    for key, src in (("User", "User"), ("Group", "User"), ("DynamicUser", "DynamicUser"),
                     ("SupplementaryGroups", "SupplementaryGroups"), ("CapabilityBoundingSet", "Capabilities"),
                     ("AmbientCapabilities", "Capabilities")):
        for st in u.eff.get(key, []):
            found.append(_setting(u, st, f"{key}={st.value} in {st.file}:{st.line}: systemd starts "
                                  f"{u.name} with it", src))
    if not found:
        return None
    return dict(found[0], via=found[1:])


def _limit_origin(u: Unit, gate: str, proc: Dict[str, Any]) -> Origin:
    item, key, rname = _ITEMS[gate]
    have = (proc.get("limits") or {}).get(item)
    st = _last(u.eff, key)
    if st is not None:
        val = U.limit_value(U.specifiers(st.value, u.name))
        note = ""
        if val is not None and have is not None and list(val) != list(have):
            note = f" (but the process has {have}: changed after start, by the program or prlimit)"
        return _setting(u, st, f"{key}={st.value} in {st.file}:{st.line} sets {rname} of "
                        f"{u.name}{note}", "Limit")
    dst = _last(u.system(), "Default" + key)
    if dst is not None:
        return origin("unit", f"{u.name} has no {key}= ({u.listed()}); Default{key}={dst.value} in "
                      f"{dst.file}:{dst.line} sets it for every service", SOURCES["DefaultLimit"],
                      program=u.name, file=dst.file, line=dst.line, text=dst.text)
    return origin("unit", f"{u.name} has no {key}= ({u.listed()}) and system.conf no Default{key}=: "
                  f"{rname} is the one systemd itself passes to services", SOURCES["DefaultLimit"],
                  program=u.name, file=u.main_file())


def _same_limit(a: Dict[str, Any], b: Dict[str, Any], item: str) -> bool:
    la, lb = (a.get("limits") or {}).get(item), (b.get("limits") or {}).get(item)
    return la is not None and list(la) == list(lb or [])


def _limits_line(snap: Dict[str, Any], proc: Dict[str, Any], item: str) -> Optional[Origin]:
    c = proc.get("creds") or {}
    files = [(f["path"], f["text"]) for f in snap.get("limits_conf") or [] if f.get("text") is not None]
    if not files:
        return None
    got = U.limits(files, c.get("user"), [c["group"]] if c.get("group") else [], item)
    have = (proc.get("limits") or {}).get(item)
    ln = got.get("soft")
    if ln is None or have is None or ln.value != have[0]:
        return None
    return origin("limits", f"'{ln.text.strip()}' in {ln.file}:{ln.line} (pam_limits, for login sessions) "
                  f"sets the soft {item} limit of {c.get('user') or 'the user'}", SOURCES["limits"],
                  file=ln.file, line=ln.line, text=ln.text)


def _inherited(snap: Dict[str, Any], proc: Dict[str, Any], gate: str) -> Optional[Origin]:
    item, _, rname = _ITEMS[gate]
    by = _by_pid(snap)
    top, chain = proc, []
    seen = {proc["pid"]}
    while True:
        parent = by.get(top.get("ppid") or 0)
        if parent is None or parent["pid"] in seen or not _same_limit(parent, proc, item):
            break
        seen.add(parent["pid"])
        chain.append(parent)
        top = parent
    have = (proc.get("limits") or {}).get(item)
    via: List[Origin] = []
    u = unit_of(snap, top) if top.get("unit") and not str(top["unit"]).endswith(".scope") else None
    if u is not None:
        via.append(_limit_origin(u, gate, top))
    else:
        ln = _limits_line(snap, top, item) or _limits_line(snap, proc, item)
        if ln is not None:
            via.append(ln)
    if not chain:
        return via[0] if via else None
    names = " <- ".join(f"{p.get('comm')} (pid {p['pid']})" for p in chain)
    return origin("inherited", f"{rname} ({_fmt(have)}) is the one of its parent chain {names}: inherited "
                  f"at fork from {top.get('comm')} (pid {top['pid']}), unless set again to the same value",
                  SOURCES["inherited"], program=top.get("comm"), via=via)


def _fmt(lim: Any) -> str:
    def one(v: Any) -> str:
        return "unlimited" if v is None else str(v)
    return f"soft {one(lim[0])}, hard {one(lim[1])}" if isinstance(lim, (list, tuple)) and len(lim) == 2 else "?"


def _cwd(snap: Dict[str, Any], u: Unit, proc: Dict[str, Any]) -> Tuple[Origin, Optional[Dict[str, Any]]]:
    st = _last(u.eff, "WorkingDirectory")
    if st is not None:
        o = _setting(u, st, f"WorkingDirectory={st.value} in {st.file}:{st.line}: the relative "
                     f"core_pattern is written there", "WorkingDirectory")
    else:
        o = origin("unit", f"{u.name} has no WorkingDirectory= ({u.listed()}): systemd starts system "
                   "services in /, where the relative core_pattern is written", SOURCES["WorkingDirectory"],
                   program=u.name, file=u.main_file())
    d = R.DEFAULT_DIR
    if u.manager:  # a machine's unit: its drop-in belongs inside the machine
        return o, _machine_dropin(u, "cwd", [f"WorkingDirectory={d}"], f"start it in {d}",
                                  f"the daemon's relative paths then resolve under {d}", [f"mkdir -p -m 1777 {d}"])
    lines = ["[Service]", f"WorkingDirectory={d}"]
    path = f"/etc/systemd/system/{u.name}.d/90-coredoctor-cwd.conf"
    write = R.commands(R.dropin(u.name, "cwd", lines, "WorkingDirectory="))
    fx = R.fix(f"Or, for {u.name} only: start it in {d} (a WorkingDirectory= drop-in), instead of "
               "changing the host's core_pattern",
               [R.manual(f"write {path} with WorkingDirectory={d}, then daemon-reload and restart {u.name}",
                         "a relative core_pattern is written in the working directory",
                         [f"mkdir -p -m 1777 {d}"] + write + [f"systemctl restart {u.name}"],
                         risk=f"the daemon's relative paths then resolve under {d}", needs_restart=True)])
    return o, R.public_fix(fx)


def _machine_dropin(u: Unit, name: str, lines: List[str], what: str, risk: Optional[str],
                    first: Optional[List[str]] = None) -> Dict[str, Any]:
    """A drop-in inside an nspawn machine, reported (not applied): written, reloaded and restarted
    from the machine's own mount namespace (``nsenter -m``), so that no path in the machine's
    tree -- a symlink planted there -- is followed from the host."""
    pid = u.manager
    path = f"/etc/systemd/system/{u.name}.d/90-coredoctor-{name}.conf"
    body = " ".join(shlex.quote(x) for x in ["[Service]"] + lines)
    ns = f"nsenter -t {pid} -m -p --"
    script = "; ".join((first or []) + [f"mkdir -p {shlex.quote(os.path.dirname(path))}",
                                         f"printf '%s\\n' {body} > {shlex.quote(path)}"])
    cmds = [f"{ns} sh -c {shlex.quote(script)}", f"{ns} systemctl daemon-reload",
            f"{ns} systemctl restart {shlex.quote(u.name)}"]
    fx = R.fix(f"Or, for {u.name} in the machine of pid {pid} only: {what} (a drop-in inside the machine; "
               "a drop-in on the host does not reach the machine's systemd)",
               [R.manual(f"inside the machine of pid {pid}: write {path} ({'; '.join(lines)}), daemon-reload "
                         f"and restart {u.name}", "the machine's own systemd reads its own /etc/systemd/system",
                         cmds, risk=risk, needs_restart=True)])
    return R.public_fix(fx)


def find(snap: Dict[str, Any], proc: Dict[str, Any], target: Dict[str, Any]) -> Found:
    """The finder: origins for ``dumpable``, ``rlimit-core``, ``rlimit-fsize``, ``core-dir``."""
    out: Dict[str, Origin] = {}
    fixes: List[Dict[str, Any]] = []
    u = unit_of(snap, proc)
    bad = {g["id"] for g in target.get("gates", ()) if g.get("status") in ("fail", "warn")}
    if u is not None and target.get("dumpable", {}).get("cause") in ("privilege-change", "exec", "inherited"):
        o = _dumpable(u, proc)
        if o is not None:
            out["dumpable"] = o
    for gate in _ITEMS:
        if gate not in bad:
            continue
        if u is not None:
            out[gate] = _limit_origin(u, gate, proc)
            if u.manager and gate == "rlimit-core":
                fixes.append(_machine_dropin(u, "core", ["LimitCORE=infinity"], "LimitCORE=infinity", None))
        else:
            o = _inherited(snap, proc, gate)
            if o is not None:
                out[gate] = o
    pattern = (snap.get("sysctl") or {}).get("kernel.core_pattern") or ""
    if u is not None and "core-dir" in bad and pattern and not pattern.startswith(("/", "|", "@")):
        out["core-dir"], fx = _cwd(snap, u, proc)
        if fx is not None:
            fixes.append(fx)
    if u is not None and u.manager:
        for o in out.values():
            for x in [o] + o["via"]:
                if x["kind"] in ("unit", "environment"):
                    x["summary"] += u.inside()
    return Found(out, fixes)
