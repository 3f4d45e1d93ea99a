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

from coredoctor.errors import AccessDenied, NoSuchProcess, SnapshotError
from coredoctor.kernel import core_pattern, gates
from coredoctor.snapshot import fs, handlers, proc as procmod, ptrace, sysctl

__all__ = ["take", "load", "dump", "SCHEMA", "disabled_features"]

SCHEMA = "coredoctor.snapshot/1"


def disabled_features():
    v = os.environ.get("COREDOCTOR_DISABLE", "")
    return {x.strip() for x in v.split(",") if x.strip()}


def take(pids=None, signal="SIGSEGV", strict=True, with_parents=True):
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
    wanted = procmod.list_pids() if all_mode else list(pids)
    procs = {}
    skipped = {"gone": 0, "no_mm": 0, "denied": 0}
    for pid in wanted:
        try:
            p = procmod.read_process(pid, use_pidfd, wants)
        except (NoSuchProcess, AccessDenied) as e:  # NoSuchProcess includes ProcessGone
            if strict and not all_mode:
                raise
            skipped["denied" if isinstance(e, AccessDenied) else "gone"] += 1
            continue
        if p is None:
            if strict and not all_mode:
                raise NoSuchProcess(pid, f"pid {pid} has no user memory (a kernel thread or a zombie): "
                                         "nothing to dump")
            skipped["no_mm"] += 1
            continue
        procs[pid] = p
    targets = sorted(procs)
    if with_parents and not all_mode:
        # the ancestor chain: where a non-dumpable flag was inherited from
        for pid in list(targets):
            pp = procs[pid]["ppid"]
            while pp and pp not in procs:
                try:
                    parent = procmod.read_process(pp, use_pidfd, wants)
                except (NoSuchProcess, AccessDenied):
                    parent = None
                if not parent:
                    break
                procs[pp] = parent
                pp = parent["ppid"]
    _ptrace_fallback(procs, kernel)
    snap = {"schema": SCHEMA, "taken_at": time.time(), "kernel": kernel, "sysctl": sysctls,
            "targets": targets, "skipped": skipped, "processes": [procs[p] for p in sorted(procs)]}
    snap["handler"] = handlers.read_handler(parsed)
    snap["paths"] = {}
    signo = kernel["signals"].get(signal, 11)
    if parsed["kind"] == "file":
        for pid in targets:
            _destination_facts(snap, procs[pid], signo)
    return snap


def _ptrace_fallback(procs, kernel):
    """Refine root:root processes whose /proc ownership cannot tell (no pidfd query)."""
    if not kernel["features"].get("ptrace_probe"):
        return
    # only where a refusal can mean nothing but dumpable != 1: same ids as the probe (all 0),
    # the same user namespace, and permitted capabilities within the probe's own
    # (cap_ptrace_access_check(), security/commoncap.c)
    try:
        mine = int(procmod.parse_status(procmod.read_text("/proc/self/status")).get("CapPrm") or "0", 16)
    except OSError:
        return
    try:
        my_userns = os.readlink("/proc/self/ns/user")
    except OSError:
        my_userns = None
    need = []
    for p in procs.values():
        if p["dumpable"]["source"] != "unknown" or set(p["creds"]["uid"][:3]) != {0} \
                or set(p["creds"]["gid"][:3]) != {0}:
            continue
        if int(p["creds"].get("cap_prm") or "0", 16) & ~mine:
            continue
        try:
            if my_userns is None or os.readlink(f"/proc/{p['pid']}/ns/user") != my_userns:
                continue
        except OSError:
            continue
        need.append(p)
    if not need:
        return
    res = ptrace.probe_root_dumpable([p["pid"] for p in need])
    for p in need:
        r = res.get(p["pid"])
        if r is True:
            p["dumpable"] = {"value": 1, "candidates": [1], "source": "ptrace-access",
                             "evidence": "a root probe without CAP_SYS_PTRACE may access it "
                                         "(__ptrace_may_access(): dumpable == 1)"}
        elif r is False:
            p["dumpable"] = {"value": None, "candidates": [0, 2], "source": "ptrace-access",
                             "evidence": "a root probe without CAP_SYS_PTRACE is refused "
                                         "(__ptrace_may_access(): dumpable != 1); 0 and 2 look alike"}


def _destination_facts(snap, proc, signo):
    dest = {}
    # both views whatever the flag is now: where a dumpable=2 fix would send the core (check's
    # follow-on fixes), and where it goes after the process changes its flag (trace predicts on
    # this reading with the flag it followed since: a drop under suid_dumpable=2 moves the open
    # to the host's root)
    for v in (1, 2):
        view = gates.destination_views(snap, proc, signo, v)
        if view is None or view[2] is None:
            continue
        key, base, d, base_parts = view
        if key not in snap["paths"]:
            snap["paths"][key] = fs.walk_dir(base, d, root=f"/proc/{proc['pid']}/root", cwd_path=proc.get("cwd"))
        facts = snap["paths"][key]
        entry = {"key": key}
        if facts.get("exists") and all(p is not None for p in base_parts):
            entry["file"] = fs.file_facts(facts["host_path"], "".join(base_parts))
        dest[str(v)] = entry
    proc["dest"] = dest


def dump(snap, fp):
    json.dump(snap, fp, indent=1, sort_keys=False)
    fp.write("\n")


def load(path):
    """Read a snapshot file (``-`` for stdin); SnapshotError on anything that is not one
    (bounded and validated completely: see :mod:`coredoctor.snapshot.validate`)."""
    from coredoctor.snapshot import validate
    return validate.load(path)
