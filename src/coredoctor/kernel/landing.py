"""
Landing: where a file core really is, seen from the host
--------------------------------------------------------
For a file core_pattern the kernel opens the name in the crashing task's own mount namespace
(``file_open_root(&current->fs->root)`` / the cwd; fs/coredump.c), so the path the gates judge
is the path *the process* sees. An operator looks from the host. This module maps one to the
other with the two mount tables the snapshot read (:mod:`coredoctor.snapshot.mounts`), purely:

- the mount that holds the path in the task's table (the longest mount point that is a prefix,
  the topmost of a stack);
- ``overlay``: a new file is created in the upper layer, so the host path is under the mount's
  ``upperdir=`` (Documentation/filesystems/overlayfs.rst, "Upper and Lower"), which a
  container runtime removes with the container (podman ``rm``; ``--rm`` at exit);
- ``tmpfs``/``ramfs``: memory of that mount; nothing on a host disk, gone with the last
  process of the namespace (reachable from the host only as ``/proc/PID/root/...``);
- anything else (a bind mount: ``--rootfs``, a volume, a host directory): mountinfo's *root*
  field is the path inside that filesystem; the host mount of the same device whose root is a
  prefix of it gives the host path (proc(5), "mountinfo": fields 3 and 4).

Each rule is a row of :data:`RULES` with its source. Symlinks inside the path are not followed
here (the snapshot's walk follows them for the gates).

The result, merged into ``core_destination`` (coredoctor.check/1, additive)::

    container_path  the path as the process sees it
    host_path       the path on the host, or null (memory, not mounted on the host, unknown)
    survives        true, false (gone with the container or its mount) or null (unknown)
    landing         "host" | "bind" | "overlay-upper" | "memory" | "unknown"
    landing_evidence  one sentence: the mount and the rule
    warning         one sentence when the core will not outlive the container, else null
"""

import posixpath
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ["RULES", "RELATIVE_UPPER", "rootless_home", "landing", "normalize", "holding_mount", "map_id",
           "unmap_id", "owner", "userns_note"]

Mount = Mapping[str, Any]

#: fstype family -> how a new file in it is found from the host; each row cites its source
RULES: Dict[str, Dict[str, str]] = {
    "overlay": {"landing": "overlay-upper",
                "rule": "a new file is created in the upper layer (upperdir=)",
                "source": "Documentation/filesystems/overlayfs.rst (Upper and Lower); fs/overlayfs/dir.c "
                          "ovl_create_object()"},
    "memory": {"landing": "memory",
               "rule": "an in-memory filesystem: the file lives as long as the mount",
               "source": "Documentation/filesystems/tmpfs.rst; mm/shmem.c"},
    "bind": {"landing": "bind",
             "rule": "mountinfo's root field is the path inside the filesystem; the host's mount of the "
                     "same device maps it",
             "source": "proc(5) /proc/PID/mountinfo fields 3 (major:minor) and 4 (root); fs/proc_namespace.c "
                       "show_mountinfo()"},
    "fuse-overlayfs": {"landing": "overlay-upper",
                       "rule": "the upper directory is the -o upperdir= of the fuse-overlayfs process whose "
                               "mount namespace has this device mounted at the merged directory its argv names",
                       "source": "fuse-overlayfs(1); containers/storage drivers/overlay/overlay.go mount_program; "
                                 "snapshot/containers.py FUSE_OVERLAY"},
    "autoremove": {"landing": "overlay-upper",
                   "rule": "the runtime removes the container's upper layer when the container is removed; "
                           "--rm removes it at exit",
                   "source": "podman-run(1) --rm (annotation io.podman.annotations.autoremove); docker run --rm "
                             "(HostConfig.AutoRemove); containers/storage overlay driver Remove()"},
}

#: where a relative ``upperdir=`` is relative to, per runtime: an overlay mount whose options would
#: not fit in a page is made with paths relative to the driver's home, after a chdir there
#: (containers/storage drivers/overlay/overlay.go get(): "relative paths" + mountFrom(d.home, ...);
#: moby daemon/graphdriver/overlay2/overlay.go Get(): mountFrom(d.home, ...) with "ID/diff").
#: The homes are the default graph roots (storage.conf(5) graphroot, dockerd --data-root).
RELATIVE_UPPER: Dict[str, Dict[str, str]] = {
    "podman": {"home": "/var/lib/containers/storage/overlay",
               "source": "containers/storage drivers/overlay/overlay.go get() (relative paths, mountFrom "
                         "d.home); storage.conf(5) graphroot default /var/lib/containers/storage"},
    "cri-o": {"home": "/var/lib/containers/storage/overlay",
              "source": "containers/storage drivers/overlay/overlay.go get(); CRI-O uses containers/storage"},
    "docker": {"home": "/var/lib/docker/overlay2",
               "source": "moby daemon/graphdriver/overlay2/overlay.go Get() (mountFrom d.home); dockerd "
                         "--data-root default /var/lib/docker"},
}


def rootless_home(ct: Mapping[str, Any]) -> Optional[Dict[str, str]]:
    """The overlay driver's home of a rootless podman container: its user's graph root (the
    ``<graphroot>/overlay-containers/ID/userdata`` bundle its conmon named, snapshot/containers.py
    CONMON) + ``/overlay``; None when the bundle does not say (the root default is not the user's)."""
    b = ct.get("bundle_dir")
    cid = ct.get("id")
    if not isinstance(b, str) or not isinstance(cid, str) or not b.startswith("/") or ".." in b.split("/"):
        return None
    tail = f"/overlay-containers/{cid}/userdata"
    if not b.endswith(tail) or len(b) == len(tail):
        return None
    return {"home": b[:-len(tail)] + "/overlay",
            "source": "containers/storage drivers/overlay/overlay.go get() (relative paths, mountFrom d.home); "
                      "storage.conf(5) rootless graphroot ($HOME/.local/share/containers/storage or "
                      "rootless_storage_path), named by the container's conmon -b"}


MEMORY_FS = ("tmpfs", "ramfs", "devtmpfs")
FUSE_OVERLAYFS = "fuse.fuse-overlayfs"
_NOT_FILES = ("proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs",
              "tracefs", "fusectl", "bpf", "pstore", "configfs", "hugetlbfs")


def normalize(path: str) -> str:
    """Lexical normalization of an absolute path (``.``/``..``/``//``; ``..`` stops at ``/``)."""
    out: List[str] = []
    for c in path.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if out:
                out.pop()
            continue
        out.append(c)
    return "/" + "/".join(out)


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def _rel(path: str, top: str) -> str:
    return "" if path == top or top == "/" and path == "/" else path[len(top.rstrip("/")):]


def _join(a: str, b: str) -> str:
    return normalize(a.rstrip("/") + "/" + b.lstrip("/")) if b else normalize(a)


def holding_mount(path: str, mounts: Sequence[Mount]) -> Optional[Mount]:
    """The mount of *mounts* (one task's table) that holds *path*: the longest mount point that is
    a prefix, and of a stack of mounts on that point the topmost (not a parent of another)."""
    best: List[Mount] = []
    best_len = -1
    for m in mounts:
        mp = m.get("mountpoint")
        if not isinstance(mp, str) or not _under(path, mp):
            continue
        n = len(mp.rstrip("/"))
        if n > best_len:
            best, best_len = [m], n
        elif n == best_len:
            best.append(m)
    if not best:
        return None
    ids = {m.get("parent") for m in best}
    top = [m for m in best if m.get("id") not in ids]
    return (top or best)[-1]


def _opts(super_options: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for o in (super_options or "").split(","):
        k, _, v = o.partition("=")
        out.setdefault(k, v)
    return out


def _host_of(dev: str, inside: str, host: Sequence[Mount]) -> Optional[str]:
    """The host path of *inside* (a path inside the filesystem of device *dev*) through the host
    mount of that device whose root is the longest prefix of it."""
    cands = [m for m in host if m.get("dev") == dev and isinstance(m.get("root"), str)
             and isinstance(m.get("mountpoint"), str) and _under(inside, m["root"])]
    if not cands:
        return None
    m = max(cands, key=lambda m: (len(m["root"].rstrip("/")), -len(m["mountpoint"])))
    return _join(m["mountpoint"], _rel(inside, m["root"]))


def landing(path: Optional[str], proc: Mapping[str, Any], mounts: Optional[Mapping[str, Any]],
            autoremove: Optional[bool] = None, from_init_root: bool = False) -> Dict[str, Any]:
    """Where *path* (the core's path as *proc* sees it) is on the host. *mounts*: the snapshot's
    ``mounts``; *autoremove*: the container is removed when it exits (``--rm``), or None when
    unknown; *from_init_root*: the kernel opens the path from init's root (dumpable=2)."""
    out: Dict[str, Any] = {"container_path": path, "host_path": None, "survives": None,
                           "landing": "unknown", "landing_evidence": "", "warning": None}
    if not path or not path.startswith("/"):
        out["landing_evidence"] = "the core's directory is not known as an absolute path"
        return out
    path = normalize(path)
    out["container_path"] = path
    ns = proc.get("mnt_ns")
    if from_init_root or (ns is None and proc.get("root_is_host") is not False):
        out.update(host_path=path, survives=True, landing="host",
                   landing_evidence=("dumpable=2: the kernel opens the path from init's root" if from_init_root
                                     else "the process shares the host's mount namespace"))
        return out
    table = (mounts or {}).get(ns) if ns else None
    host = (mounts or {}).get("host") or []
    if not table:
        out["landing_evidence"] = ("the process has its own root but its mount table is not in the snapshot"
                                   if ns is None else f"the mount table of {ns} is not in the snapshot")
        return out
    m = holding_mount(path, table)
    if m is None:
        out["landing_evidence"] = f"no mount in {ns} holds {path}"
        return out
    rel = _rel(path, m["mountpoint"])
    inside = _join(str(m.get("root") or "/"), rel)
    fstype = str(m.get("fstype") or "")
    where = f"{m['mountpoint']} is {fstype} ({m.get('source')})"
    fo: Any = None
    if fstype == FUSE_OVERLAYFS:
        ct = proc.get("container")
        fo = ct.get("fuse_overlay") if isinstance(ct, dict) else None
        if not (isinstance(fo, dict) and fo.get("dev") == m.get("dev") and isinstance(fo.get("upperdir"), str)
                and fo["upperdir"].startswith("/")):
            out.update(landing="overlay-upper",
                       landing_evidence=f"{where}: its upper layer is in the argv of the fuse-overlayfs "
                                        "process serving it, which was not found")
            return out
        r = RULES["fuse-overlayfs"]
        where += f", served by fuse-overlayfs pid {fo.get('pid')} (-o upperdir={fo['upperdir']}) [{r['source']}]"
    if fstype in ("overlay", FUSE_OVERLAYFS):
        upper = _opts(str(m.get("super_options") or "")).get("upperdir") if fstype == "overlay" else \
            str(fo["upperdir"])
        r = RULES["overlay"]
        if not upper:
            out.update(landing="overlay-upper", survives=None,
                       landing_evidence=f"{where} without an upper layer (read-only): no new file can be made")
            return out
        if not upper.startswith("/"):
            ct = proc.get("container")
            row = RELATIVE_UPPER.get(str(ct.get("runtime"))) if isinstance(ct, dict) else None
            if row is not None and isinstance(ct, dict) and ct.get("rootless"):
                row = rootless_home(ct)
            if row is None or not isinstance(ct, dict) or ".." in upper.split("/"):
                out.update(landing="overlay-upper",
                           landing_evidence=f"{where}; its upperdir={upper} is relative to the mounter's cwd "
                                            "(long layer lists), so the host path is not known")
                return out
            upper = _join(row["home"], upper)
            where += (f"; its relative upperdir is under the {ct['runtime']} overlay driver's home "
                      f"{row['home']} (the mount was made from there) [{row['source']}]")
        out.update(host_path=_join(upper, inside), landing=r["landing"],
                   landing_evidence=f"{where}: {r['rule']} [{r['source']}]")
        if autoremove:
            out.update(survives=False, warning=(
                f"the core lands in the container's upper layer ({upper}), which is deleted when the "
                "container exits (--rm): copy it out first, or write cores to a volume or a host path"))
        elif autoremove is False:
            out.update(survives=True, warning=(
                f"the core lands in the container's upper layer ({upper}): kept until the container is "
                "removed (podman/docker rm deletes it)"))
        else:
            out["warning"] = (f"the core lands in the container's upper layer ({upper}), which is deleted "
                              "with the container")
        return out
    if fstype in MEMORY_FS:
        r = RULES["memory"]
        out.update(landing="memory", survives=False,
                   landing_evidence=f"{where}: {r['rule']} [{r['source']}]",
                   warning=(f"{m['mountpoint']} is {fstype} in the container's mount namespace: the core is in "
                            f"memory, not on a host disk, reachable from the host only as "
                            f"/proc/{proc.get('pid')}/root{path} while the container runs, and gone with it"))
        return out
    if fstype in _NOT_FILES:
        out["landing_evidence"] = f"{where}: not a filesystem that holds regular files"
        return out
    hp = _host_of(str(m.get("dev")), inside, host)
    r = RULES["bind"]
    if hp is None:
        out.update(landing="bind", survives=True,
                   landing_evidence=f"{where}, {inside} of device {m.get('dev')}, which the host does not "
                                    "mount: the file is on that filesystem, not reachable by a host path")
        return out
    out.update(host_path=hp, survives=True, landing="bind",
               landing_evidence=f"{where}, path {inside} of device {m.get('dev')}: {r['rule']} [{r['source']}]")
    return out


def map_id(idmap: Optional[Sequence[Sequence[int]]], inside: int) -> Optional[int]:
    """The host id of id *inside* of a user namespace with *idmap* (``[[inside, outside, count]]``),
    or None when it is not mapped (user_namespaces(7))."""
    for a, b, c in idmap or ():
        if a <= inside < a + c:
            return b + inside - a
    return None


def unmap_id(idmap: Optional[Sequence[Sequence[int]]], host: int) -> Optional[int]:
    """The id inside the namespace of host id *host*, or None (shown there as the overflow id 65534)."""
    for a, b, c in idmap or ():
        if b <= host < b + c:
            return a + host - b
    return None


def owner(proc: Mapping[str, Any], dumpable_value: Optional[int]) -> Dict[str, Any]:
    """Who owns the core file: the dumping task's fsuid/fsgid, which /proc/PID/status shows as host
    ids to a reader in the initial user namespace (from_kuid_munged() of the reader's namespace,
    fs/proc/array.c task_state()); with dumpable=2 the kernel dumps as GLOBAL_ROOT_UID
    (fs/coredump.c: cred->fsuid = GLOBAL_ROOT_UID). In another user namespace, the ids as the
    container sees them (None: unmapped, shown as 65534 there)."""
    c = proc.get("creds") or {}
    uid = 0 if dumpable_value == 2 else (c.get("uid") or [None] * 4)[3]
    gid = (c.get("gid") or [None] * 4)[3]
    out: Dict[str, Any] = {"uid": uid, "gid": gid}
    if proc.get("userns_is_host") is False and "uid_map" in proc:
        out["uid_in_container"] = unmap_id(proc.get("uid_map"), uid) if uid is not None else None
        out["gid_in_container"] = unmap_id(proc.get("gid_map"), gid) if gid is not None else None
    return out


def userns_note(proc: Mapping[str, Any], fsuid: int) -> str:
    """For a refusal in another user namespace: who the dumping fsuid is there, and the rule
    that decides its capabilities (empty for a process in the initial user namespace)."""
    if proc.get("userns_is_host") is not False:
        return ""
    inside = unmap_id(proc.get("uid_map"), fsuid) if "uid_map" in proc else None
    who = (f"host uid {fsuid} is uid {inside} in the container's user namespace" if inside is not None
           else f"host uid {fsuid} in another user namespace")
    return (f" ({who}: its capabilities count only for inodes whose owner and group are mapped in that "
            "namespace, capable_wrt_inode_uidgid() kernel/capability.c)")
