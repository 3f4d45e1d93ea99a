"""
What the container runtime set: RLIMIT_CORE and removal at exit
---------------------------------------------------------------
For each target in a container (``processes[].container``, :mod:`coredoctor.snapshot.containers`)
the snapshot keeps what its runtime decided, read with that module's bounded readers (never a
second parser of the OCI config): the bundle's ``process.rlimits`` RLIMIT_CORE (``podman run
--ulimit core=``, ``docker run --ulimit core=``, or the runtime's default) and whether the
container is removed when it exits (``--rm``). And, once per snapshot, the runtime-wide
defaults that set RLIMIT_CORE, as file:line records (:data:`DEFAULTS`, each row citing the
runtime's documentation). The origin finder :mod:`coredoctor.origin.containers` reads both.

Snapshot shape (coredoctor.snapshot/1, additive)::

    processes[].container_spec = {"bundle": path | null, "rlimit_core": [soft, hard] | null
                                  (null: the spec sets none; a null inside: unlimited),
                                  "autoremove": bool | null, "autoremove_from": text | null}
    runtime_defaults = [{"runtime", "file", "line", "text", "core": [soft, hard] | null}, ...]
"""

import glob
import json
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

from coredoctor.snapshot import containers as C

__all__ = ["DEFAULTS", "FORWARD_MARKERS", "spec_of", "read_defaults", "read", "parse_ulimit", "handler_facts"]

#: runtime -> (the files, in the order the runtime reads them, and the setting; source)
DEFAULTS: Dict[str, Tuple[Tuple[str, ...], str, str]] = {
    "podman": (("/usr/share/containers/containers.conf", "/etc/containers/containers.conf",
                "/etc/containers/containers.conf.d/*.conf"), "default_ulimits",
               "containers.conf(5) [containers] default_ulimits = [\"core=SOFT:HARD\"]"),
    "docker": (("/etc/docker/daemon.json",), "default-ulimits",
               "dockerd(8) --default-ulimit core=SOFT:HARD; daemon.json \"default-ulimits\": "
               "{\"core\": {\"Name\": \"core\", \"Soft\": N, \"Hard\": N}}"),
    "cri-o": (("/etc/crio/crio.conf", "/etc/crio/crio.conf.d/*.conf"), "default_ulimits",
              "crio.conf(5) [crio.runtime] default_ulimits = [\"core=SOFT:HARD\"]"),
    "containerd": (("/etc/containerd/config.toml",), "base_runtime_spec",
                   "containerd docs/cri/config.md: [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes."
                   "runc] base_runtime_spec = \"/etc/containerd/cri-base.json\" (its process.rlimits)"),
}
_RUNTIME_OF = {"podman": "podman", "docker": "docker", "cri-o": "cri-o", "containerd": "containerd",
               "cri": "containerd"}
_LIMIT_CONF = 1 << 20


def _num(v: str) -> Optional[int]:
    """A ulimit value: -1 / unlimited / infinity is None (unlimited)."""
    if v in ("-1", "unlimited", "infinity"):
        return None
    if not v.isdigit() or len(v) > 20:
        raise ValueError(v)
    n = int(v)
    return None if n >= (1 << 64) - 1 else n


def parse_ulimit(word: str) -> Optional[List[Optional[int]]]:
    """``core=SOFT[:HARD]`` (podman/docker/CRI-O syntax) -> [soft, hard]; None if not core."""
    name, sep, val = word.strip().partition("=")
    if name.strip() != "core" or not sep:
        return None
    soft, _, hard = val.strip().partition(":")
    try:
        s = _num(soft.strip())
        return [s, _num(hard.strip()) if hard else s]
    except ValueError:
        return None


def spec_of(c: Dict[str, Any], root: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """RLIMIT_CORE and autoremove of container *c*, from its bundle (and Docker's hostconfig)."""
    rt = c.get("runtime")
    out: Dict[str, Any] = {"bundle": None, "rlimit_core": None, "autoremove": None, "autoremove_from": None}
    b = C.bundle_config(c, root)
    if b is not None:
        out["bundle"] = b[0]
        rl = C.oci_rlimits(b[1]).get("RLIMIT_CORE")
        out["rlimit_core"] = list(rl) if rl is not None else None
        ann = C.oci_annotations(b[1])
        # libpod/define/annotations.go InspectAnnotationAutoremove = "io.podman.annotations.autoremove"
        v = ann.get("io.podman.annotations.autoremove")
        if v is not None:
            out["autoremove"] = v.upper() == "TRUE"
            out["autoremove_from"] = f"io.podman.annotations.autoremove={v[:16]} in {b[0]}"
    cid = c.get("id")
    if rt == "docker" and isinstance(cid, str) and re.fullmatch(r"[0-9a-f]{64}", cid):
        path = f"/var/lib/docker/containers/{cid}/hostconfig.json"
        hc = C.read_json(path, _LIMIT_CONF, root)
        if isinstance(hc, dict) and isinstance(hc.get("AutoRemove"), bool):
            out["autoremove"] = hc["AutoRemove"]
            out["autoremove_from"] = f"HostConfig.AutoRemove={str(hc['AutoRemove']).lower()} in {path}"
    if out["bundle"] is None and out["autoremove"] is None:
        return None
    return out


def _dockerd_argv() -> List[Dict[str, Any]]:
    """``--default-ulimit core=S:H`` on a running dockerd's command line (dockerd(8)), as a record
    whose file is /proc/PID/cmdline."""
    from coredoctor.snapshot import proc as procmod
    out: List[Dict[str, Any]] = []
    for pid, comm in procmod.comms().items():
        if comm != "dockerd":
            continue
        data = C.read_bounded(f"/proc/{pid}/cmdline", 1 << 16, "/")
        argv = [a.decode("utf-8", "replace") for a in (data or b"").split(b"\0")]
        for i, a in enumerate(argv):
            word = argv[i + 1] if a == "--default-ulimit" and i + 1 < len(argv) else (
                a.split("=", 1)[1] if a.startswith("--default-ulimit=") else None)
            val = parse_ulimit(word) if word else None
            if val is not None:
                out.append({"runtime": "docker", "file": f"/proc/{pid}/cmdline", "line": None,
                            "text": f"--default-ulimit {word}"[:512], "core": val})
    return out


def _files(patterns: Iterable[str], root: str) -> List[str]:
    out: List[str] = []
    for p in patterns:
        if "*" in p:
            host = os.path.join(root, p.lstrip("/"))
            out += ["/" + os.path.relpath(x, root) for x in sorted(glob.glob(host))[:64]]
        else:
            out.append(p)
    return out


def _lines(path: str, root: str) -> List[str]:
    data = C.read_bounded(path, _LIMIT_CONF, root)
    return data.decode("utf-8", "replace").splitlines()[:20000] if data is not None else []


def read_defaults(runtimes: Iterable[str], root: Optional[str] = None) -> List[Dict[str, Any]]:
    """The runtime-wide RLIMIT_CORE defaults of *runtimes* (see :data:`DEFAULTS`)."""
    root = root or C.host_root()
    out: List[Dict[str, Any]] = []
    for rt in sorted({_RUNTIME_OF[r] for r in runtimes if r in _RUNTIME_OF}):
        patterns, key, _ = DEFAULTS[rt]
        for path in _files(patterns, root):
            lines = _lines(path, root)
            if rt == "docker" and path == patterns[0]:
                out += _dockerd_argv()
            if rt == "docker":
                try:
                    doc = json.loads("\n".join(lines)) if lines else None
                except (ValueError, RecursionError):
                    doc = None
                core = ((doc or {}).get("default-ulimits") or {}).get("core") if isinstance(doc, dict) else None
                if isinstance(core, dict):
                    n = next((i for i, x in enumerate(lines, 1) if '"core"' in x), None)
                    try:
                        val = [_num(str(core.get("Soft"))), _num(str(core.get("Hard")))]
                    except ValueError:
                        val = None
                    out.append({"runtime": rt, "file": path, "line": n,
                                "text": (lines[n - 1].strip() if n else "")[:512], "core": val})
                continue
            if rt == "containerd":
                for i, x in enumerate(lines, 1):
                    m = re.match(r'\s*base_runtime_spec\s*=\s*"([^"]+)"', x)
                    if m and m.group(1).startswith("/"):
                        rl = C.oci_rlimits(C.read_json(m.group(1), _LIMIT_CONF, root)).get("RLIMIT_CORE")
                        out.append({"runtime": rt, "file": path, "line": i, "text": x.strip()[:512],
                                    "core": list(rl) if rl is not None else None})
                continue
            in_key = False
            for i, x in enumerate(lines, 1):
                s = x.split("#", 1)[0]
                if re.match(rf"\s*{key}\s*=", s):
                    in_key = True
                if in_key:
                    for w in re.findall(r'"([^"]*)"', s):
                        val = parse_ulimit(w)
                        if val is not None:
                            out.append({"runtime": rt, "file": path, "line": i, "text": x.strip()[:512], "core": val})
                    if "]" in s:
                        in_key = False
    return out


def _apport_socket(pid: int) -> Optional[bool]:
    """Does the process's root have /run/apport.socket (where apport forwards a container's crash,
    data/apport forward_crash_to_container())? ``run`` must be a real directory (no symlink is
    followed inside the container's tree)."""
    import stat
    base = f"/proc/{pid}/root/run"
    try:
        if not stat.S_ISDIR(os.lstat(base).st_mode):
            return False
        return stat.S_ISSOCK(os.lstat(base + "/apport.socket").st_mode)
    except FileNotFoundError:
        return False
    except OSError:
        return None


#: a string only systemd-coredump builds with forwarding into containers contain (the cgroup
#: xattr it checks: src/coredump/coredump.c cg_has_coredump_receive(), systemd 255+)
FORWARD_MARKERS = (b"coredump_receive",)


def handler_facts(helper: Optional[str], limit: int = 16 << 20) -> Dict[str, Any]:
    """``container_handler`` facts of a pipe helper: whether a systemd-coredump binary can forward
    a container's core into the container (a feature marker in the binary, not a version)."""
    out: Dict[str, Any] = {}
    if not helper or not helper.endswith("systemd-coredump"):
        return out
    try:
        with open(helper, "rb") as f:
            data = f.read(limit)
        out["systemd_coredump_forwards"] = any(m in data for m in FORWARD_MARKERS)
    except OSError:
        out["systemd_coredump_forwards"] = None
    return out


def read(procs: Iterable[Dict[str, Any]], root: Optional[str] = None, apport: bool = False) -> List[Dict[str, Any]]:
    """Set ``container_spec`` on each of *procs* that is in a container (with *apport*, the pipe
    helper is apport: whether the container has its socket); return the runtime defaults of the
    runtimes seen (empty when no target is in a container)."""
    seen = set()
    cache: Dict[str, Optional[Dict[str, Any]]] = {}  # one read per container
    for p in procs:
        c = p.get("container")
        if not isinstance(c, dict):
            continue
        seen.add(str(c.get("runtime")))
        key = f"{c.get('runtime')}:{c.get('id')}"
        if key not in cache:
            try:
                cache[key] = spec_of(c, root)
            except (OSError, ValueError, TypeError, AttributeError):
                cache[key] = None
        if cache[key] is not None:
            p["container_spec"] = dict(cache[key] or {})
        sock = _apport_socket(p["pid"]) if apport else None  # only apport forwards there
        if sock is not None:
            p.setdefault("container_spec", {"bundle": None, "rlimit_core": None, "autoremove": None,
                                            "autoremove_from": None})["apport_socket"] = sock
    try:
        return read_defaults(seen, root) if seen else []
    except (OSError, ValueError, TypeError, AttributeError):
        return []
