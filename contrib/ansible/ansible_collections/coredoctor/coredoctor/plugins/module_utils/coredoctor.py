# -*- coding: utf-8 -*-
# MIT License (see the coredoctor repository's pyproject.toml)
"""What the coredoctor modules share: the command line they run on the managed host, running it
and reading its JSON (failing the task with coredoctor's one line), the container filter for a
coredoctor older than ``check --container``, the fleet summary of a check document and the diff
of a fix plan. Standard library only (no import of ansible here: the functions that run
coredoctor take the AnsibleModule as an argument), so that it is tested without Ansible
(tests/unit/test_ansible_utils.py) and runs on any managed host's Python 3.
"""

from __future__ import absolute_import, division, print_function

import json
import os
import re

__metaclass__ = type

#: coredoctor's exit codes the modules tell apart (src/coredoctor/cli.py, errors.py)
EXIT_OK = 0
EXIT_CHECK_NO_CORE = 1    # check: at least one target would not dump (not an error)
EXIT_USAGE = 2            # bad usage, no such target, a refused plan, a fix already rolled back
EXIT_INTERNAL = 70

#: the live files behind the sysctls a fix writes (coredoctor/fix/actions.py _SYSCTL_PATH)
SYSCTL_PATH = {"kernel.core_pattern": "/proc/sys/kernel/core_pattern",
               "fs.suid_dumpable": "/proc/sys/fs/suid_dumpable"}

#: a container id in a cgroup path: podman (libpod-ID, with .scope under systemd, without under
#: cgroupfs), docker (docker-ID.scope, /docker/ID), containerd (cri-containerd-ID), CRI-O (crio-ID)
_CONTAINER_ID = re.compile(r"(?:^|/)(?:libpod-|docker-|docker/|cri-containerd-|crio-)([0-9a-f]{64})(?:\.scope)?(?:/|$)")


def base_command(coredoctor, python):
    """The argv prefix that runs coredoctor: a zipapp (``*.pyz``) through *python* (the managed
    host's interpreter, the one running the module), anything else as the program it is."""
    if coredoctor.endswith(".pyz"):
        return [python, coredoctor]
    return [coredoctor]


def _selectors(targets, pids, signal, how):
    argv = []
    for p in pids or []:
        argv += ["--pid", str(int(p))]
    for t in targets or []:
        t = str(t)
        if not t or t.startswith("-"):
            raise ValueError("not a target: %r (a process name, a pid or a unit)" % (t,))
        argv.append(t)
    if signal:
        argv += ["--signal", str(signal)]
    if how:
        argv += ["--how", str(how)]
    return argv


def check_argv(targets=None, pids=None, units=None, signal=None, how=None, containers=None):
    """``check --json`` with the selectors; ``--all`` when nothing is selected (units are target
    words ending in .service and the other unit suffixes; *containers* are ``--container``
    words, a container's name, id or id prefix, every process of each)."""
    words = list(targets or []) + list(units or [])
    for u in units or []:
        if "." not in str(u):
            raise ValueError("not a unit: %r (NAME.service, .scope, .socket or .mount)" % (u,))
    sel = []
    for c in containers or []:
        c = str(c)
        if not c or c.startswith("-"):
            raise ValueError("not a container: %r (a container's name, id or id prefix)" % (c,))
        sel += ["--container", c]
    sel += _selectors(words, pids, signal, how)
    if not words and not pids and not containers:
        sel = ["--all"] + sel
    return ["check", "--json"] + sel


def unknown_option(rc, stderr, option):
    """Did coredoctor refuse *option* as one it does not have (an older coredoctor: argparse's
    ``unrecognized arguments: ...`` with exit 2)?"""
    last = [ln for ln in (stderr or "").splitlines() if ln.strip()][-1:]
    return rc == EXIT_USAGE and bool(last) and "unrecognized arguments:" in last[0] and \
        option in last[0].split("unrecognized arguments:", 1)[1].split()


def fix_argv(targets=None, pids=None, signal=None, how=None, apply=False):
    """``fix --json`` for the selected targets (fix takes no --all), with ``--apply`` to make it."""
    if not targets and not pids:
        raise ValueError("coredoctor_fix needs a target: target (names, pids, units) or pid")
    return ["fix", "--json"] + (["--apply"] if apply else []) + _selectors(targets, pids, signal, how)


def parse_json(stdout, schema):
    """The one JSON document coredoctor printed, checked to be *schema*."""
    try:
        doc = json.loads(stdout)
    except ValueError as e:
        raise ValueError("coredoctor printed no JSON (%s): %r" % (e, stdout[:200]))
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        raise ValueError("coredoctor printed a document that is not %s" % schema)
    return doc


def applied_something(doc):
    """Did the apply of fix document *doc* change anything? An action that failed without
    undoing the fix is in ``errors`` (a live limit of another user's process, where root lacks
    CAP_SYS_RESOURCE); a fix whose every action failed changed nothing."""
    if not doc.get("applied"):
        return False
    return len(doc.get("actions") or []) > len(doc.get("errors") or [])


def error_line(rc, stderr):
    """coredoctor's one line on stderr, with its exit code."""
    lines = [ln for ln in (stderr or "").splitlines() if ln.strip()]
    return "coredoctor exited %d: %s" % (rc, lines[-1] if lines else "(nothing on stderr)")


def container_ids(cgroup_text):
    """The container ids (64 hex digits) a /proc/PID/cgroup text names."""
    out = []
    for line in (cgroup_text or "").splitlines():
        path = line.split(":", 2)[-1]
        for m in _CONTAINER_ID.finditer(path):
            if m.group(1) not in out:
                out.append(m.group(1))
    return out


def in_containers(ids, wanted):
    """Does a process whose cgroup names *ids* belong to one of *wanted* (id prefixes, at least
    12 hex digits as ``podman ps`` shows them)?"""
    for w in wanted:
        w = str(w).lower()
        if len(w) < 12 or not re.match(r"^[0-9a-f]+$", w):
            raise ValueError("not a container id: %r (at least 12 hex digits, as podman ps shows)" % (w,))
        if any(i.startswith(w) for i in ids):
            return True
    return False


def filter_containers(doc, wanted, read_cgroup):
    """Keep the targets of check document *doc* that run in one of the *wanted* containers;
    *read_cgroup(pid)* gives /proc/PID/cgroup's text (None when the process is gone)."""
    keep = []
    for t in doc.get("targets") or []:
        text = read_cgroup(t.get("pid"))
        if text is not None and in_containers(container_ids(text), wanted):
            keep.append(t)
    return dict(doc, targets=keep)


def summary(doc):
    """The fleet view of one host's check document: how many processes would leave a core, and
    who would not, by blocking gate: ``{"total", "core", "no_core", "undecided",
    "by_gate": {gate: [{"pid", "comm", "unit"}]}}``."""
    out = {"total": 0, "core": 0, "no_core": 0, "undecided": 0, "by_gate": {}}
    for t in doc.get("targets") or []:
        out["total"] += 1
        d = t.get("dumps")
        if d is True:
            out["core"] += 1
            continue
        out["no_core" if d is False else "undecided"] += 1
        gate = t.get("blocking_gate") or "unknown"
        out["by_gate"].setdefault(gate, []).append({"pid": t.get("pid"), "comm": t.get("comm"),
                                                    "unit": t.get("unit")})
    return out


def _text(v):
    return "" if v is None else (v if v.endswith("\n") else v + "\n")


def _limit(v):
    return "unlimited" if v is None or v < 0 else str(v)


def action_diff(a, read_text, read_limit):
    """Ansible's diff (before/after with headers) of one action of a coredoctor.fix/1 plan.
    *read_text(path)* gives a file's text now (None when it does not exist); *read_limit(pid,
    resource)* gives (soft, hard) now (None when unknown). None for an action it cannot show."""
    k = a.get("kind")
    if k == "sysctl":
        key = a.get("key")
        path = SYSCTL_PATH.get(key) or "/proc/sys/" + str(key).replace(".", "/")
        before = read_text(path)
        return {"before_header": "sysctl %s (%s)" % (key, path), "after_header": "sysctl %s (%s)" % (key, path),
                "before": _text(before.rstrip("\n") if before is not None else "(unknown)"),
                "after": _text(a.get("value"))}
    if k in ("file", "dropin"):
        before = read_text(a["path"])
        return {"before_header": a["path"] + ("" if before is not None else " (absent)"),
                "after_header": "%s (mode %s)" % (a["path"], a.get("mode") or "?"),
                "before": before or "", "after": a.get("content") or ""}
    if k == "mkdir":
        return {"before_header": a["path"], "after_header": a["path"],
                "before": {"path": a["path"], "state": "absent"},
                "after": {"path": a["path"], "state": "directory", "mode": a.get("mode")}}
    if k == "prlimit":
        res = a.get("resource") or "core"
        now = read_limit(a.get("pid"), res)
        soft, hard = (list(a.get("value") or []) + [None, None])[:2]
        header = "RLIMIT_%s of pid %s" % (res.upper(), a.get("pid"))
        return {"before_header": header, "after_header": header,
                "before": "(unknown)\n" if now is None else "%s:%s\n" % (_limit(now[0]), _limit(now[1])),
                "after": "%s:%s\n" % (_limit(soft), _limit(hard))}
    return None


def plan_diff(doc, read_text, read_limit):
    """The diff of every action of fix document *doc* (a list, in the plan's order)."""
    out = []
    for a in doc.get("actions") or []:
        d = action_diff(a, read_text, read_limit)
        if d is not None:
            out.append(d)
    return out


def read_text(path):
    """A file's text, or None when it does not exist (a directory or an unreadable file: None too)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return None


def read_limit(pid, res):
    """(soft, hard) of a process's limit from /proc/PID/limits (-1: unlimited), or None."""
    names = {"core": "Max core file size", "fsize": "Max file size"}
    text = read_text("/proc/%d/limits" % int(pid)) if pid is not None else None
    if text is None or res not in names:
        return None
    for line in text.splitlines():
        if line.startswith(names[res]):
            w = line[len(names[res]):].split()
            try:
                return tuple(-1 if x == "unlimited" else int(x) for x in w[:2])
            except ValueError:
                return None
    return None


def read_cgroup(pid):
    try:
        return read_text("/proc/%d/cgroup" % int(pid))
    except (TypeError, ValueError):
        return None


def coredoctor_command(module, python):
    """The argv prefix that runs the coredoctor the task names (option ``coredoctor``), else the
    one :func:`find_coredoctor` finds; fails the task when the host has none."""
    exe = module.params.get("coredoctor") or find_coredoctor(module.get_bin_path)
    if not exe:
        module.fail_json(msg="coredoctor is not installed on this host: install the .deb or copy "
                             "coredoctor.pyz there and name it with the coredoctor option", cmd=[])
    return base_command(exe, python)


def run(module, cmd):
    """(rc, stdout, stderr) of *cmd* on the managed host, in the C.UTF-8 locale."""
    return module.run_command(cmd, environ_update={"LC_ALL": "C.UTF-8"})


def json_result(module, cmd, schema, result, ok=(EXIT_OK,)):
    """The *schema* document of a finished run *result* (rc, stdout, stderr) of *cmd*; an exit
    code not in *ok*, or output that is not that document, fails the task with coredoctor's
    one line."""
    rc, out, err = result
    if rc not in ok:
        module.fail_json(msg=error_line(rc, err), rc=rc, cmd=cmd, stderr=err)
    try:
        return parse_json(out, schema)
    except ValueError as e:
        module.fail_json(msg=str(e), rc=rc, cmd=cmd, stderr=err)


def run_json(module, cmd, schema, ok=(EXIT_OK,)):
    """Run *cmd* and return its *schema* document (see :func:`json_result`)."""
    return json_result(module, cmd, schema, run(module, cmd), ok)


def find_coredoctor(which):
    """The coredoctor to run when the task names none: the program on PATH (the .deb installs
    /usr/bin/coredoctor), else the zipapp at its documented place."""
    p = which("coredoctor")
    if p:
        return p
    for z in ("/usr/local/lib/coredoctor/coredoctor.pyz", "/usr/local/bin/coredoctor.pyz"):
        if os.path.isfile(z):
            return z
    return None
