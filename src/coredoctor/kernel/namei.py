"""
namei
-----
The permission checks that path lookup and ``open(O_CREAT|O_EXCL|O_NOFOLLOW)`` make for the
dumping task (fs/namei.c: ``generic_permission()``, ``may_delete()``/``check_sticky()``;
kernel/capability.c: ``capable_wrt_inode_uidgid()``). POSIX ACLs and LSMs are not modelled.
"""

import stat
from typing import Any, Collection, Mapping, Optional, Tuple

__all__ = ["CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_SYS_RESOURCE",
           "has_cap", "may_access", "privileged_wrt", "may_delete", "MAY_EXEC", "MAY_WRITE", "MAY_READ"]

CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_FOWNER = 3
CAP_SYS_RESOURCE = 24

MAY_EXEC = 1
MAY_WRITE = 2
MAY_READ = 4


def has_cap(cap_hex: Optional[str], cap: int) -> bool:
    return bool((int(cap_hex or "0", 16) >> cap) & 1)


def _dac(mode: int, uid: int, gid: int, fsuid: int, fsgid: int, groups: Collection[int], mask: int) -> bool:
    if fsuid == uid:
        bits = (mode >> 6) & 7
    elif fsgid == gid or gid in groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return (bits & mask) == mask


def _mapped(idmap: Any, host_id: int) -> bool:
    return any(b <= host_id < b + c for _, b, c in idmap or ())


def privileged_wrt(inode: Mapping[str, Any], cred: Mapping[str, Any]) -> bool:
    """``privileged_wrt_inode_uidgid()`` (kernel/capability.c): capabilities held in a user
    namespace count for an inode only when its owner and group are both mapped there.
    *cred*'s ``userns_maps`` is ``(uid_map, gid_map)`` of the task's namespace (``[[inside,
    outside, count]]``, host ids), or absent for the initial one."""
    maps = cred.get("userns_maps")
    if maps is None:
        return True
    return _mapped(maps[0], inode["uid"]) and _mapped(maps[1], inode["gid"])


def may_access(inode: Mapping[str, Any], cred: Mapping[str, Any], mask: int) -> bool:
    """``generic_permission()`` for *inode* (``{"mode", "uid", "gid"}``) and *cred*
    (``{"fsuid", "fsgid", "groups", "cap_eff"}``, ``userns_maps`` in another user namespace).
    Returns True if allowed."""
    mode = inode["mode"]
    if _dac(mode, inode["uid"], inode["gid"], cred["fsuid"], cred["fsgid"], cred.get("groups", ()), mask):
        return True
    is_dir = stat.S_ISDIR(mode)
    cap = cred.get("cap_eff", "0") if privileged_wrt(inode, cred) else "0"
    if has_cap(cap, CAP_DAC_OVERRIDE):
        if is_dir or not (mask & MAY_EXEC) or (mode & 0o111):
            return True
    if has_cap(cap, CAP_DAC_READ_SEARCH):
        if mask == MAY_READ or (is_dir and not (mask & MAY_WRITE)):
            return True
    return False


def may_delete(dir_inode: Mapping[str, Any], victim: Mapping[str, Any], cred: Mapping[str, Any]) -> Tuple[bool, str]:
    """``may_delete()``: write+search on the directory and, for a sticky directory,
    ``check_sticky()`` (owner of the file or the directory, or CAP_FOWNER)."""
    if not may_access(dir_inode, cred, MAY_WRITE | MAY_EXEC):
        return False, "no write and search permission on the directory"
    if dir_inode["mode"] & stat.S_ISVTX:
        if cred["fsuid"] not in (victim["uid"], dir_inode["uid"]) and not (
                has_cap(cred.get("cap_eff"), CAP_FOWNER) and privileged_wrt(victim, cred)):
            return False, "the directory is sticky and the file belongs to another user"
    return True, ""
