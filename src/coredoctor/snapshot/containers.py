"""
Containers
----------
Which container a process is in, from its ``/proc/PID/cgroup`` (:func:`from_cgroup`, pure:
:data:`FORMATS`, one row per runtime and cgroup driver, each citing where the runtime names
its cgroups) and the runtime's own state on disk, read-only and bounded (:func:`identify`,
:func:`complete`): names, images and the Kubernetes pod from the runtime's files, never by
running ``podman``/``docker``/``crictl``.

The ``container`` object (coredoctor.check/1 targets, coredoctor.crashes/1 records, the
snapshot's process entries; ``null`` when the process is not in a container)::

    {"runtime":   "podman" | "docker" | "containerd" | "cri-o" | "lxc" | "systemd-nspawn",
     "id":        the runtime's container id (64 hex for OCI runtimes) or the machine/LXC name,
     "name":      the container's name (podman/docker name, the Kubernetes container name,
                  the machine name) or null when the state did not say,
     "image":     the image reference or null,
     "pod":       the Kubernetes pod name or null, "namespace": the Kubernetes namespace or null,
     -- additive facts --
     "pod_uid":   the pod's UID from the kubepods cgroup path or null,
     "qos":       "guaranteed" | "burstable" | "besteffort" | null,
     "driver":    "cgroupfs" | "systemd" (how the cgroup path was made),
     "cgroup":    the cgroup path it was read from,
     "bundle":    the OCI bundle's config.json that was read, or null,
     "state":     [the state files the name/image came from],
     -- a container known by its conmon (:data:`CONMON`; rootless podman on cgroup v1) --
     "rootless":  true when the container's conmon runs as a user other than root or in a user
                  namespace of its own (or its cgroup is under user@UID.service), false for a
                  root conmon's; absent when nothing said,
     "owner_uid": the host uid that conmon runs as (the user the rootless container belongs to),
     "conmon":    the conmon's pid, "bundle_dir": its -b (a <driver>-containers/ID/userdata
                  directory, else null), "cuuid": -u, "runtime_path": -r, "exit_dir": --exit-dir,
     "fuse_overlay": {"dev", "merged", "upperdir", "pid", "state"} when the root is a
                  fuse-overlayfs mount: the upper layer from the serving process (FUSE_OVERLAY)}

Reading the runtime's state (:func:`read_bounded`, :func:`read_json`, :func:`bundle_config`)
is shared with the landing/limits code: every path is opened component by component under the
host root (``COREDOCTOR_HOSTROOT``, default ``/``: a DaemonSet mounts the node's root read-only
there), a symlink is followed only when it and the directory holding it are root-owned and not
writable by group or others, the file must be a regular file and is read to a byte limit. Every
value taken from the state is attacker-controlled (a container names itself): strings are
type-checked and clipped (:data:`MAX_FIELD`); nothing from them is ever a path we follow
except a bundle location validated as a runtime directory.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat as _st

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Dict, Iterable, List, Optional, Tuple

__all__ = ["FORMATS", "RUNTIMES", "KEYS", "from_cgroup", "from_path", "identify", "complete",
           "NSPAWN_LEADER", "nspawn_from_leader", "nspawn_of",
           "read_bounded", "read_json", "bundle_paths", "bundle_config", "oci_rlimits",
           "oci_annotations", "host_root", "matches", "label", "MAX_FIELD",
           "CONMON", "conmon_from_argv", "conmon_of", "add_monitor", "USER_MANAGER",
           "FUSE_OVERLAY", "fuse_args", "fuse_overlay_of"]

#: the keys of the ``container`` object every consumer may rely on (the JSON contract)
KEYS = ("runtime", "id", "name", "image", "pod", "namespace")
RUNTIMES = ("podman", "docker", "containerd", "cri-o", "lxc", "systemd-nspawn")

#: the longest string taken from a runtime's state (a DNS-1123 name is 253, an image ref ~4 KiB
#: is possible in theory; the operator is served by the first 256)
MAX_FIELD = 256
#: byte limits of the state files read (an OCI config.json is ~10-40 KB; containers.json
#: holds every container of the host)
LIMIT_CONFIG = 1 << 20
LIMIT_LIST = 16 << 20
MAX_HOPS = 8
#: a name in a text label is cut to this many characters (a line stays within 100 columns)
LABEL_NAME = 40

_HEX64 = r"(?P<id>[0-9a-f]{64})"
_UID = r"(?P<pod_uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
_QOS = r"(?:(?P<qos>burstable|besteffort)[/-])?"


def _row(key: str, runtime: str, driver: str, rx: str, source: str) -> Tuple[str, str, str, Any, str]:
    return (key, runtime, driver, re.compile(rx), source)


#: How each runtime names a container's cgroup. The first row that matches the path (searched
#: anywhere in it: a cgroup may be nested under a slice or a delegated subtree) wins; the
#: Kubernetes rows come first (their leaf is a runtime's), conmon/monitor rows say "not in a
#: container" (runtime None). Group ``id``: the container id; ``name``: a name instead of an id;
#: ``pod_uid``/``qos``: the kubelet's pod cgroup.
FORMATS = [
    # kubelet, cgroupfs driver: /kubepods[/burstable|/besteffort]/pod<UID>/<container id>
    # (pkg/kubelet/cm/qos_container_manager_linux.go, pod_container_manager_linux.go
    # GetPodContainerName: "pod" + string(pod.UID); the leaf is the CRI runtime's container id)
    _row("kubepods-cgroupfs", "cri", "cgroupfs",
         r"/kubepods/" + _QOS + r"pod" + _UID + r"/(?:cri-containerd-|crio-|docker-)?" + _HEX64 + r"(?:\.scope)?(?:/|$)",
         "kubernetes pkg/kubelet/cm/pod_container_manager_linux.go GetPodContainerName; "
         "qos_container_manager_linux.go (burstable, besteffort under kubepods)"),
    # kubelet, systemd driver: kubepods.slice/kubepods-burstable.slice/
    #   kubepods-burstable-pod<UID with _ for ->.slice/cri-containerd-<id>.scope | crio-<id>.scope
    # (pkg/kubelet/cm/cgroup_manager_linux.go ToSystemd/escapeSystemdCgroupName: "-" -> "_";
    # containerd internal/cri: "cri-containerd" systemd prefix; cri-o internal/config/cgmgr
    # systemd.go: "crio" prefix; cri-dockerd: "docker")
    _row("kubepods-systemd", "cri", "systemd",
         r"kubepods(?:-(?P<qos>burstable|besteffort))?-pod" + _UID.replace("[-_]", "_") +
         r"\.slice/(?P<prefix>cri-containerd|crio|docker)-" + _HEX64 + r"\.scope(?:/|$)",
         "kubernetes pkg/kubelet/cm/cgroup_manager_linux.go (systemd driver, '-' escaped as '_'); "
         "containerd CRI 'cri-containerd-ID.scope', cri-o 'crio-ID.scope'"),
    # CRI-O's conmon: crio-conmon-<id>.scope -- the monitor, not in the container
    _row("crio-conmon", "", "systemd", r"crio-conmon-" + _HEX64 + r"\.scope(?:/|$)",
         "cri-o internal/oci/runtime_oci.go (conmon cgroup 'crio-conmon-ID.scope')"),
    # podman/libpod: cgroupfs "<parent>/libpod-<id>" (default parent /libpod_parent), systemd
    # "libpod-<id>.scope"; its conmon is "libpod-conmon-<id>.scope" / "<parent>/conmon"
    # (libpod/oci_conmon_common.go: "libpod-conmon-%s"; libpod/container_internal_linux.go /
    # pkg/specgen/generate: cgroupfs path filepath.Join(parent, "libpod-"+id), systemd
    # unit "libpod-" + id + ".scope")
    _row("libpod-conmon", "", "systemd", r"libpod-conmon-" + _HEX64 + r"(?:\.scope)?(?:/|$)",
         "podman libpod/oci_conmon_common.go (conmon's cgroup 'libpod-conmon-ID.scope')"),
    _row("libpod-systemd", "podman", "systemd", r"libpod-" + _HEX64 + r"\.scope(?:/|$)",
         "podman libpod/container_internal_linux.go (systemd cgroup manager: 'libpod-ID.scope')"),
    _row("libpod-cgroupfs", "podman", "cgroupfs", r"/libpod-" + _HEX64 + r"(?:/|$)",
         "podman libpod (cgroupfs manager: CgroupParent '/libpod_parent' + '/libpod-ID')"),
    # Docker/moby: systemd "system.slice/docker-<id>.scope", cgroupfs "/docker/<id>"
    # (moby daemon/oci_linux.go getCgroupParent/WithCgroups: "system.slice:docker:ID" with the
    # systemd driver, else the parent "/docker" joined with the id)
    _row("docker-systemd", "docker", "systemd", r"docker-" + _HEX64 + r"\.scope(?:/|$)",
         "moby daemon/oci_linux.go (systemd driver: scope 'docker-ID.scope' in system.slice)"),
    _row("docker-cgroupfs", "docker", "cgroupfs", r"/docker/" + _HEX64 + r"(?:/|$)",
         "moby daemon/oci_linux.go (cgroupfs driver: default parent '/docker', leaf the id)"),
    # containerd outside Kubernetes (ctr, nerdctl): "/<namespace>/<id>"
    # (containerd oci/spec.go populateDefaultUnixSpec: CgroupsPath defaultCgroupsPath(ns, id) =
    # "/" + ns + "/" + id); nerdctl with systemd: "nerdctl-<id>.scope"
    _row("nerdctl-systemd", "containerd", "systemd", r"nerdctl-" + _HEX64 + r"\.scope(?:/|$)",
         "nerdctl pkg/cmd/container/run_cgroup_linux.go (systemd: 'nerdctl-ID.scope')"),
    _row("cri-containerd-systemd", "containerd", "systemd", r"cri-containerd-" + _HEX64 + r"\.scope(?:/|$)",
         "containerd internal/cri (systemd cgroup 'cri-containerd-ID.scope')"),
    _row("crio-systemd", "cri-o", "systemd", r"crio-" + _HEX64 + r"\.scope(?:/|$)",
         "cri-o internal/config/cgmgr/systemd.go ('crio-ID.scope')"),
    _row("containerd-cgroupfs", "containerd", "cgroupfs", r"^/(?P<ns>[a-z0-9][a-z0-9._-]{0,75})/" + _HEX64 + r"(?:/|$)",
         "containerd oci/spec.go populateDefaultUnixSpec (CgroupsPath '/NAMESPACE/ID')"),
    # LXC 4.0+/LXD: "lxc.payload.<name>" (the monitor: "lxc.monitor.<name>"); LXC < 4: "/lxc/<name>"
    # (lxc src/lxc/cgroups/cgfsng.c, macro.h: "lxc.payload." / "lxc.monitor." prefixes)
    _row("lxc-monitor", "", "cgroupfs", r"(?:^|/)lxc\.monitor\.(?P<name>[^/]+)(?:/|$)",
         "lxc src/lxc/cgroups/cgfsng.c (monitor cgroup 'lxc.monitor.NAME')"),
    _row("lxc-payload", "lxc", "cgroupfs", r"(?:^|/)lxc\.payload\.(?P<name>[^/]+)(?:/|$)",
         "lxc src/lxc/cgroups/cgfsng.c (payload cgroup 'lxc.payload.NAME', LXC 4.0+ and LXD)"),
    _row("lxc-legacy", "lxc", "cgroupfs", r"^/lxc/(?P<name>[^/]+)(?:/|$)",
         "lxc < 4.0 (cgroup '/lxc/NAME')"),
    # systemd-nspawn/machined: "machine.slice/machine-<escaped name>.scope" (registered by
    # nspawn, src/nspawn/nspawn-register.c; the name escaped as a unit name, '-' -> '\x2d'), or
    # "machine.slice/systemd-nspawn@<name>.service" (machinectl start; the payload in "/payload")
    _row("nspawn-scope", "systemd-nspawn", "systemd",
         r"(?:^|/)machine\.slice/machine-(?P<name>[^/]+)\.scope(?:/|$)",
         "systemd src/nspawn/nspawn-register.c, src/machine (scope 'machine-NAME.scope')"),
    _row("nspawn-service", "systemd-nspawn", "systemd",
         r"(?:^|/)machine\.slice/systemd-nspawn@(?P<name>[^/]+)\.service(?:/|$)",
         "systemd units/systemd-nspawn@.service.in (machinectl start)"),
]

#: A podman container's cgroup under a user's own systemd manager is a rootless one of that user
#: (the manager's cgroup user.slice/user-UID.slice/user@UID.service is delegated to the user,
#: where rootless podman with the systemd cgroup manager makes libpod-ID.scope); only root can
#: put a process there from outside that subtree.
USER_MANAGER: Dict[str, Any] = {
    "rx": re.compile(r"(?:^|/)user@(?P<uid>[1-9][0-9]{0,9})\.service/"),
    "source": "systemd units/user@.service.in (Delegate=yes; slice user-UID.slice); podman "
              "docs/tutorials/rootless_tutorial.md (cgroup v2, systemd cgroup manager)"}

#: containerd namespaces that are not containers' own (a cgroupfs path /NAMESPACE/ID only
#: means containerd when the first component is a containerd namespace, not another tool's
#: parent): these are other rows' parents
_NOT_CONTAINERD = frozenset({"docker", "kubepods", "libpod_parent", "machine.slice", "system.slice",
                             "user.slice", "init.scope", "lxc"})


def _unescape_unit(s: str) -> str:
    """systemd's unit-name escaping undone (``\\x2d`` -> ``-``; systemd-escape(1))."""
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def _paths(text: str) -> List[str]:
    """The cgroup paths of a /proc/PID/cgroup text, most telling first: the unified (``0::``)
    hierarchy, then ``name=systemd``, then each v1 controller's (a cgroupfs runtime on v1 makes
    its cgroups in every controller)."""
    unified: List[str] = []
    named: List[str] = []
    rest: List[str] = []
    for line in text.split("\n")[:64]:
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        path = parts[2][:4096]
        if parts[0] == "0" and parts[1] == "":
            unified.append(path)
        elif parts[1] == "name=systemd":
            named.append(path)
        else:
            rest.append(path)
    out: List[str] = []
    for p in unified + named + rest:
        if p not in out:
            out.append(p)
    return out


def from_path(path: str) -> Optional[Dict[str, Any]]:
    """The container named by one cgroup path (the first :data:`FORMATS` row that matches), or
    None (a host process, or a runtime's monitor such as conmon)."""
    if not isinstance(path, str) or len(path) > 4096:
        return None
    for key, runtime, driver, rx, _source in FORMATS:
        m = rx.search(path)
        if m is None:
            continue
        g = m.groupdict()
        if not runtime:
            return None
        if key == "containerd-cgroupfs" and g.get("ns") in _NOT_CONTAINERD:
            continue
        out: Dict[str, Any] = {"runtime": runtime, "id": g.get("id"), "name": None, "image": None,
                               "pod": None, "namespace": None, "pod_uid": None, "qos": None,
                               "driver": driver, "cgroup": path, "bundle": None, "state": [],
                               "format": key}
        if g.get("name"):
            name = _unescape_unit(g["name"]) if driver == "systemd" else g["name"]
            out["id"] = out["name"] = name[:MAX_FIELD]
        if runtime == "cri":
            out["runtime"] = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}.get(
                g.get("prefix") or "", "cri")
            out["pod_uid"] = g["pod_uid"].replace("_", "-")
            out["qos"] = g.get("qos") or "guaranteed"
        if key == "containerd-cgroupfs":
            out["namespace_containerd"] = g.get("ns")
        um = USER_MANAGER["rx"].search(path)
        if um is not None and out["runtime"] == "podman":
            out["rootless"], out["owner_uid"] = True, int(um.group("uid"))
        return out
    return None


def from_cgroup(text: str) -> Optional[Dict[str, Any]]:
    """The container a process is in, from its /proc/PID/cgroup text alone (pure): the first
    of its paths (:func:`_paths` order) that a :data:`FORMATS` row names. Runtime ``cri`` is
    left when a kubepods cgroupfs leaf does not tell which CRI runtime made it (the state does:
    :func:`complete`)."""
    for path in _paths(text[:65536]):
        c = from_path(path)
        if c is not None:
            return c
    return None


# --- the runtime's state on disk: bounded, read-only, no untrusted symlinks -----------------

def host_root() -> str:
    """The directory the node's own root is seen at (``COREDOCTOR_HOSTROOT``, default ``/``)."""
    return os.environ.get("COREDOCTOR_HOSTROOT") or "/"


def _trusted_dir(st: os.stat_result) -> bool:
    return st.st_uid == 0 and not st.st_mode & 0o022


def _open_under(path: str, root: str, hops: int = 0) -> int:
    """An fd of *path* (absolute, meaning under *root*) opened component by component; a
    symlink is followed only when it and its directory are root-owned and the directory is
    not group/world-writable (an absolute target is again under *root*)."""
    if hops > MAX_HOPS:
        raise OSError(errno.ELOOP, "too many symlinks", path)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EACCES, "'..' in a state path", path)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, comp in enumerate(parts):
            last = i == len(parts) - 1
            dst = os.fstat(fd)
            try:
                lst = os.lstat(comp, dir_fd=fd)
            except OSError:
                raise
            if _st.S_ISLNK(lst.st_mode):
                if not (lst.st_uid == 0 and _trusted_dir(dst)):
                    raise OSError(errno.ELOOP, "untrusted symlink", "/" + "/".join(parts[:i + 1]))
                target = os.readlink(comp, dir_fd=fd)
                rest = "/".join(parts[i + 1:])
                if target.startswith("/"):
                    new = target + ("/" + rest if rest else "")
                else:
                    new = "/" + "/".join(parts[:i] + [target]) + ("/" + rest if rest else "")
                os.close(fd)
                fd = -1
                return _open_under(os.path.normpath(new), root, hops + 1)
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            if not last:
                flags |= os.O_DIRECTORY
            nfd = os.open(comp, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
        out, fd = fd, -1
        return out
    finally:
        if fd >= 0:
            os.close(fd)


def read_bounded(path: str, limit: int = LIMIT_CONFIG, root: Optional[str] = None,
                 owner: Optional[int] = None) -> Optional[bytes]:
    """The bytes of the regular file *path* (absolute, under the host root), or None when it is
    missing, not a regular file, behind an untrusted symlink, unreadable or over *limit*, or
    (*owner* given) not owned by that uid: a rootless container's state is its user's, and a
    file of anyone else's there is not read (it could be root's, planted by a link)."""
    try:
        fd = _open_under(path, root or host_root())
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not _st.S_ISREG(st.st_mode) or st.st_size > limit or (owner is not None and st.st_uid != owner):
            return None
        chunks: List[bytes] = []
        got = 0
        while got <= limit:
            b = os.read(fd, min(1 << 20, limit + 1 - got))
            if not b:
                break
            chunks.append(b)
            got += len(b)
        if got > limit:
            return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_json(path: str, limit: int = LIMIT_CONFIG, root: Optional[str] = None,
              owner: Optional[int] = None) -> Any:
    """The JSON value of the file *path* (:func:`read_bounded`), or None when it is not JSON."""
    data = read_bounded(path, limit, root, owner)
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None


def _s(v: Any) -> Optional[str]:
    """A state string, type-checked and clipped (None for anything else or empty)."""
    if isinstance(v, str) and v:
        return v[:MAX_FIELD]
    return None


#: where each runtime keeps a container's OCI bundle config.json (the runtime spec handed to
#: runc/crun), relative to the host root; {id} is a 64-hex id, {ns} a containerd namespace
BUNDLES = {
    # podman/CRI-O (containers/storage): the container's "userdata" directory (libpod
    # container_internal.go: c.bundlePath() = the storage container's RunDir (root: under
    # /run/containers/storage) -- the spec is also saved in the static dir's userdata
    "podman": ("/run/containers/storage/overlay-containers/{id}/userdata/config.json",
               "/var/lib/containers/storage/overlay-containers/{id}/userdata/config.json"),
    "cri-o": ("/run/containers/storage/overlay-containers/{id}/userdata/config.json",
              "/var/lib/containers/storage/overlay-containers/{id}/userdata/config.json"),
    # containerd's runtime v2 shim bundle: /run/containerd/io.containerd.runtime.v2.task/NS/ID
    # (containerd core/runtime/v2/bundle.go NewBundle); namespace k8s.io for CRI, moby for
    # Docker (dockerd's own containerd: /run/docker/containerd/daemon/...)
    "containerd": ("/run/containerd/io.containerd.runtime.v2.task/{ns}/{id}/config.json",),
    "docker": ("/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/{id}/config.json",
               "/run/containerd/io.containerd.runtime.v2.task/moby/{id}/config.json"),
}


def bundle_paths(c: Dict[str, Any]) -> List[str]:
    """The candidate config.json paths of container *c* (from :func:`from_cgroup`), in order."""
    rt, cid = c.get("runtime"), c.get("id")
    if not isinstance(cid, str) or not re.fullmatch(r"[0-9a-f]{64}", cid):
        return []
    if c.get("rootless"):
        # the user's own storage, as its conmon named it (CONMON; read only when the user owns it)
        bdir = c.get("bundle_dir")
        if not isinstance(bdir, str):
            return []
        m = _STORAGE_USERDATA.fullmatch(bdir)
        return [bdir + "/config.json"] if m and m.group("id") == cid else []
    if rt == "containerd" or (rt == "cri" and c.get("pod_uid")):
        nss = [c["namespace_containerd"]] if c.get("namespace_containerd") else ["k8s.io", "default", "moby"]
        out = [BUNDLES["containerd"][0].format(ns=ns, id=cid) for ns in nss]
        if rt == "cri":
            out += [p.format(id=cid) for p in BUNDLES["cri-o"]]
        return out
    return [p.format(id=cid) for p in BUNDLES.get(str(rt), ())]


def _state_owner(c: Dict[str, Any]) -> Optional[int]:
    """Whose files a rootless container's state must be (its conmon's host uid), or None for a
    rootful one (a runtime directory under the host root, trusted by its place)."""
    if not c.get("rootless"):
        return None
    u = c.get("owner_uid")
    return u if isinstance(u, int) and not isinstance(u, bool) and u > 0 else -1


def bundle_config(c: Dict[str, Any], root: Optional[str] = None) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(path, parsed OCI runtime config) of container *c*'s bundle, the first candidate of
    :func:`bundle_paths` that is a JSON object, or None."""
    owner = _state_owner(c)
    for path in bundle_paths(c):
        cfg = read_json(path, LIMIT_CONFIG, root, owner)
        if isinstance(cfg, dict):
            return path, cfg
    return None


def oci_annotations(cfg: Any) -> Dict[str, str]:
    """The ``annotations`` of an OCI config (string values only, clipped)."""
    ann = cfg.get("annotations") if isinstance(cfg, dict) else None
    if not isinstance(ann, dict):
        return {}
    out: Dict[str, str] = {}
    for k, v in list(ann.items())[:1024]:
        if isinstance(k, str) and isinstance(v, str):
            out[k[:MAX_FIELD]] = v[:4096]
    return out


def oci_rlimits(cfg: Any) -> Dict[str, Tuple[Optional[int], Optional[int]]]:
    """``process.rlimits`` of an OCI config: {"RLIMIT_CORE": (soft, hard), ...}; None for
    unlimited (the spec's 2**64-1, or -1 as some tools write)."""
    proc = cfg.get("process") if isinstance(cfg, dict) else None
    rl = proc.get("rlimits") if isinstance(proc, dict) else None
    out: Dict[str, Tuple[Optional[int], Optional[int]]] = {}
    if not isinstance(rl, list):
        return out

    def val(v: Any) -> Optional[int]:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= (1 << 64) - 1:
            return None
        return v

    for r in rl[:64]:
        if isinstance(r, dict) and isinstance(r.get("type"), str) and r["type"].startswith("RLIMIT_"):
            out[r["type"][:32]] = (val(r.get("soft")), val(r.get("hard")))
    return out


#: annotation keys that name a Kubernetes container, per CRI runtime
#: (containerd pkg/cri/annotations/annotations.go: io.kubernetes.cri.*;
#:  cri-o pkg/annotations (k8s.io/cri-api): io.kubernetes.pod.name, io.kubernetes.container.name)
_K8S_KEYS = {
    "name": ("io.kubernetes.cri.container-name", "io.kubernetes.container.name"),
    "pod": ("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"),
    "namespace": ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"),
    "image": ("io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName"),
    "pod_uid": ("io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"),
}


def _from_annotations(c: Dict[str, Any], ann: Dict[str, str]) -> None:
    for field, keys in _K8S_KEYS.items():
        for k in keys:
            if ann.get(k) and not c.get(field):
                c[field] = ann[k][:MAX_FIELD]
    if c.get("runtime") == "cri":
        if any(k.startswith("io.kubernetes.cri-o.") for k in ann):
            c["runtime"] = "cri-o"
        elif any(k.startswith("io.kubernetes.cri.") for k in ann):
            c["runtime"] = "containerd"
    if ann.get("io.kubernetes.cri.container-type") == "sandbox" and not c.get("name"):
        c["name"] = "POD"
    if c.get("runtime") == "cri-o" and not c.get("name"):
        c["name"] = _s(ann.get("io.kubernetes.cri-o.Name"))


ROOT_STORE = "/var/lib/containers/storage/overlay-containers"


def _storage_containers(root: Optional[str], cache: Dict[str, Any], store: str = ROOT_STORE,
                        owner: Optional[int] = None) -> Dict[str, Dict[str, Any]]:
    """containers/storage's containers.json (podman, CRI-O) in *store*: {id: entry}, read once."""
    key = f"storage:{root or host_root()}:{store}:{owner}"
    if key not in cache:
        out: Dict[str, Dict[str, Any]] = {}
        data = read_json(store + "/containers.json", LIMIT_LIST, root, owner)
        if isinstance(data, list):
            for e in data[:100000]:
                if isinstance(e, dict) and isinstance(e.get("id"), str):
                    out[e["id"]] = e
        cache[key] = out
    return cache[key]


def _podman(c: Dict[str, Any], root: Optional[str], cache: Dict[str, Any]) -> None:
    store = ROOT_STORE
    if c.get("rootless"):  # the user's store, beside the bundle its conmon named
        m = _STORAGE_USERDATA.fullmatch(str(c.get("bundle_dir") or ""))
        if m is None:
            return
        store = m.group("store")
    path = store + "/containers.json"
    e = _storage_containers(root, cache, store, _state_owner(c)).get(c["id"])
    if e is None:
        return
    names = e.get("names")
    if isinstance(names, list) and names and not c.get("name"):
        c["name"] = _s(names[0])
    meta = e.get("metadata")
    if isinstance(meta, str) and len(meta) < 65536:
        try:
            m = json.loads(meta)
        except (ValueError, RecursionError):
            m = None
        if isinstance(m, dict):
            c["name"] = c.get("name") or _s(m.get("name"))
            c["image"] = c.get("image") or _s(m.get("image-name"))
            # CRI-O keeps the pod's facts in the same storage metadata
            c["pod"] = c.get("pod") or _s(m.get("pod-name"))
    if not c.get("image") and _s(e.get("image")):
        c["image"] = _s(e.get("image"))
    c["state"].append(path)


def _docker(c: Dict[str, Any], root: Optional[str]) -> None:
    """moby's container config (daemon/container.go: /var/lib/docker/containers/ID/config.v2.json):
    ``Name`` ("/name"), ``Config.Image``."""
    path = f"/var/lib/docker/containers/{c['id']}/config.v2.json"
    cfg = read_json(path, LIMIT_CONFIG, root)
    if not isinstance(cfg, dict):
        return
    name = _s(cfg.get("Name"))
    if name and not c.get("name"):
        c["name"] = name.lstrip("/") or None
    conf = cfg.get("Config")
    if isinstance(conf, dict) and not c.get("image"):
        c["image"] = _s(conf.get("Image"))
    if not c.get("image"):
        c["image"] = _s(cfg.get("Image"))
    c["state"].append(path)


def _nspawn(c: Dict[str, Any], root: Optional[str]) -> None:
    """machined's record (src/machine/machine.c machine_save(): /run/systemd/machines/NAME,
    KEY=VALUE lines: NAME=, ROOT=, CLASS=, LEADER=, SERVICE=, SCOPE=)."""
    name = c.get("name")
    if not isinstance(name, str) or "/" in name or name in (".", ".."):
        return
    path = f"/run/systemd/machines/{name}"
    data = read_bounded(path, 65536, root)
    if data is None:
        return
    kv = {}
    for line in data.decode("utf-8", "replace").split("\n")[:256]:
        k, sep, v = line.partition("=")
        if sep:
            kv[k] = v
    c["image"] = c.get("image") or _s(kv.get("ROOT")) or _s(kv.get("IMAGE"))
    c["state"].append(path)


def complete(c: Optional[Dict[str, Any]], root: Optional[str] = None,
             cache: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """Fill *c* (from :func:`from_cgroup`) with the name, image and pod the runtime's state
    says (in place; returned). *cache* is shared across the processes of one snapshot."""
    if c is None:
        return None
    cache = {} if cache is None else cache
    key = f"{c.get('runtime')}:{c.get('id')}:{c.get('pod_uid')}"
    if key in cache:
        done = cache[key]
        for k, v in done.items():
            if k not in ("cgroup",):
                c[k] = v if not isinstance(v, list) else list(v)
        return c
    rt = c.get("runtime")
    try:
        if rt in ("podman", "cri-o", "containerd", "docker", "cri"):
            b = bundle_config(c, root)
            if b is not None:
                c["bundle"] = b[0]
                _from_annotations(c, oci_annotations(b[1]))
                if rt == "podman" and not c.get("name"):
                    # podman's spec annotation (libpod/define/annotations.go)
                    c["name"] = _s(oci_annotations(b[1]).get("io.podman.annotations.name"))
            if c.get("runtime") in ("podman", "cri-o") and c.get("id"):
                _podman(c, root, cache)
            if c.get("runtime") == "docker" and c.get("id"):
                _docker(c, root)
        elif rt == "systemd-nspawn":
            _nspawn(c, root)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        pass  # hostile or half-written state: the identity from the cgroup stands
    cache[key] = {k: v for k, v in c.items()}
    return c


def identify(cgroup_text: str, root: Optional[str] = None,
             cache: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The container of a process with this /proc/PID/cgroup text, its name and image filled
    from the runtime's state; None on the host."""
    return complete(from_cgroup(cgroup_text), root, cache)


def matches(c: Any, word: str) -> bool:
    """Does selector *word* name container *c*: its name, its full id, or an id prefix of at
    least 12 hex digits (the short id ``podman ps``/``docker ps`` print)."""
    if not isinstance(c, dict) or not word:
        return False
    if word in (c.get("name"), c.get("id")):
        return True
    cid = c.get("id")
    return (isinstance(cid, str) and len(word) >= 12 and re.fullmatch(r"[0-9a-f]+", word) is not None
            and cid.startswith(word))


def label(c: Any) -> str:
    """A short phrase naming container *c* for a text report: ``podman container web
    (3f2a1b9c0d4e)``, ``pod default/api container app (containerd)``; "" on the host."""
    if not isinstance(c, dict) or not c.get("runtime"):
        return ""
    v = c.get("id")
    cid: str = v if isinstance(v, str) else ""
    short = cid[:12] if re.fullmatch(r"[0-9a-f]{64}", cid) else ""
    n = c.get("name")
    name: Optional[str] = n[:LABEL_NAME] if isinstance(n, str) else None
    if c.get("pod"):
        ns = f"{str(c['namespace'])[:LABEL_NAME]}/" if c.get("namespace") else ""
        return f"pod {ns}{str(c['pod'])[:LABEL_NAME]} container {name or short or '?'} ({str(c['runtime'])[:16]})"
    rt = str(c["runtime"])[:16]
    what = {"systemd-nspawn": "machine", "lxc": "LXC container"}.get(rt, f"{rt} container")
    tail = ""
    if c.get("rootless") is True:
        u = c.get("owner_uid")
        what = "rootless " + what
        tail = f" of uid {u}" if isinstance(u, int) and not isinstance(u, bool) else ""
    if name and short:
        return f"{what} {name} ({short}){tail}"
    return f"{what} {name or short or cid[:LABEL_NAME]}{tail}"


# --- systemd-nspawn without machined: the leader process ------------------------------------

#: How an nspawn machine is known when no machined registered it (``--register=no``, or no
#: systemd as the host's PID 1: no machine-NAME.scope) and its cgroup is only
#: ``<nspawn's own cgroup>/payload/...`` (with ``--keep-unit``: nspawn itself in ``.../supervisor``).
#: One row per fact, each with its source in systemd (src/nspawn).
NSPAWN_LEADER = [
    {"fact": "the payload's init is a child of the systemd-nspawn process, in a new pid namespace",
     "source": "systemd src/nspawn/nspawn.c run_container(): the inner child is cloned with CLONE_PARENT "
               "and CLONE_NEWPID from the outer child, so its parent is systemd-nspawn itself"},
    {"fact": "the machine's name: -M/--machine=, else the last component of -D/--directory= (or of "
             "-i/--image= without its suffix)",
     "source": "systemd src/nspawn/nspawn.c parse_argv() ('M', ARG_MACHINE), determine_names()"},
    {"fact": "the payload's init gets container=systemd-nspawn and container_uuid=<32 hex> in its environ",
     "source": "systemd src/nspawn/nspawn.c inner_child(): envp \"container=systemd-nspawn\", "
               "\"container_uuid=\" SD_ID128_FORMAT_STR"},
    {"fact": "without a scope of its own the payload runs in the 'payload' subcgroup of nspawn's cgroup, "
             "nspawn in 'supervisor'",
     "source": "systemd src/nspawn/nspawn-cgroup.c create_subcgroup()"},
]

_NSPAWN_BIN = "systemd-nspawn"


#: nspawn's options that take a value (src/nspawn/nspawn.c parse_argv(): the getopt string
#: "+hD:u:abL:M:jS:Z:qi:xp:nUE:P" and the long options with required_argument), so that an
#: option's value is not taken for the payload's command line
_NSPAWN_SHORT_ARG = "DuLMSZipE"
_NSPAWN_LONG_ARG = frozenset((
    "directory", "template", "user", "machine", "slice", "image", "uuid", "bind", "bind-ro", "tmpfs",
    "overlay", "overlay-ro", "setenv", "port", "private-users", "register", "capability",
    "drop-capability", "property", "link-journal", "selinux-context", "selinux-apifs-context", "chdir",
    "pivot-root", "kill-signal", "settings", "notify-ready", "rlimit", "hostname", "resolv-conf",
    "timezone", "console", "personality", "oci-bundle", "network-interface", "network-macvlan",
    "network-ipvlan", "network-veth-extra", "network-bridge", "network-zone", "network-namespace-path",
    "private-users-ownership", "bind-user", "system-call-filter", "cpu-affinity", "oom-score-adjust",
    "inaccessible", "load-credential", "set-credential", "no-new-privileges", "root-hash",
    "root-hash-sig", "verity-data", "kill-signal", "image-policy", "private-network-interface",
    "background", "suppress-sync", "link-journal"))


def _opt(argv: List[str], short: str, long: str) -> Optional[str]:
    """The value of option -S VALUE / -SVALUE / --long=VALUE / --long VALUE in nspawn's *argv*
    (the last one given wins, as getopt_long leaves it); the first word that is neither an
    option nor an option's value starts the payload's command line (getopt's '+')."""
    val = None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--" or not a.startswith("-") or a == "-":
            break
        if a.startswith("--"):
            k, eq, v = a[2:].partition("=")
            if eq:
                val = v if k == long else val
            elif k in _NSPAWN_LONG_ARG:
                if k == long and i + 1 < len(argv):
                    val = argv[i + 1]
                i += 1
            i += 1
            continue
        j = 1  # a cluster of short options: -bM name, -Mname
        while j < len(a):
            ch = a[j]
            if ch in _NSPAWN_SHORT_ARG:
                rest = a[j + 1:]
                if not rest:
                    i += 1
                    rest = argv[i] if i < len(argv) else ""
                if ch == short:
                    val = rest
                break
            j += 1
        i += 1
    return val


def nspawn_from_leader(argv: List[str], init_environ: List[str], leader: int,
                       cgroup: Optional[str] = None) -> Dict[str, Any]:
    """The ``container`` of a process of an nspawn machine from its leader's *argv* (the
    systemd-nspawn process) and the environ of the machine's init (pure; :data:`NSPAWN_LEADER`).
    The environ is the payload's: only a well-formed ``container_uuid`` is taken from it."""
    name = _opt(argv, "M", "machine")
    directory = _opt(argv, "D", "directory")
    image = _opt(argv, "i", "image")
    if not name:
        base = directory or image or ""
        base = base.rstrip("/").rsplit("/", 1)[-1]
        if image and not directory:
            base = re.sub(r"\.raw$", "", base)
        name = base or None
    uuid = None
    if "container=systemd-nspawn" in init_environ:
        for e in init_environ:
            m = re.fullmatch(r"container_uuid=([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}"
                             r"-[0-9a-f]{12})", e)
            if m:
                uuid = m.group(1).replace("-", "")
    name = _s(name)
    return {"runtime": "systemd-nspawn", "id": name, "name": name, "image": _s(directory) or _s(image),
            "pod": None, "namespace": None, "pod_uid": None, "qos": None, "driver": None,
            "cgroup": cgroup[:4096] if isinstance(cgroup, str) else None, "bundle": None,
            "state": [f"/proc/{leader}/cmdline"], "format": "nspawn-leader", "uuid": uuid, "leader": leader}


def _proc_read(pid: int, what: str, limit: int = 65536) -> Optional[bytes]:
    try:
        fd = os.open(f"/proc/{pid}/{what}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _ppid(pid: int) -> Optional[int]:
    data = _proc_read(pid, "stat", 4096)
    if not data:
        return None
    try:
        return int(data[data.rindex(b")") + 2:].split()[1])
    except (ValueError, IndexError):
        return None


def _trusted_nspawn(pid: int) -> bool:
    """*pid* runs the real systemd-nspawn: its executable is a root-owned file named so, in a
    directory no one but root may change, and it runs as root (a user may name a program
    ``systemd-nspawn``, or give its own one that comm)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        if exe.rsplit("/", 1)[-1] != _NSPAWN_BIN:
            return False
        st, dst = os.stat(exe), os.stat(os.path.dirname(exe) or "/")
        return (st.st_uid == 0 and not st.st_mode & 0o022 and _trusted_dir(dst)
                and os.stat(f"/proc/{pid}").st_uid == 0)
    except OSError:
        return False


def _nul_fields(pid: int, name: str) -> List[str]:
    """/proc/PID/cmdline or environ split at its NULs (a trailing NUL leaves a last ""), decoded
    with replacement: the one reading of argv and environ for the monitor rows."""
    return [a.decode("utf-8", "replace") for a in (_proc_read(pid, name) or b"").split(b"\0")]


def nspawn_of(pid: int, cgroup: Optional[str] = None,
              cache: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The nspawn machine *pid* runs in, found through its ancestors: the one whose parent is a
    (trusted) systemd-nspawn is the machine's init (:data:`NSPAWN_LEADER`). None when no
    ancestor is; read once per pid namespace (*cache*)."""
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
    cache = {} if cache is None else cache
    key = "nspawn:" + ns
    if key not in cache:
        found = None
        cur = pid
        for _ in range(64):
            pp = _ppid(cur)
            if pp is None or pp <= 1:
                break
            if _trusted_nspawn(pp):
                argv = _nul_fields(pp, "cmdline")
                env = _nul_fields(cur, "environ")
                if argv and argv[-1] == "":
                    argv.pop()  # cmdline ends with a NUL
                found = nspawn_from_leader(argv[:256], env[:1024], pp)
                break
            cur = pp
        cache[key] = found
    got = cache[key]
    if got is None:
        return None
    return dict(got, state=list(got["state"]), cgroup=cgroup[:4096] if isinstance(cgroup, str) else got["cgroup"])


# --- podman/CRI-O without a container cgroup: the conmon process ---------------------------

#: How a container is known from its monitor when its cgroup names none (rootless podman on a
#: cgroup-v1 host, ``--cgroups=disabled``: the container's processes sit in cgroup ``/`` or the
#: user's own). One row per fact, each with its source; :func:`conmon_from_argv` reads them.
CONMON = [
    {"fact": "a container's init is a child of its conmon (conmon is the subreaper of the runtime it "
             "starts); an exec session's process is a child of that session's conmon",
     "source": "containers/conmon src/conmon.c main(): prctl(PR_SET_CHILD_SUBREAPER) before it forks "
               "the runtime (runc create), so the container's init is re-parented to conmon"},
    {"fact": "-c/--cid ID: the container's id; -n/--name NAME: its name; -u/--cuuid: its UUID "
             "(podman: the id again); -b/--bundle DIR: the OCI bundle (config.json); -r/--runtime: "
             "the OCI runtime binary; --exit-dir DIR: where conmon writes the exit file",
     "source": "containers/conmon src/cli.c opt_entries (GOption: --opt VALUE, --opt=VALUE, -o VALUE, "
               "-oVALUE; options anywhere until '--'), v2.1.6 to 2.2"},
    {"fact": "podman passes --exit-command /usr/bin/podman (container cleanup) and its own paths: "
             "rootful bundle /var/lib/containers/storage/<driver>-containers/ID/userdata, rootless "
             "~/.local/share/containers/storage/<driver>-containers/ID/userdata and the run root "
             "$XDG_RUNTIME_DIR/containers; CRI-O's exit dir is /var/run/crio/exits",
     "source": "podman libpod/oci_conmon_linux.go sharedConmonArgs() (argv as podman 4.3 passes it); "
               "storage.conf(5) graphroot/runroot and rootless_storage_path; crio.conf(5) "
               "container_exits_dir"},
    {"fact": "rootless: the conmon runs as a user other than root (in that user's namespace): the "
             "container and its state belong to that user, who can name it anything; only a conmon "
             "running as root can name a rootful container",
     "source": "podman rootless.md / podman(1) 'Rootless mode'; user_namespaces(7)"},
]

_CONMON_BIN = "conmon"
#: conmon's options that take a value (src/cli.c opt_entries with G_OPTION_ARG_STRING,
#: _STRING_ARRAY, _INT, _INT64), so that a value is never taken for an option
_CONMON_SHORT_ARG = "bcPpulnr0T"
_CONMON_LONG_ARG = frozenset((
    "bundle", "cid", "conmon-pidfile", "container-pidfile", "cuuid", "exec-process-spec", "exit-command",
    "exit-command-arg", "exit-delay", "exit-dir", "log-level", "log-path", "log-size-max",
    "log-global-size-max", "log-tag", "log-label", "name", "persist-dir", "pidfile", "restore", "restore-arg",
    "runtime", "runtime-arg", "runtime-opt", "sdnotify-socket", "socket-dir-path", "timeout", "log-max-files",
    "log-allowlist-dir"))
#: the conmon options read, short -> long
_CONMON_WANT = {"c": "cid", "n": "name", "b": "bundle", "r": "runtime", "u": "cuuid"}
_CONMON_LONG_WANT = frozenset(_CONMON_WANT.values()) | {"exit-dir", "exit-command"}
#: a containers/storage container directory: <graphroot>/<driver>-containers/<id>/userdata
_STORAGE_USERDATA = re.compile(r"(?P<store>/(?:[^/\0]+/)*(?:overlay|vfs|btrfs|zfs|aufs|devmapper)-containers)"
                               r"/(?P<id>[0-9a-f]{64})/userdata")


def _conmon_opts(argv: List[str]) -> Dict[str, str]:
    """The options of conmon's *argv* that :data:`_CONMON_LONG_WANT` names, as GOption parses
    them: anywhere on the line until ``--``; the last one given wins."""
    out: Dict[str, str] = {}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--":
            break
        if a.startswith("--"):
            k, eq, v = a[2:].partition("=")
            if not eq and k in _CONMON_LONG_ARG:
                i += 1
                if i >= len(argv):
                    break
                v = argv[i]
            if (eq or k in _CONMON_LONG_ARG) and k in _CONMON_LONG_WANT:
                out[k] = v
        elif a.startswith("-") and len(a) > 1:
            j = 1  # a cluster of short options: -tc ID, -cID
            while j < len(a):
                ch = a[j]
                if ch in _CONMON_SHORT_ARG:
                    rest = a[j + 1:]
                    if not rest:
                        i += 1
                        if i >= len(argv):
                            break
                        rest = argv[i]
                    if ch in _CONMON_WANT:
                        out[_CONMON_WANT[ch]] = rest
                    break
                j += 1
        i += 1
    return out


def conmon_from_argv(argv: List[str], conmon: int, uid: Optional[int], userns_is_host: Optional[bool],
                     cgroup: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The ``container`` named by a (trusted) conmon's *argv* (pure; :data:`CONMON`): its id,
    name, bundle, runtime, and whether it is rootless -- *uid*, the conmon's real uid on the
    host, is not 0, or it runs in a user namespace other than the host's (*userns_is_host*
    False). None when the argv names no container id (64 hex)."""
    o = _conmon_opts(argv[:4096])
    cid = o.get("cid")
    if not isinstance(cid, str) or not re.fullmatch(r"[0-9a-f]{64}", cid):
        return None
    rootless = uid != 0 or userns_is_host is False
    bundle = o.get("bundle")
    bdir = None
    if isinstance(bundle, str):
        m = _STORAGE_USERDATA.fullmatch(bundle.rstrip("/"))
        if m and m.group("id") == cid and not any(p in (".", "..") for p in bundle.split("/")):
            bdir = bundle.rstrip("/")
    exit_dir = o.get("exit-dir") or ""
    cmd = o.get("exit-command") or ""
    runtime = "cri-o" if "crio" in exit_dir.split("/") and cmd.rsplit("/", 1)[-1] != "podman" else "podman"
    cu = o.get("cuuid")
    return {"runtime": runtime, "id": cid, "name": _s(o.get("name")), "image": None, "pod": None,
            "namespace": None, "pod_uid": None, "qos": None, "driver": None,
            "cgroup": cgroup[:4096] if isinstance(cgroup, str) else None, "bundle": None,
            "state": [f"/proc/{conmon}/cmdline"], "format": "conmon", "rootless": rootless,
            "owner_uid": uid, "conmon": conmon, "bundle_dir": bdir,
            "cuuid": cu if isinstance(cu, str) and re.fullmatch(r"[0-9a-f-]{32,64}", cu) else None,
            "runtime_path": _s(o.get("runtime")), "exit_dir": _s(exit_dir)}


def _trusted_exe(pid: int, name: str) -> bool:
    """*pid* runs the host's real *name*: the file /proc/PID/exe is is the host's file at the
    path it names (the same inode: a bind mount in the process's own mount namespace does not
    pass), root-owned, not group/world-writable, in a directory only root may change."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        if exe.rsplit("/", 1)[-1] != name or not exe.startswith("/"):
            return False
        run, st = os.stat(f"/proc/{pid}/exe"), os.stat(exe)
        dst = os.stat(os.path.dirname(exe) or "/")
        return ((run.st_dev, run.st_ino) == (st.st_dev, st.st_ino) and st.st_uid == 0
                and not st.st_mode & 0o022 and _trusted_dir(dst))
    except OSError:
        return False


def _status_uid(pid: int) -> Optional[int]:
    data = _proc_read(pid, "status", 8192)
    for line in (data or b"").split(b"\n"):
        if line.startswith(b"Uid:"):
            try:
                return int(line.split()[1])
            except (ValueError, IndexError):
                return None
    return None


def conmon_of(pid: int, cgroup: Optional[str] = None,
              cache: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The podman (or CRI-O) container *pid* runs in, found through its ancestors: the nearest
    one that is a trusted conmon (:func:`_trusted_exe`) names it (:func:`conmon_from_argv`).
    None when none is; read once per pid and mount namespace (*cache*)."""
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid") + os.readlink(f"/proc/{pid}/ns/mnt")
        host_user = os.readlink("/proc/self/ns/user")
    except OSError:
        return None
    cache = {} if cache is None else cache
    key = "conmon:" + ns
    if key not in cache:
        found = None
        cur = pid
        for _ in range(64):
            pp = _ppid(cur)
            if pp is None or pp <= 1:
                break
            if _trusted_exe(pp, _CONMON_BIN):
                argv = _nul_fields(pp, "cmdline")
                if argv and argv[-1] == "":
                    argv.pop()
                try:
                    user_host: Optional[bool] = os.readlink(f"/proc/{pp}/ns/user") == host_user
                except OSError:
                    user_host = None
                found = conmon_from_argv(argv, pp, _status_uid(pp), user_host)
                break
            cur = pp
        cache[key] = found
    got = cache[key]
    if got is None:
        return None
    return dict(got, state=list(got["state"]), cgroup=cgroup[:4096] if isinstance(cgroup, str) else got["cgroup"])


def add_monitor(c: Optional[Dict[str, Any]], pid: int, cgroup: Optional[str],
                cache: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The container of *pid* from its ancestors when its cgroup named none (*c* None): an nspawn
    machine's leader (:data:`NSPAWN_LEADER`), else a conmon (:data:`CONMON`); a podman container
    its cgroup named gains what its conmon says (rootless, the owner, the bundle) when the
    conmon names the same id, and a podman/CRI-O container on fuse-overlayfs the upper layer
    (``fuse_overlay``, :data:`FUSE_OVERLAY`). Live processes only (the caller's /proc)."""
    if c is None:
        c = nspawn_of(pid, cgroup, cache) or conmon_of(pid, cgroup, cache)
    elif c.get("runtime") == "podman" and c.get("format") != "conmon":
        m = conmon_of(pid, cgroup, cache)
        if m is not None and m.get("id") == c.get("id"):
            for k in ("rootless", "owner_uid", "conmon", "bundle_dir", "cuuid", "runtime_path", "exit_dir"):
                c[k] = m[k]
    if c is not None and c.get("runtime") in ("podman", "cri-o"):
        # a fuse-overlayfs root: its upper layer from the serving process (FUSE_OVERLAY)
        key = f"fuse:{c.get('id')}"
        if key not in cache:
            try:
                cache[key] = fuse_overlay_of(pid, c, cache)
            except (OSError, ValueError):
                cache[key] = None
        if cache[key] is not None:
            c["fuse_overlay"] = dict(cache[key])
    return c


# --- fuse-overlayfs: the upper layer is in the serving process's argv -----------------------

#: How the host path of a fuse-overlayfs root is known: the container's root mount is
#: ``fuse.fuse-overlayfs`` (no upperdir= in its options, unlike the kernel's overlay), served by
#: a fuse-overlayfs process whose argv names the layers and the mount point.
FUSE_OVERLAY = [
    {"fact": "the storage driver runs its mount_program as 'PROGRAM -o lowerdir=...,upperdir=...,"
             "workdir=... MERGED' and the container's root is MERGED",
     "source": "containers/storage drivers/overlay/overlay.go (mount_program: mountProgram + '-o' + "
               "opts + mountTarget); storage.conf(5) mount_program; fuse-overlayfs(1) SYNOPSIS"},
    {"fact": "the process serving the container's root mount is the one whose mount namespace has a "
             "fuse.fuse-overlayfs mount of the same device (major:minor) at the MERGED its argv names",
     "source": "proc(5) /proc/PID/mountinfo (field 3: the device of the filesystem, one per FUSE "
               "connection; field 5: the mount point)"},
    {"fact": "a new file is created in the upper directory (fuse-overlayfs copies up like overlayfs); "
             "only an upperdir the fuse-overlayfs process's own user owns is taken",
     "source": "fuse-overlayfs(1) DESCRIPTION; containers/fuse-overlayfs main.c ovl_create()"},
]
FUSE_FSTYPE = "fuse.fuse-overlayfs"
_FUSE_BIN = "fuse-overlayfs"


def fuse_args(argv: List[str]) -> Tuple[Dict[str, str], Optional[str]]:
    """(the ``-o`` options, the mount point) of a fuse-overlayfs *argv* (pure): every ``-o A,B``
    / ``-oA,B`` joined (the last one of a key wins), the mount point the last word that is
    neither an option nor an option's value."""
    opts: Dict[str, str] = {}
    mnt: Optional[str] = None
    i = 1
    while i < len(argv) and i < 4096:
        a = argv[i]
        val: Optional[str] = None
        if a == "-o":
            i += 1
            val = argv[i] if i < len(argv) else ""
        elif a.startswith("-o"):
            val = a[2:]
        elif a.startswith("-"):
            pass          # -f, -d, --debug: no value
        else:
            mnt = a
        if val is not None:
            for o in val[:65536].split(","):
                k, eq, v = o.partition("=")
                if k:
                    opts[k] = v if eq else ""
        i += 1
    return opts, mnt


def _root_mount(pid: int) -> Optional[Dict[str, Any]]:
    """The topmost mount at ``/`` in *pid*'s mount table."""
    from coredoctor.snapshot import mounts as M
    data = _proc_read(pid, "mountinfo", 1 << 20)
    ms = [m for m in M.parse_mountinfo((data or b"").decode("utf-8", "replace")) if m["mountpoint"] == "/"]
    if not ms:
        return None
    ids = {m["parent"] for m in ms}
    top = [m for m in ms if m["id"] not in ids]
    return (top or ms)[-1]


def _owned_dir(path: str, uid: int) -> bool:
    """Is *path* a directory owned by *uid*, reached without an untrusted symlink?"""
    try:
        fd = _open_under(path, "/")
    except (OSError, ValueError):
        return False
    try:
        st = os.fstat(fd)
        return _st.S_ISDIR(st.st_mode) and st.st_uid == uid
    finally:
        os.close(fd)


def fuse_overlay_of(pid: int, c: Dict[str, Any], cache: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The upper layer of *pid*'s root when it is a fuse-overlayfs mount (:data:`FUSE_OVERLAY`):
    ``{"dev", "merged", "upperdir", "pid", "state"}``, or None (another root, or no trusted
    fuse-overlayfs of the container's owner serves it)."""
    root = _root_mount(pid)
    if root is None or root.get("fstype") != FUSE_FSTYPE:
        return None
    owner = c.get("owner_uid") if c.get("rootless") else 0
    if not isinstance(owner, int) or isinstance(owner, bool):
        return None
    if "fuse-procs" not in cache:
        from coredoctor.snapshot import proc as procmod
        cache["fuse-procs"] = [p for p, comm in procmod.comms().items() if comm == _FUSE_BIN]
    for fp in cache["fuse-procs"][:256]:
        if _status_uid(fp) != owner or not _trusted_exe(fp, _FUSE_BIN):
            continue
        argv = _nul_fields(fp, "cmdline")
        if argv and argv[-1] == "":
            argv.pop()
        opts, merged = fuse_args(argv)
        upper = opts.get("upperdir")
        if not merged or not upper or not upper.startswith("/") or ".." in upper.split("/"):
            continue
        from coredoctor.snapshot import mounts as M
        data = _proc_read(fp, "mountinfo", 1 << 20)
        if not any(m["dev"] == root["dev"] and m["mountpoint"] == merged and m["fstype"] == FUSE_FSTYPE
                   for m in M.parse_mountinfo((data or b"").decode("utf-8", "replace"))):
            continue
        if not _owned_dir(upper, owner):
            continue
        return {"dev": root["dev"], "merged": merged[:4096], "upperdir": upper[:4096], "pid": fp,
                "state": f"/proc/{fp}/cmdline"}
    return None
