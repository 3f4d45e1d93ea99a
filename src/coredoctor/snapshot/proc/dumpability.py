"""
Dumpability, as the kernel tells it
-----------------------------------
The one chain every reader uses for a process's dumpable flag, most exact first:

1. ``PIDFD_INFO_COREDUMP`` (6.16+, feature-detected by :func:`pidfd.probe`): the kernel's own
   answer (:func:`from_pidfd`).
2. The ownership of ``/proc/PID/status`` (``task_dump_owner()``, fs/proc/base.c): exact unless
   the process's euid:egid is the owner anyway (:func:`from_owner`).
3. For root:root processes only, where a refusal can mean nothing but ``dumpable != 1``, the
   ptrace access probe (:mod:`.ptrace`; :func:`ptrace_eligible` is the one rule,
   :func:`by_ptrace` asks for many processes in one forked probe).

Each answer is ``{"value": 0|1|2|None, "candidates": [...], "source": "pidfd"|"proc-owner"|
"ptrace-access"|"unknown", "evidence": str}``.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from coredoctor.errors import Error, ProcessGone
from coredoctor.kernel import dumpable as d
from coredoctor.snapshot.proc import base, pidfd

__all__ = ["from_pidfd", "from_owner", "ptrace_eligible", "by_ptrace", "disabled_features", "self_facts"]

if TYPE_CHECKING:
    Dumpable = Dict[str, Any]


def disabled_features() -> set:
    """Feature probes switched off for a run (``COREDOCTOR_DISABLE=pidfd,ptrace``)."""
    v = os.environ.get("COREDOCTOR_DISABLE", "")
    return {x.strip() for x in v.split(",") if x.strip()}


def from_pidfd(pid: int, pfd: Optional[int] = None, comm: Optional[str] = None) -> Optional[Dumpable]:
    """The kernel's exact answer, or None where PIDFD_INFO_COREDUMP says nothing. A pidfd held
    since before an exec was seen to answer coredump_mask=0 on 6.18 while a fresh one answers:
    a held *pfd* that says nothing is followed by a fresh one. ProcessGone when it exited."""
    info = None
    try:
        for fd in ((pfd, None) if pfd is not None else (None,)):
            info = pidfd.coredump_info(pid, fd)
            if info is not None:
                break
    except ProcessLookupError as e:
        raise ProcessGone(pid, comm) from e
    except OSError:
        info = None
    if info is None:
        return None
    v = d.from_pidfd_coredump_mask(info[0])
    if v is None:
        return None
    return {"value": v, "candidates": [v], "source": "pidfd",
            "evidence": f"pidfd PIDFD_INFO_COREDUMP coredump_mask={info[0]:#x} ({d.describe_value(v)})"}


def from_owner(owner: Sequence[int], euid: int, egid: int) -> Dumpable:
    """What the owner of ``/proc/PID/status`` tells (``task_dump_owner()``)."""
    found, ev = d.from_proc_owner(owner[0], owner[1], euid, egid)
    cands = sorted(found)
    if len(cands) == 1:
        return {"value": cands[0], "candidates": cands, "source": "proc-owner", "evidence": ev}
    if len(cands) == 2:
        return {"value": None, "candidates": cands, "source": "proc-owner", "evidence": ev}
    return {"value": None, "candidates": cands, "source": "unknown", "evidence": ev}


def self_facts(root: Optional[str] = None) -> Tuple[Optional[int], Optional[str]]:
    """The probe's own permitted capabilities and user namespace (the probe is a fork of us)."""
    r = root or base.root()
    try:
        cap = int(base.parse_status(base.read(os.getpid(), "status", base=r)).get("CapPrm") or "0", 16)
    except (OSError, ValueError, Error):
        cap = None
    try:
        ns = os.readlink(f"{r}/self/ns/user")
    except OSError:
        ns = None
    return cap, ns


def ptrace_eligible(uid: Sequence[int], gid: Sequence[int], cap_prm: int, my_cap_prm: Optional[int],
                    same_userns: Optional[bool]) -> bool:
    """Only where a refusal can mean nothing but ``dumpable != 1``: real/effective/saved ids all 0
    (the probe's own), the probe's user namespace, and permitted capabilities within the probe's
    (``cap_ptrace_access_check()``, security/commoncap.c: the subset test on the permitted set)."""
    if set(uid[:3]) != {0} or set(gid[:3]) != {0}:
        return False
    if my_cap_prm is None or cap_prm & ~my_cap_prm:
        return False
    return same_userns is True


_YES = {"value": 1, "candidates": [1], "source": "ptrace-access",
        "evidence": "a root probe without CAP_SYS_PTRACE may access it (__ptrace_may_access(): dumpable == 1)"}
_NO = {"value": None, "candidates": [0, 2], "source": "ptrace-access",
       "evidence": "a root probe without CAP_SYS_PTRACE is refused (__ptrace_may_access(): dumpable != 1); "
                   "0 and 2 look alike"}


def by_ptrace(candidates: Iterable[Tuple[int, Sequence[int], Sequence[int], int, Optional[bool]]],
              root: Optional[str] = None) -> Dict[int, Dumpable]:
    """``{pid: answer}`` for the eligible ones of *candidates* ``(pid, uid, gid, cap_prm,
    same_userns)`` (same_userns None: read it now), in one forked probe. Empty when the probe
    is switched off (``COREDOCTOR_DISABLE=ptrace``) or cannot run here."""
    if "ptrace" in disabled_features():
        return {}
    r = root or base.root()
    mine, my_ns = self_facts(r)
    need: List[int] = []
    for pid, uid, gid, cap, same in candidates:
        if same is None:
            try:
                same = my_ns is not None and os.readlink(f"{r}/{pid}/ns/user") == my_ns
            except OSError:
                same = None
        if ptrace_eligible(uid, gid, cap, mine, same):
            need.append(pid)
    if not need:
        return {}
    from coredoctor.snapshot.proc import ptrace
    res = ptrace.probe_root_dumpable(need)
    out = {}
    for pid in need:
        if res.get(pid) is True:
            out[pid] = dict(_YES, candidates=[1])
        elif res.get(pid) is False:
            out[pid] = dict(_NO, candidates=[0, 2])
    return out
