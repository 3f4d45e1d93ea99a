"""
Credentials
-----------
What the credential syscalls do to a task's ids, and when ``commit_creds()`` resets the
dumpable flag -- the pure rules ``coredoctor trace`` applies to what it watches.

A credential set here is plain data::

    {"uid": [ruid, euid, suid, fsuid], "gid": [rgid, egid, sgid, fsgid],
     "cap_prm": int, "cap_eff": int, "keep_caps": bool}

Every rule is a record in :data:`RULES` with its kernel citation; the functions below cite the
rule they apply by id. Kernel sources read: kernel/sys.c, kernel/cred.c, fs/exec.c,
security/commoncap.c, kernel/nsproxy.c (3.10 .. 6.18; the behaviour modelled here is the same
across that range except where a rule says otherwise).
"""

from typing import Any, Callable, Dict, List, Optional, Tuple

#: credentials as the kernel keeps them: uid/gid [real, effective, saved, fs], cap_prm, cap_eff, ...
Creds = Dict[str, Any]

__all__ = ["RULES", "CAP_SETGID", "CAP_SETUID", "INVALID_ID", "PR_SET_DUMPABLE", "PR_SET_KEEPCAPS",
           "CLONE_NEWUSER", "apply_syscall", "commit_creds", "prctl_set_dumpable", "exec_creds", "exec_dumpable",
           "normalize_id", "ids_name"]

CAP_SETGID = 6
CAP_SETUID = 7
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_KEEPCAPS = 8
CLONE_NEWUSER = 0x10000000
#: (uid_t)-1: "leave unchanged" for the set*id calls; make_kuid() turns it into INVALID_UID
INVALID_ID = 0xFFFFFFFF

#: The rules, as data: id -> (what, kernel function, file, versions)
RULES = {
    "commit_creds": {
        "what": "euid, egid, fsuid or fsgid changed, or the new permitted capabilities are not a subset "
                "of the old (cred_cap_issubset()): dumpable := fs.suid_dumpable at that moment",
        "kernel": "commit_creds()", "file": "kernel/cred.c", "versions": "2.6.29 .. 6.19"},
    "setuid": {
        "what": "with CAP_SETUID: r/s/e/fs := uid; without: only e/fs := uid, allowed when uid is the "
                "real or saved uid (else EPERM)",
        "kernel": "__sys_setuid()", "file": "kernel/sys.c", "versions": "3.10 .. 6.19"},
    "setgid": {
        "what": "with CAP_SETGID: r/s/e/fs := gid; without: only e/fs := gid, allowed when gid is the "
                "real or saved gid (else EPERM)",
        "kernel": "__sys_setgid()", "file": "kernel/sys.c", "versions": "3.10 .. 6.19"},
    "setreuid": {
        "what": "ruid (if not -1) must be the old real or effective uid, euid (if not -1) the old real, "
                "effective or saved uid, unless CAP_SETUID; suid := new euid when ruid is set or euid "
                "differs from the old real uid; fsuid := euid",
        "kernel": "__sys_setreuid()", "file": "kernel/sys.c", "versions": "3.10 .. 6.19"},
    "setregid": {
        "what": "as setreuid for the gids, with CAP_SETGID",
        "kernel": "__sys_setregid()", "file": "kernel/sys.c", "versions": "3.10 .. 6.19"},
    "setresuid": {
        "what": "each id that is not -1 must be one of the old real, effective or saved uids unless "
                "CAP_SETUID; fsuid := euid",
        "kernel": "__sys_setresuid()", "file": "kernel/sys.c", "versions": "3.10 .. 6.19"},
    "setresgid": {
        "what": "as setresuid for the gids, with CAP_SETGID",
        "kernel": "__sys_setresgid()", "file": "kernel/sys.c", "versions": "3.10 .. 6.19"},
    "setfsuid": {
        "what": "returns the old fsuid always; sets fsuid when it is the real, effective, saved or fs uid "
                "or the caller has CAP_SETUID, and silently ignores other (or invalid, -1) values",
        "kernel": "__sys_setfsuid()", "file": "kernel/sys.c", "versions": "3.10 .. 6.19"},
    "setfsgid": {
        "what": "as setfsuid for the fsgid, with CAP_SETGID",
        "kernel": "__sys_setfsgid()", "file": "kernel/sys.c", "versions": "3.10 .. 6.19"},
    "cap_emulate_setxuid": {
        "what": "a uid change that leaves none of r/e/s uid 0 (from one that had one) clears permitted "
                "and effective capabilities unless PR_SET_KEEPCAPS; euid 0 -> non-0 clears effective, "
                "non-0 -> 0 restores effective from permitted; permitted never grows",
        "kernel": "cap_emulate_setxuid(), cap_task_fix_setuid()", "file": "security/commoncap.c",
        "versions": "3.10 .. 6.19"},
    "setgroups": {
        "what": "changes only the supplementary groups: commit_creds() leaves dumpable alone",
        "kernel": "set_current_groups()", "file": "kernel/groups.c", "versions": "3.10 .. 6.19"},
    "capset": {
        "what": "new permitted must be a subset of the old (cap_capset()), so commit_creds() never "
                "resets dumpable",
        "kernel": "sys_capset(), cap_capset()", "file": "kernel/capability.c, security/commoncap.c",
        "versions": "3.10 .. 6.19"},
    "prctl": {
        "what": "prctl(PR_SET_DUMPABLE, 0|1) sets the flag; 2 (and anything else) is EINVAL",
        "kernel": "prctl_set_dumpable in SYSCALL_DEFINE5(prctl)", "file": "kernel/sys.c",
        "versions": "3.10 .. 6.19"},
    "exec": {
        "what": "dumpable := fs.suid_dumpable when the binary is not readable (would_dump(): "
                "BINPRM_FLAGS_ENFORCE_NONDUMP) or the pre-exec euid != uid or egid != gid, else "
                "SUID_DUMP_USER; then commit_creds(bprm->cred) applies for set-id and file-capability "
                "binaries",
        "kernel": "begin_new_exec() (setup_new_exec() before 5.9), commit_creds()", "file": "fs/exec.c",
        "versions": "3.10 .. 6.19"},
    "unshare-userns": {
        "what": "unshare(CLONE_NEWUSER): the new namespace's owner is the caller's euid and its parent "
                "the caller's namespace, so cred_cap_issubset() holds: dumpable is left alone",
        "kernel": "unshare_userns(), cred_cap_issubset()", "file": "kernel/user_namespace.c, kernel/cred.c",
        "versions": "3.8 .. 6.19"},
    "setns-userns": {
        "what": "setns() into a user namespace: commit_creds() resets dumpable unless the target "
                "namespace is a child of the caller's owned by the caller's euid (cred_cap_issubset()); "
                "which namespace an fd names is not in the syscall's arguments, so the kernel's answer decides",
        "kernel": "userns_install(), commit_creds()", "file": "kernel/user_namespace.c, kernel/cred.c",
        "versions": "3.8 .. 6.19"},
}


def normalize_id(v: int) -> int:
    """A syscall argument as the kernel's uid_t: the low 32 bits (-1 prints as 0xffffffff or
    0xffffffffffffffff; either is INVALID_ID, "unchanged")."""
    return v & 0xFFFFFFFF


def _has_cap(creds: Creds, cap: int) -> bool:
    return bool(int(creds.get("cap_eff") or 0) >> cap & 1)


def _copy(creds: Creds) -> Creds:
    return {"uid": list(creds["uid"]), "gid": list(creds["gid"]), "cap_prm": int(creds.get("cap_prm") or 0),
            "cap_eff": int(creds.get("cap_eff") or 0), "keep_caps": bool(creds.get("keep_caps")),
            "cap_bnd": creds.get("cap_bnd")}


def _fix_setuid(old: Creds, new: Creds) -> Creds:
    """cap_emulate_setxuid() and the fsuid part of cap_task_fix_setuid() (no SECURE_NO_SETUID_FIXUP)."""
    o, n = old["uid"], new["uid"]
    if 0 in o[:3] and 0 not in n[:3] and not old.get("keep_caps"):
        new["cap_prm"] = 0
        new["cap_eff"] = 0
    if o[1] == 0 and n[1] != 0:
        new["cap_eff"] = 0
    if o[1] != 0 and n[1] == 0:
        new["cap_eff"] = new["cap_prm"]
    return new


def apply_syscall(name: str, args: List[int], creds: Creds,
                  ret: Optional[int]) -> Tuple[Optional[Creds], Optional[str], Optional[str]]:
    """What the kernel's credentials are after syscall *name* with *args* returned *ret*.

    Returns ``(new_creds, rule_id, note)``; *new_creds* is None when the result cannot be known
    from the arguments (it is then read from the kernel). A failed call (ret < 0) changes nothing.
    """
    if name in ("setfsuid", "setfsgid"):
        return _setfs(name, args, creds, ret)
    if ret is not None and ret < 0:
        return _copy(creds), name, f"failed (error {-ret}): nothing changed"
    new = _copy(creds)
    if name in ("setuid", "setgid"):
        key, cap = ("uid", CAP_SETUID) if name == "setuid" else ("gid", CAP_SETGID)
        v = normalize_id(args[0])
        if v == INVALID_ID:
            return new, name, "invalid id: EINVAL"
        if _has_cap(creds, cap):
            new[key] = [v, v, v, v]
        else:
            new[key][1] = new[key][3] = v
    elif name in ("setreuid", "setregid"):
        key = "uid" if name == "setreuid" else "gid"
        r, e = (normalize_id(a) for a in args[:2])
        ids = new[key]
        old = creds[key]
        if r != INVALID_ID:
            ids[0] = r
        if e != INVALID_ID:
            ids[1] = e
        if r != INVALID_ID or (e != INVALID_ID and e != old[0]):
            ids[2] = ids[1]
        ids[3] = ids[1]
    elif name in ("setresuid", "setresgid"):
        key = "uid" if name == "setresuid" else "gid"
        vals = [normalize_id(a) for a in args[:3]]
        ids = new[key]
        for i, v in enumerate(vals):
            if v != INVALID_ID:
                ids[i] = v
        ids[3] = ids[1]
    elif name in ("setgroups", "capset"):
        return None if name == "capset" else new, name, None
    elif name == "unshare":
        return new, "unshare-userns" if int(args[0]) & CLONE_NEWUSER else "unshare", None
    elif name == "setns":
        return None, "setns-userns", "depends on the namespace the fd names"
    else:
        return new, name, None
    if name in ("setuid", "setreuid", "setresuid"):
        _fix_setuid(creds, new)
    return new, name, None


def _setfs(name: str, args: List[int], creds: Creds,
           ret: Optional[int]) -> Tuple[Optional[Creds], Optional[str], Optional[str]]:
    key, cap = ("uid", CAP_SETUID) if name == "setfsuid" else ("gid", CAP_SETGID)
    v = normalize_id(args[0])
    new = _copy(creds)
    old = creds[key]
    if v != INVALID_ID and (v in old or _has_cap(creds, cap)):
        new[key][3] = v
        note = None
        if name == "setfsuid":
            # cap_task_fix_setuid(LSM_SETID_FS): fsuid 0 -> non-0 drops the fs capabilities
            # from the effective set, non-0 -> 0 raises them from permitted
            fs_mask = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 9) | (1 << 27) | (1 << 32)
            if old[3] == 0 and v != 0:
                new["cap_eff"] &= ~fs_mask
            elif old[3] != 0 and v == 0:
                new["cap_eff"] |= new["cap_prm"] & fs_mask
    else:
        note = "value not allowed (or -1): ignored, the old fsid is returned"
    if ret is not None and ret >= 0 and ret != old[3]:
        note = f"the kernel returned fs{key} {ret}, the model expected {old[3]}"
    return new, name, note


def commit_creds(old: Creds, new: Creds, suid_dumpable: Optional[int]) -> Tuple[bool, str]:
    """commit_creds(): returns ``(resets, why)``; when *resets*, dumpable becomes *suid_dumpable*
    (None: fs.suid_dumpable could not be read)."""
    why = []
    for key, i, label in (("uid", 1, "euid"), ("gid", 1, "egid"), ("uid", 3, "fsuid"), ("gid", 3, "fsgid")):
        if old[key][i] != new[key][i]:
            why.append(f"{label} {old[key][i]} -> {new[key][i]}")
    grown = int(new.get("cap_prm") or 0) & ~int(old.get("cap_prm") or 0)
    if grown:
        why.append(f"permitted capabilities grew by {grown:#x}")
    if not why:
        return False, "no effective/fs id changed and permitted capabilities did not grow"
    return True, ", ".join(why) + f": dumpable := fs.suid_dumpable ({suid_dumpable})"


def prctl_set_dumpable(option: int, arg2: int, ret: Optional[int]) -> Optional[int]:
    """prctl(option, arg2): the new dumpable value, or None when it does not set it."""
    if int(option) != PR_SET_DUMPABLE:
        return None
    if ret is not None and ret < 0:
        return None
    a = int(arg2)
    return a if a in (0, 1) else None


def exec_creds(pre: Creds, exe: Optional[Dict[str, Any]], cap_bnd: Optional[int] = None) -> Optional[Creds]:
    """The credentials exec gives (bprm_fill_uid(), cap_bprm_creds_from_file()): a set-uid/set-gid
    binary sets the effective, saved and fs id to its owner/group; saved and fs ids follow the
    effective ones in any case. Root (euid 0 after exec) gets the bounding set as permitted
    capabilities, anyone else none (ambient capabilities and file capabilities are not
    modelled: None is returned for a file with capabilities, to be read from the kernel).
    The set-id bits are ignored on nosuid mounts and under no_new_privs; the kernel's answer,
    read afterwards, shows that."""
    if exe is not None and exe.get("fcaps"):
        return None
    new: Creds = {"uid": list(pre["uid"]), "gid": list(pre["gid"]), "cap_prm": int(pre.get("cap_prm") or 0),
                  "cap_eff": int(pre.get("cap_eff") or 0), "keep_caps": False}
    if exe is not None and exe.get("setuid"):
        new["uid"][1] = exe["uid"]
    if exe is not None and exe.get("setgid"):
        new["gid"][1] = exe["gid"]
    new["uid"][2] = new["uid"][3] = new["uid"][1]
    new["gid"][2] = new["gid"][3] = new["gid"][1]
    if new["uid"][1] == 0 or new["uid"][0] == 0:
        if pre["uid"][1] != 0 and pre["uid"][0] != 0:
            new["cap_prm"] = int(cap_bnd if cap_bnd is not None else (1 << 41) - 1)
        new["cap_eff"] = new["cap_prm"] if new["uid"][1] == 0 else 0
    else:
        new["cap_prm"] = new["cap_eff"] = 0
    return new


def exec_dumpable(pre: Creds, post: Creds, suid_dumpable: Optional[int],
                  unreadable: bool = False) -> Tuple[Optional[int], str]:
    """begin_new_exec(): ``(value, why)`` from the pre-exec and post-exec credentials; the value is
    None where it is *suid_dumpable* and that could not be read (None)."""
    if unreadable:
        return suid_dumpable, "the binary is not readable by the caller (would_dump())"
    if pre["uid"][1] != pre["uid"][0] or pre["gid"][1] != pre["gid"][0]:
        return suid_dumpable, (f"before exec euid/uid {pre['uid'][1]}/{pre['uid'][0]}, egid/gid "
                               f"{pre['gid'][1]}/{pre['gid'][0]} differ")
    resets, why = commit_creds(pre, post, suid_dumpable)
    if resets:
        return suid_dumpable, "a set-id or file-capability binary: " + why
    return 1, "an ordinary exec: SUID_DUMP_USER"


def ids_name(creds: Creds) -> str:
    u, g = creds["uid"], creds["gid"]
    return f"uid {'/'.join(map(str, u))} gid {'/'.join(map(str, g))}"
