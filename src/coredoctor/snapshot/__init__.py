"""
Snapshots
---------
The only layer that touches the system. :func:`take` reads everything the gate model needs
into plain, JSON-serializable data (schema ``coredoctor.snapshot/1``); :func:`load` reads one
back for ``check --from``. Feature probes that answered (or were switched off with
``COREDOCTOR_DISABLE=pidfd,ptrace``) are recorded in ``kernel.features``.
"""

import json
import os
import time

from typing import Any, Dict, Iterable, Optional, TextIO, Tuple

from coredoctor import runtimes
from coredoctor.errors import AccessDenied, KernelThread, NoSuchProcess, SnapshotError
from coredoctor.kernel import core_pattern, gates
from coredoctor.kernel.signal import FAULT_SIGNALS
from coredoctor.snapshot import containers, ctspec, daemonconf, fs, handlers, mounts, own, proc as procmod, sysctl, units
from coredoctor.snapshot.proc import batch, dumpability

__all__ = ["take", "load", "dump", "SCHEMA", "disabled_features"]

SCHEMA = "coredoctor.snapshot/1"


disabled_features = dumpability.disabled_features


def take(pids: Optional[Iterable[int]] = None, signal: str = "SIGSEGV", strict: bool = True,
         with_parents: bool = True) -> Dict[str, Any]:
    """Snapshot the system and the processes *pids* (all processes when None).

    With *strict*, a named pid that is missing or vanishes raises; otherwise it is skipped and
    counted in ``skipped``.
    """
    disabled = disabled_features()
    kernel = sysctl.read_kernel(disabled)
    sysctls = sysctl.read_sysctls()
    use_pidfd = kernel["features"]["pidfd_coredump"]
    parsed = core_pattern.parse(sysctls.get("kernel.core_pattern") or "",
                                kernel["features"].get("socket_pattern", False))
    wants = procmod.Wants(parsed)
    all_mode = pids is None
    wanted = procmod.list_pids() if pids is None else list(pids)
    # the one place a snapshot decides about the reader's errors: a named target that is
    # missing raises (strict); otherwise it is skipped and counted (gone, no_mm, denied)
    if strict and not all_mode:
        procs = {pid: procmod.read_process(pid, use_pidfd, wants) for pid in wanted}
        skipped = {"gone": 0, "no_mm": 0, "denied": 0}
    else:
        procs, skipped = batch.read_many(wanted, lambda pid: procmod.read_process(pid, use_pidfd, wants))
    targets = sorted(procs)
    if with_parents and not all_mode:
        # the ancestor chain: where a non-dumpable flag was inherited from
        for pid in list(targets):
            pp = procs[pid]["ppid"]
            while pp and pp not in procs:
                try:
                    parent = procmod.read_process(pp, use_pidfd, wants)
                except (NoSuchProcess, KernelThread, AccessDenied):
                    break
                procs[pp] = parent
                pp = parent["ppid"]
    _ptrace_fallback(procs, kernel)
    ccache: Dict[str, Any] = {}  # the runtime's state, read once per container
    for p in procs.values():
        if (len(p.get("nspid") or []) > 1 or p.get("userns_is_host") is False) and procmod.base.root() == "/proc":
            # an nspawn machine no machined registered, a container whose cgroup names none (rootless
            # podman): known by its leader or its conmon (containers.NSPAWN_LEADER, CONMON)
            p["container"] = containers.add_monitor(p.get("container"), p["pid"], p.get("cgroup"), ccache)
        containers.complete(p.get("container"), cache=ccache)
    snap = {"schema": SCHEMA, "taken_at": time.time(), "kernel": kernel, "sysctl": sysctls,
            "targets": targets, "skipped": skipped, "processes": [procs[p] for p in sorted(procs)]}
    snap["handler"] = handlers.read_handler(parsed)
    snap["own_files"], snap["own_dirs"] = own.read(procs[p].get("unit") for p in targets)
    snap["units"] = units.read(procs, targets)
    snap["limits_conf"] = units.read_limits()
    snap["daemons"] = daemonconf.read([procs[p] for p in targets], procs)
    snap["mounts"] = mounts.read(procs[p] for p in targets)  # where a core lands on the host
    snap["runtime_defaults"] = ctspec.read((procs[p] for p in targets), apport=parsed["kind"] == "pipe" and
                                           str(parsed.get("helper")).endswith("/apport"))  # what the runtime set
    if parsed["kind"] == "pipe" and any(procs[p].get("container") for p in targets):
        snap["container_handler"] = ctspec.handler_facts(parsed.get("helper"))
    snap["paths"] = {}
    signo = kernel["signals"].get(signal, 11)
    if parsed["kind"] == "file":
        files: Dict[Tuple[Any, str], Dict[str, Any]] = {}
        how = "fault" if signal in FAULT_SIGNALS else "kill"
        # a pattern without specifiers (and no .PID appended) names the same directory and file
        # for every process with the same root/cwd: its views are worked out once per directory
        static: Optional[Dict[Any, Any]] = {} if "%" not in parsed["pattern"] and not (
            sysctls.get("kernel.core_uses_pid") and not parsed.get("has_pid")) else None
        for pid in targets:
            # the signal of the core: a runtime may re-raise another one (coredoctor.runtimes)
            sig = runtimes.core_signal(procs[pid].get("runtime"), signal, how)
            _destination_facts(snap, procs[pid], kernel["signals"].get(sig, signo), files, static)
    return snap


def _ptrace_fallback(procs: Dict[int, Dict[str, Any]], kernel: Dict[str, Any]) -> None:
    """Refine root:root processes whose /proc ownership cannot tell (no pidfd query), in one
    forked probe for all of them (:func:`dumpability.by_ptrace`: the one eligibility rule)."""
    if not kernel["features"].get("ptrace_probe"):
        return
    cands = [(p["pid"], p["creds"]["uid"], p["creds"]["gid"], int(p["creds"].get("cap_prm") or "0", 16),
              p.get("userns_is_host"))
             for p in procs.values() if p["dumpable"]["source"] == "unknown"]
    for pid, ans in dumpability.by_ptrace(cands).items():
        procs[pid]["dumpable"] = ans


def _destination_facts(snap: Dict[str, Any], proc: Dict[str, Any], signo: int,
                       files: Optional[Dict[Tuple[Any, str], Dict[str, Any]]] = None,
                       static: Optional[Dict[Any, Any]] = None) -> None:
    """*files* caches the existing-file facts per (directory key, name) for one snapshot: the
    processes that share a directory (most share a cwd of ``/``) share its ``lstat``. *static*
    (a pattern without specifiers: the view depends on the dumpable value and the root or cwd
    only) caches the views by those: a view found there has its directory walked already."""
    dest = {}
    files = {} if files is None else files
    # both views whatever the flag is now: where a dumpable=2 fix would send the core (check's
    # follow-on fixes), and where it goes after the process changes its flag (trace predicts on
    # this reading with the flag it followed since: a drop under suid_dumpable=2 moves the open
    # to the host's root)
    for v in (1, 2):
        if static is not None:
            skey = (v, proc.get("root_id"), proc.get("cwd_id"))
            if skey not in static:
                static[skey] = gates.destination_views(snap, proc, signo, v)
            view = static[skey]
        else:
            view = gates.destination_views(snap, proc, signo, v)
        if view is None or view[2] is None:
            continue
        key, base, d, base_parts = view
        if key not in snap["paths"]:
            snap["paths"][key] = fs.walk_dir(base, d, root=f"/proc/{proc['pid']}/root", cwd_path=proc.get("cwd"))
        facts = snap["paths"][key]
        entry = {"key": key}
        if facts.get("exists") and all(p is not None for p in base_parts):
            name = "".join(base_parts)
            if (key, name) not in files:
                files[(key, name)] = fs.file_facts(facts["host_path"], name)
            entry["file"] = dict(files[(key, name)])
        dest[str(v)] = entry
    proc["dest"] = dest


def dump(snap: Dict[str, Any], fp: TextIO) -> None:
    json.dump(snap, fp, indent=1, sort_keys=False)
    fp.write("\n")


def load(path: str) -> Dict[str, Any]:
    """Read a snapshot file (``-`` for stdin); SnapshotError on anything that is not one
    (bounded and validated completely: see :mod:`coredoctor.snapshot.validate`)."""
    from coredoctor.snapshot import validate
    return validate.load(path)
