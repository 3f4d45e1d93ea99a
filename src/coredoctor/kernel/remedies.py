"""
Remedies
--------
What to change so that the next crash leaves a core, as data. A gate result carries *fixes*
(``{"summary", "needs_restart", "actions"}``); each action is a plain record of one of the
kinds ``coredoctor fix`` applies and rolls back:

========  ==========================================================  ==================
kind      fields                                                      applied by fix
========  ==========================================================  ==================
sysctl    key, value                                                  yes (/proc/sys)
mkdir     path, mode                                                  yes
file      path, content, mode                                         yes (atomic)
dropin    unit, path, content, mode, after                            yes (+ daemon-reload)
prlimit   pid, resource, value ([soft, hard], None = unlimited)       yes (live process)
daemon-   daemon, text, commands                                      reported (manual)
option
config-   daemon, path, line, replace (1-based line or None),          with fix --daemon
line      section (add after that section's header) or None, expect   (else reported)
restart   pid, comm, unit, command                                    reported
manual    text, commands                                              reported
========  ==========================================================  ==================

Every record has ``why``, ``risk`` (None or a sentence) and ``needs_restart``. ``check``
renders the records as shell commands (:func:`commands`); ``fix`` merges the records of all
its targets (:func:`merge`) and leaves out what is already in place (:func:`settled`). Pure:
the facts about the host come in as arguments.
"""

import shlex
from typing import Any, Dict, Iterable, List, Optional

__all__ = ["DAEMON_KINDS", "config_line", "edit_text", "SYSCTL_FILE", "DEFAULT_DIR", "DEFAULT_PATTERN", "APPLIED_KINDS", "REPORTED_KINDS", "KINDS",
           "sysctl", "mkdir", "file", "dropin", "prlimit", "daemon_option", "restart", "manual", "fix",
           "sysctl_persist", "commands", "public_fix", "identity", "settled", "merge", "order_key",
           "write_lines_cmd", "facts_of", "persisted"]

Action = Dict[str, Any]
Fix = Dict[str, Any]

#: sorts after systemd's 50-coredump.conf, so what fix persists wins at boot
SYSCTL_FILE = "/etc/sysctl.d/90-coredoctor.conf"
DEFAULT_DIR = "/var/crash"
DEFAULT_PATTERN = DEFAULT_DIR + "/core.%e.%p.%t"
#: the first line of the file as versions before the action records wrote it
SYSCTL_HEADER = "# written by coredoctor fix; 'coredoctor fix --rollback ID' restores what was here"

APPLIED_KINDS = ("sysctl", "mkdir", "file", "dropin", "prlimit")
REPORTED_KINDS = ("daemon-option", "restart", "manual")
#: applied only when asked (``fix --daemon``): an edit of a daemon's own config file; otherwise reported
DAEMON_KINDS = ("config-line",)
KINDS = APPLIED_KINDS + REPORTED_KINDS + DAEMON_KINDS

#: the safe order of a plan: the directory before the pattern that points at it, an absolute
#: pattern before fs.suid_dumpable=2 (mode 2 refuses relative names), then what persists them,
#: then the live limits, then what a person does
_ORDER = {"mkdir": 0, "sysctl:kernel.core_pattern": 1, "sysctl:fs.suid_dumpable": 2, "sysctl": 3, "file": 4,
          "dropin": 5, "prlimit": 6, "config-line": 7, "daemon-option": 7, "manual": 8, "restart": 9}


def _rec(kind: str, why: str, risk: Optional[str], needs_restart: bool, **fields: Any) -> Action:
    a: Action = {"kind": kind}
    a.update(fields)
    a.update(why=why, risk=risk, needs_restart=needs_restart)
    return a


# --------------------------------------------------------------------------- constructors


def sysctl(key: str, value: Any, why: str, risk: Optional[str] = None) -> Action:
    return _rec("sysctl", why, risk, False, key=key, value=str(value))


def mkdir(path: str, mode: str, why: str, risk: Optional[str] = None) -> Action:
    return _rec("mkdir", why, risk, False, path=path, mode=mode)


def file(path: str, content: str, why: str, mode: str = "0644", risk: Optional[str] = None) -> Action:
    return _rec("file", why, risk, False, path=path, content=content, mode=mode)


def dropin(unit: str, name: str, lines: Iterable[str], why: str, needs_restart: bool = False,
           risk: Optional[str] = None) -> Action:
    """A systemd drop-in ``/etc/systemd/system/UNIT.d/90-coredoctor-NAME.conf`` (applies from the
    unit's next start, after ``systemctl daemon-reload``)."""
    return _rec("dropin", why, risk, needs_restart, unit=unit,
                path=f"/etc/systemd/system/{unit}.d/90-coredoctor-{name}.conf",
                content="\n".join(lines) + "\n", mode="0644", after="systemctl daemon-reload")


def prlimit(pid: int, resource: str, why: str, value: Optional[List[Optional[int]]] = None,
            risk: Optional[str] = None) -> Action:
    return _rec("prlimit", why, risk, False, pid=pid, resource=resource,
                value=list(value) if value is not None else [None, None])


def daemon_option(daemon: str, text: str, why: str, cmds: Iterable[str] = (), needs_restart: bool = False,
                  risk: Optional[str] = None) -> Action:
    """A setting in a daemon's own configuration (manual-only for now: reported, not applied)."""
    return _rec("daemon-option", why, risk, needs_restart, daemon=daemon, text=text, commands=list(cmds))


def config_line(daemon: str, path: str, line: str, why: str, replace: Optional[int] = None,
                expect: Optional[str] = None, section: Optional[str] = None, risk: Optional[str] = None) -> Action:
    """One line of a daemon's own config file: *line* replaces line *replace* (whose text must
    still be *expect*), or is added after the first line that is *section* (a section header),
    or at the top. The daemon reads it at its next start or reload (``needs_restart``)."""
    where = (f"replace line {replace} of {path} ({expect!r})" if replace else
             f"add to the {section} section of {path}" if section else f"add at the top of {path}")
    return _rec("config-line", why, risk, True, daemon=daemon, path=path, line=line, replace=replace,
                expect=expect, section=section, text=f"{line}   # {where}")


def edit_text(text: str, a: Action) -> str:
    """The text of the file after config-line record *a* (ValueError when the file changed so that
    the edit no longer fits: the line to replace is not what check saw, or the section is gone)."""
    lines = text.splitlines(keepends=True)
    nl = "\n"
    new = a["line"] + nl
    if a.get("replace"):
        i = a["replace"] - 1
        if i >= len(lines) or lines[i].strip() != (a.get("expect") or "").strip():
            raise ValueError(f"{a['path']}: line {a['replace']} is no longer {a.get('expect')!r}")
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        lines[i] = indent + new
    elif a.get("section"):
        i = next((n for n, ln in enumerate(lines) if ln.strip() == a["section"]), None)
        if i is None:
            raise ValueError(f"{a['path']}: no {a['section']!r} section")
        if not lines[i].endswith(nl):
            lines[i] += nl
        nxt = lines[i + 1] if i + 1 < len(lines) else "\t"
        lines.insert(i + 1, (nxt[:len(nxt) - len(nxt.lstrip())] or "\t") + new)
    else:
        lines.insert(0, new)
    return "".join(lines)


def restart(proc: Dict[str, Any], why: str) -> Action:
    unit = proc.get("unit")
    cmd = (f"systemctl restart {shlex.quote(unit)}" if unit else
           f"# restart {proc.get('comm')} (pid {proc['pid']}) the way it is normally started")
    return _rec("restart", why, None, True, pid=proc["pid"], comm=proc.get("comm"), unit=unit, command=cmd)


def manual(text: str, why: str, cmds: Iterable[str] = (), risk: Optional[str] = None,
           needs_restart: bool = False) -> Action:
    return _rec("manual", why, risk, needs_restart, text=text, commands=list(cmds))


def fix(summary: str, actions: Iterable[Action], needs_restart: Optional[bool] = None) -> Fix:
    acts = [a for a in actions if a]
    nr = any(a["needs_restart"] for a in acts) if needs_restart is None else needs_restart
    return {"summary": summary, "actions": acts, "needs_restart": nr}


# --------------------------------------------------------------------------- facts and persistence


def facts_of(snap: Dict[str, Any], existing_files: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """What is in place, from a snapshot: live sysctls, the text of coredoctor's own files
    (``own_files`` of the snapshot, overridden by *existing_files*), the directories the
    snapshot walked, and the processes' limits."""
    files = dict(snap.get("own_files") or {}) if isinstance(snap.get("own_files"), dict) else {}
    files.update(existing_files or {})
    dirs: Dict[str, bool] = {}
    for key, v in (snap.get("paths") or {}).items():
        if not isinstance(v, dict) or not key.startswith("init:"):
            continue  # only walks from the host's root name a host path
        path = key.split(":", 1)[1]
        if v.get("exists"):
            dirs[path] = True
        elif v.get("error") in ("ENOENT", "ENOTDIR"):
            dirs.setdefault(path, False)
    own_dirs = snap.get("own_dirs")
    for path, exists in (own_dirs.items() if isinstance(own_dirs, dict) else ()):
        dirs[str(path)] = exists is True
    return {"sysctl": snap.get("sysctl") or {}, "files": {k: v for k, v in files.items() if isinstance(v, str)},
            "dirs": dirs, "limits": {p["pid"]: p.get("limits") or {} for p in snap.get("processes") or []}}


def persisted(text: Optional[str]) -> Dict[str, str]:
    """``key = value`` lines of a sysctl.d file (comments and blank lines left out)."""
    out: Dict[str, str] = {}
    for line in (text or "").splitlines():
        k, sep, v = line.partition("=")
        if sep and not line.lstrip().startswith(("#", ";")):
            out[k.strip()] = v.strip()
    return out


def _sysctl_content(values: Dict[str, str], header: bool = False) -> str:
    lines = ([SYSCTL_HEADER] if header else []) + [
        f"{k} = {v}" for k, v in sorted(values.items(), key=lambda kv: kv[0] != "kernel.core_pattern")]
    return "\n".join(lines) + "\n"


def sysctl_persist(values: Dict[str, Any], facts: Dict[str, Any]) -> Action:
    """The record that persists *values* in :data:`SYSCTL_FILE`, keeping what an earlier fix put
    there and is still in force (so that planning again finds nothing to do)."""
    live = facts.get("sysctl") or {}
    prior = {k: v for k, v in persisted(facts["files"].get(SYSCTL_FILE)).items() if str(live.get(k)) == v}
    merged = {**prior, **{k: str(v) for k, v in values.items()}}
    # the comment line earlier versions wrote first is kept (so that their file is in place as it is)
    header = (facts["files"].get(SYSCTL_FILE) or "").startswith(SYSCTL_HEADER + "\n")
    return file(SYSCTL_FILE, _sysctl_content(merged, header),
                "persist across reboots (applied after distribution files such as 50-coredump.conf)")


# --------------------------------------------------------------------------- rendering


def write_lines_cmd(path: str, *lines: str) -> str:
    """A shell command that writes *lines* to *path* -- ``printf '%s\\n'``, so that core_pattern
    specifiers such as %e and %p are written as they are, not taken as printf directives."""
    quoted = " ".join("'" + ln.replace("'", "'\\''") + "'" for ln in lines)
    return f"printf '%s\\n' {quoted} > {shlex.quote(path)}"


def _lim(v: Optional[int]) -> str:
    return "unlimited" if v is None else str(v)


def commands(a: Action) -> List[str]:
    """The shell commands that do what record *a* describes (what ``check`` prints)."""
    k = a["kind"]
    q = shlex.quote
    if k == "sysctl":
        return [f"sysctl -w {q(a['key'] + '=' + a['value'])}"]
    if k == "mkdir":
        return [f"mkdir -p {q(a['path'])} && chmod {a['mode']} {q(a['path'])}"]
    if k == "file":
        return [write_lines_cmd(a["path"], *a["content"].splitlines())]
    if k == "dropin":
        return [f"mkdir -p {q(a['path'].rsplit('/', 1)[0])}", write_lines_cmd(a["path"], *a["content"].splitlines()),
                f"{a['after']}   # applies from the next start"]
    if k == "prlimit":
        soft, hard = a["value"]
        return [f"prlimit --pid {a['pid']} --{a['resource']}={_lim(soft)}:{_lim(hard)}"]
    if k == "restart":
        return [a["command"]]
    if k in ("manual", "daemon-option"):
        return list(a.get("commands") or [])
    if k == "config-line":
        return [f"# {a['text'].split('   # ', 1)[-1]}: {a['line']}   (coredoctor fix --apply --daemon does it)"]
    raise ValueError(f"unknown action kind {k!r}")


def public_fix(f: Fix) -> Fix:
    """A fix as ``check`` shows it (``fixes[]`` of coredoctor.check/1)."""
    return {"summary": f["summary"], "commands": [c for a in f["actions"] for c in commands(a)],
            "needs_restart": f["needs_restart"], "actions": f["actions"]}


# --------------------------------------------------------------------------- merging


def identity(a: Action) -> tuple:
    """Two records with one identity change the same thing (one of them is enough)."""
    k = a["kind"]
    if k == "sysctl":
        return (k, a["key"])
    if k in ("mkdir", "file", "dropin"):
        return (k, a["path"])
    if k == "prlimit":
        return (k, a["pid"], a["resource"])
    if k == "restart":
        return (k, a["pid"])
    if k == "config-line":
        return (k, a["path"], a["line"])
    return (k, a.get("text"), tuple(a.get("commands") or ()))


def order_key(a: Action) -> int:
    k = a["kind"]
    return _ORDER.get(f"sysctl:{a['key']}" if k == "sysctl" and f"sysctl:{a['key']}" in _ORDER else k, 10)


def settled(a: Action, facts: Dict[str, Any]) -> bool:
    """Is the state record *a* asks for already in place (so that doing it again changes nothing)?"""
    k = a["kind"]
    if k == "sysctl":
        return str((facts.get("sysctl") or {}).get(a["key"])) == a["value"]
    if k in ("file", "dropin"):
        return (facts.get("files") or {}).get(a["path"]) == a["content"]
    if k == "mkdir":
        return (facts.get("dirs") or {}).get(a["path"]) is True
    if k == "prlimit":
        lim = ((facts.get("limits") or {}).get(a["pid"]) or {}).get(a["resource"])
        return lim is not None and list(lim) == list(a["value"])
    return False


def merge(actions: Iterable[Action], facts: Optional[Dict[str, Any]] = None) -> List[Action]:
    """One list from the records of several fixes (or targets): one record per identity (the
    sysctl.d files' ``key = value`` lines are united), in the safe order, without what is
    already in place when *facts* are given."""
    out: List[Action] = []
    by_id: Dict[tuple, int] = {}
    for a in actions:
        ident = identity(a)
        if ident in by_id:
            i = by_id[ident]
            if a["kind"] == "file" and a["path"] == SYSCTL_FILE and out[i]["content"] != a["content"]:
                out[i] = dict(out[i], content=_sysctl_content(
                    {**persisted(out[i]["content"]), **persisted(a["content"])},
                    out[i]["content"].startswith(SYSCTL_HEADER + "\n")))
            continue
        by_id[ident] = len(out)
        out.append(a)
    if facts is not None:
        out = [a for a in out if not settled(a, facts)]
    return sorted(out, key=order_key)
