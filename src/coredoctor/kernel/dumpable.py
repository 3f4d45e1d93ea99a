"""
Dumpability
-----------
``SUID_DUMP_*`` (include/linux/sched/coredump.h), the dumpable bits of ``mm->flags``, the
``PIDFD_INFO_COREDUMP`` answer, the ``/proc/PID`` ownership rule (``task_dump_owner()`` in
fs/proc/base.c) and where a process's non-dumpability came from.

Callers of ``set_dumpable()`` in 3.10..6.19 (see kernel-coredump-path.md section 3):

- exec: ``begin_new_exec()`` (``setup_new_exec()`` before 5.9) -- ``suid_dumpable`` when the
  binary is set-id/has file caps (``commit_creds()`` of bprm->cred) or unreadable
  (``would_dump()``);
- ``commit_creds()`` in kernel/cred.c -- ``suid_dumpable`` when euid, egid, fsuid or fsgid
  change or permitted capabilities grow;
- ``prctl(PR_SET_DUMPABLE, 0|1)`` in kernel/sys.c;
- fork copies it (``mmf_init_legacy_flags()``).
"""

from typing import Any, Callable, Dict, Optional, Set, Tuple

#: a process as the snapshot records it
Proc = Dict[str, Any]

from coredoctor.kernel import namei

__all__ = ["SUID_DUMP_DISABLE", "SUID_DUMP_USER", "SUID_DUMP_ROOT", "MMF_DUMP_FILTER_BITS",
           "decode_mm_flags", "from_pidfd_coredump_mask", "from_proc_owner", "infer_cause",
           "describe_value"]

SUID_DUMP_DISABLE = 0
SUID_DUMP_USER = 1
SUID_DUMP_ROOT = 2

#: coredump_filter bits, stored in mm->flags from bit 2 (MMF_DUMP_FILTER_SHIFT) up
MMF_DUMP_FILTER_BITS = ("ANON_PRIVATE", "ANON_SHARED", "MAPPED_PRIVATE", "MAPPED_SHARED",
                        "ELF_HEADERS", "HUGETLB_PRIVATE", "HUGETLB_SHARED", "DAX_PRIVATE",
                        "DAX_SHARED")

#: include/uapi/linux/pidfd.h (6.16+): coredump_mask bits of struct pidfd_info
PIDFD_COREDUMPED = 1 << 0
PIDFD_COREDUMP_SKIP = 1 << 1
PIDFD_COREDUMP_USER = 1 << 2
PIDFD_COREDUMP_ROOT = 1 << 3

_NAMES = {0: "SUID_DUMP_DISABLE", 1: "SUID_DUMP_USER", 2: "SUID_DUMP_ROOT"}


def describe_value(v: Optional[int]) -> str:
    return _NAMES.get(v, "unknown") if v is not None else "unknown"


#: mm->flags is one unsigned long (word 0 of the mm_flags_t bitmap on 6.18+, include/linux/mm_types.h)
MM_FLAGS_BITS = 64
_MM_FLAGS_MAX_TEXT = 2 + 64  # "0x" + 16 hex digits, or 20 decimal digits: anything longer is not one


def parse_mm_flags(text: str) -> int:
    """An mm->flags value as crash/drgn print it: decimal or ``0x`` hex, ASCII digits only.

    ValueError (with a reason) for anything else: another base, Unicode digits, ``_``, a sign,
    or a value that does not fit the 64-bit word -- checked on the text before converting, so
    a value of thousands of digits never reaches ``int()`` (Python's int max-str-digits limit).
    """
    t = text.strip()
    if len(t) > _MM_FLAGS_MAX_TEXT:
        raise ValueError(f"too long for a {MM_FLAGS_BITS}-bit mm->flags word ({len(t)} characters)")
    if t[:2].lower() == "0x":
        digits, base, allowed = t[2:], 16, "0123456789abcdefABCDEF"
    else:
        digits, base, allowed = t, 10, "0123456789"
    if t.startswith("-"):
        raise ValueError("mm->flags is never negative")
    if not digits or any(c not in allowed for c in digits):
        raise ValueError("not a number (decimal, or hex with 0x)")
    v = int(digits, base)
    if v >> MM_FLAGS_BITS:
        raise ValueError(f"{t} does not fit the {MM_FLAGS_BITS}-bit mm->flags word")
    return v


def decode_mm_flags(value: int) -> dict:
    """Decode the generic low bits (0..10) of ``mm->flags`` (word 0 of mm_flags_t on 6.18+).

    Bits 0-1 are the dumpable value; bits 2-10 the coredump_filter. Upper bits differ between
    kernel versions and are not decoded. In 3.10 ``set_dumpable(SUID_DUMP_ROOT)`` set both low
    bits (raw 3), which ``__get_dumpable()`` reads as 2.
    """
    value = int(value)
    if value < 0 or value >> MM_FLAGS_BITS:
        raise ValueError(f"mm->flags is an unsigned {MM_FLAGS_BITS}-bit word")
    raw = value & 3
    dumpable = 2 if raw == 3 else raw
    filt = (value >> 2) & 0x1FF
    return {
        "value": value,
        "hex": hex(value),
        "dumpable_raw": raw,
        "dumpable": dumpable,
        "dumpable_name": describe_value(dumpable),
        "coredump_filter": f"{filt:08x}",
        "coredump_filter_bits": [n for i, n in enumerate(MMF_DUMP_FILTER_BITS) if filt >> i & 1],
        "upper_bits": hex(value >> 16 << 16) if value >> 16 else "0x0",
    }


def from_pidfd_coredump_mask(mask: int) -> Optional[int]:
    """PIDFD_INFO_COREDUMP answer -> dumpable value, or None if the kernel said nothing."""
    if mask & PIDFD_COREDUMP_USER:
        return SUID_DUMP_USER
    if mask & PIDFD_COREDUMP_ROOT:
        return SUID_DUMP_ROOT
    if mask & PIDFD_COREDUMP_SKIP:
        return SUID_DUMP_DISABLE
    return None


def from_proc_owner(owner_uid: int, owner_gid: int, euid: int, egid: int,
                    userns_root_uid: int = 0) -> Tuple[Set[int], str]:
    """What the ownership of ``/proc/PID/status`` tells about dumpability.

    ``task_dump_owner()``: when dumpable != SUID_DUMP_USER, entries that are not 0555 dirs are
    owned by root of mm->user_ns; otherwise by the task's euid/egid. Returns
    ``(candidates, evidence)`` where candidates is the set of dumpable values that fit.
    """
    if owner_uid == euid and owner_gid == egid:
        if euid == userns_root_uid and egid == userns_root_uid:
            return ({0, 1, 2}, f"/proc/PID/status is owned by {owner_uid}:{owner_gid}, which is both "
                    "the process's euid:egid and root: ownership cannot tell dumpable 0, 1 or 2 apart")
        return ({1}, f"/proc/PID/status is owned by the process's euid:egid {euid}:{egid} "
                "(task_dump_owner(): dumpable == 1)")
    if owner_uid == userns_root_uid:
        return ({0, 2}, f"/proc/PID/status is owned by {owner_uid}:{owner_gid} although the process "
                f"runs as {euid}:{egid} (task_dump_owner(): dumpable != 1); ownership cannot tell 0 from 2")
    return ({0, 1, 2}, f"/proc/PID/status is owned by {owner_uid}:{owner_gid}, which matches neither "
            f"the process ({euid}:{egid}) nor root")


def infer_cause(proc: Proc, parent_of: Optional[Callable[[Proc], Optional[Proc]]],
                suid_dumpable_now: Optional[int], value: Optional[int], _depth: int = 0,
                names: Optional["Names"] = None) -> Dict[str, Any]:
    """Why is the process's dumpable value what it is?

    *parent_of(proc)* returns the parent's snapshot entry or None. Returns a dict:
    ``cause`` (``privilege-change``, ``prctl``, ``exec``, ``inherited``, ``unknown``, or None
    when the process is dumpable=1), ``evidence``, ``origin`` (pid where it happened), ``from``
    and ``to`` (user:group names around a privilege change) and ``via`` (the pids it was
    inherited through). *names*: ``(users, groups, depth)`` -- id (text) -> name maps of an
    nspawn machine's own /etc/passwd and /etc/group (the snapshot's ``units`` section), for the
    processes at that pid-namespace *depth* (the host's names mean other users there). Only evidence the kernel shows is used: the real/effective/saved/fs
    ids, capabilities, the executable's set-id bits and file capabilities, and the parent's
    credentials and dumpability. Dumpability lives in the mm and fork copies it, so a chain
    of non-dumpable ancestors with the same credentials is followed to where it began.
    """
    if value == SUID_DUMP_USER:
        return _cause(None, "dumpable=1 (SUID_DUMP_USER): the default", proc)
    c = proc["creds"]
    uids, gids = c["uid"], c["gid"]
    exe = proc.get("exe_stat") or {}
    name = _ids_name(c, names, proc)
    parent = parent_of(proc) if parent_of else None
    pcreds = (parent or {}).get("creds")
    # 1. set-id or file-capability executable: begin_new_exec() -> commit_creds(bprm->cred)
    if exe.get("setuid") or exe.get("setgid") or exe.get("fcaps"):
        bits = [b for b in ("setuid", "setgid", "fcaps") if exe.get(b)]
        return _cause("exec", f"its executable {proc.get('exe')} is {'/'.join(bits)}: exec changed its "
                      "credentials (begin_new_exec(), commit_creds()) and set dumpable to fs.suid_dumpable",
                      proc, frm=_ids_name(pcreds, names, parent) if pcreds else None, to=name)
    # 2. mixed ids: some set*id() changed effective/fs ids
    if len(set(uids)) > 1 or len(set(gids)) > 1:
        return _cause("privilege-change", f"its ids are mixed (uid r/e/s/fs {'/'.join(map(str, uids))}, gid "
                      f"{'/'.join(map(str, gids))}): a set*id() call changed its effective or fs ids "
                      "(commit_creds())", proc, frm=_ids_name(pcreds, names, parent) if pcreds else None, to=name)
    if parent is not None and pcreds is not None:  # (pcreds is only set from a parent)
        pu, pg = pcreds["uid"], pcreds["gid"]
        pdump = (parent.get("dumpable") or {}).get("candidates")
        if (pu[1], pg[1]) != (uids[1], gids[1]):
            return _cause("privilege-change",
                          f"it runs as {name} while its parent {parent.get('comm')} (pid {parent['pid']}) runs as "
                          f"{_ids_name(pcreds, names, parent)}: it switched credentials after fork (set*id() -> commit_creds() "
                          f"set dumpable to fs.suid_dumpable, now {suid_dumpable_now})",
                          proc, frm=_ids_name(pcreds, names, parent), to=name)
        if pdump is not None and SUID_DUMP_USER not in pdump and _depth < 16:
            up = infer_cause(parent, parent_of, suid_dumpable_now,
                             (parent.get("dumpable") or {}).get("value"), _depth + 1, names)
            via = [parent["pid"]] + up["via"]
            if up["cause"] in ("privilege-change", "prctl", "exec"):
                r = _cause(up["cause"], f"inherited at fork from {parent.get('comm')} (pid {parent['pid']}), "
                           f"which has the same credentials and is not dumpable either; there: {up['evidence']}",
                           proc, frm=up["from"], to=up["to"])
                r.update(origin=up["origin"], via=via, origin_comm=up["origin_comm"])
                return r
            r = _cause("inherited", f"its parent {parent.get('comm')} (pid {parent['pid']}) has the same "
                       "credentials and is not dumpable either: fork copies the flag", proc)
            r["via"] = via
            return r
        if pdump is not None and list(pdump) == [SUID_DUMP_USER] and value in (SUID_DUMP_DISABLE, None):
            if exe.get("mode") is not None and not namei.may_access(
                    exe, {"fsuid": uids[3], "fsgid": gids[3], "groups": c.get("groups", []),
                          "cap_eff": c.get("cap_eff", "0")}, namei.MAY_READ):
                return _cause("unknown", f"its executable {proc.get('exe')} is not readable by it: would_dump() "
                              "(fs/exec.c) can make exec set dumpable to fs.suid_dumpable -- though some kernels "
                              "(6.18 here) leave it dumpable -- or it called prctl(PR_SET_DUMPABLE, 0)", proc)
            return _cause("prctl", f"same credentials as its dumpable parent {parent.get('comm')} "
                          f"(pid {parent['pid']}) and no set-id executable: it most likely called "
                          "prctl(PR_SET_DUMPABLE, 0) itself", proc)
    if uids[1] != 0 and int(c.get("cap_prm", "0") or "0", 16):
        return _cause("privilege-change", f"it runs as {name} yet keeps permitted capabilities "
                      f"(CapPrm {c.get('cap_prm')}): it started as root and dropped to this user keeping "
                      "capabilities", proc, frm=None, to=name)
    return _cause("unknown", "no evidence of a credential change, a set-id exec or prctl was found", proc)


def _cause(cause: Optional[str], evidence: str, proc: Proc, frm: Optional[str] = None,
           to: Optional[str] = None) -> Dict[str, Any]:
    return {"cause": cause, "evidence": evidence, "origin": proc["pid"] if cause else None,
            "origin_comm": proc.get("comm"), "from": frm, "to": to, "via": []}


#: an nspawn machine's own user and group names: (users, groups, pid-namespace depth)
Names = Tuple[Dict[str, str], Dict[str, str], int]


def _ids_name(c: Dict[str, Any], names: Optional[Names] = None, proc: Optional[Proc] = None) -> str:
    """``user:group`` of credentials *c*: the names of *proc*'s machine when it is in one
    (*names*), else the host's (the snapshot's ``user``/``group``), else the numbers."""
    uid, gid = str(c["uid"][1]), str(c["gid"][1])
    if names is not None and proc is not None and len(proc.get("nspid") or [1]) == names[2]:
        return f"{names[0].get(uid) or uid}:{names[1].get(gid) or gid}"
    u = c.get("user") or uid
    g = c.get("group") or gid
    return f"{u}:{g}"
