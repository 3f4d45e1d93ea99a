"""
Origins: the container runtime behind RLIMIT_CORE
-------------------------------------------------
A containerized process gets RLIMIT_CORE from its OCI spec's ``process.rlimits`` (runc/crun
call setrlimit() before exec: runtime-spec config.md "POSIX process": rlimits), which the
runtime filled from ``--ulimit core=`` or its own default (:data:`RUNTIMES`); a spec without
RLIMIT_CORE leaves the limit the runtime's monitor process had (conmon, containerd-shim), i.e.
whatever started the runtime. The finder names that as an origin of kind ``container`` on the
``rlimit-core`` gate, with the runtime-level fix (the run flag, the config line) beside the
host's live one. Pure: it reads ``processes[].container`` / ``container_spec`` and the
snapshot's ``runtime_defaults`` (:mod:`coredoctor.snapshot.ctspec`).
"""

from typing import Any, Dict, List, Optional

from coredoctor.kernel import remedies as R
from coredoctor.origin import Found, Origin, origin

__all__ = ["RUNTIMES", "find"]

#: runtime -> how RLIMIT_CORE is set per container and by default; each row cites its source
RUNTIMES: Dict[str, Dict[str, str]] = {
    "podman": {"program": "podman", "flag": "podman run --ulimit core=-1:-1 ...",
               "file": "/etc/containers/containers.conf", "line": '[containers]\ndefault_ulimits = ["core=-1:-1"]',
               "source": "podman-run(1) --ulimit; containers.conf(5) default_ulimits; libpod pkg/specgen "
                         "(process.rlimits)"},
    "docker": {"program": "dockerd", "flag": "docker run --ulimit core=-1 ...",
               "file": "/etc/docker/daemon.json",
               "line": '"default-ulimits": {"core": {"Name": "core", "Soft": -1, "Hard": -1}}',
               "source": "docker-run(1) --ulimit; dockerd(8) --default-ulimit and daemon.json default-ulimits"},
    "cri-o": {"program": "crio", "flag": "(Kubernetes has no per-pod ulimit: set the runtime's default)",
              "file": "/etc/crio/crio.conf.d/90-core.conf", "line": '[crio.runtime]\ndefault_ulimits = ["core=-1:-1"]',
              "source": "crio.conf(5) [crio.runtime] default_ulimits"},
    "containerd": {"program": "containerd", "flag": "(Kubernetes has no per-pod ulimit: set the base spec)",
                   "file": "/etc/containerd/config.toml",
                   "line": 'base_runtime_spec = "/etc/containerd/cri-base.json"  # with process.rlimits '
                           '[{"type": "RLIMIT_CORE", "soft": 18446744073709551615, "hard": 18446744073709551615}]',
                   "source": "containerd docs/cri/config.md base_runtime_spec; OCI runtime-spec config.md rlimits"},
}
_ALIAS = {"cri": "containerd"}


def _lim(v: Optional[int]) -> str:
    return "unlimited" if v is None else str(v)


def _fix(rt: str, row: Dict[str, str], name: Optional[str]) -> Dict[str, Any]:
    cmds = [f"# per container: {row['flag']}"] if not row["flag"].startswith("(") else [f"# {row['flag'][1:-1]}"]
    cmds += [f"# runtime default, in {row['file']}:"] + [f"#   {x}" for x in row["line"].split("\n")]
    what = f"the container {name}" if name else "the container"
    return R.fix(f"Set RLIMIT_CORE where the container runtime ({rt}) sets it, then recreate {what} "
                 "(a live prlimit is lost when it is recreated)",
                 [R.manual(f"set RLIMIT_CORE in {rt}'s configuration ({row['flag']}; or its default in {row['file']})",
                           "the runtime applies the OCI spec's rlimits at each container start", cmds,
                           needs_restart=True)])


def find(snap: Dict[str, Any], proc: Dict[str, Any], target: Dict[str, Any]) -> Found:
    """The origin of the rlimit-core gate of a process in a container (see the module's docstring)."""
    c = proc.get("container")
    if not isinstance(c, dict) or not c.get("runtime"):
        return Found({}, [])
    rt = _ALIAS.get(str(c["runtime"]), str(c["runtime"]))
    row = RUNTIMES.get(rt)
    if row is None:  # LXC, nspawn: limits come from their own configs (not modelled here)
        return Found({}, [])
    raw = proc.get("container_spec")
    spec: Dict[str, Any] = raw if isinstance(raw, dict) else {}
    soft, hard = ((proc.get("limits") or {}).get("core") or [None, None])
    rl = spec.get("rlimit_core")
    name = c.get("name") or (str(c.get("id"))[:12] if c.get("id") else None)
    who = f"{rt} container {name}" if name else f"{rt} container"
    defaults = [d for d in snap.get("runtime_defaults") or [] if isinstance(d, dict) and d.get("runtime") == rt]
    via: List[Origin] = []
    if isinstance(rl, list) and len(rl) == 2:
        fed = [d for d in defaults if d.get("core") == rl]
        for d in fed[-1:]:  # the last file read wins (containers.conf.d after containers.conf)
            via.append(origin("config", f"{rt}'s default RLIMIT_CORE", row["source"], program=row["program"],
                              file=d.get("file"), line=d.get("line"), text=d.get("text")))
        per = row["flag"].split("core=")[0] + "core=..." if "core=" in row["flag"] else "its spec"
        how = "the runtime's default" if fed else f"set for this container ({per})"
        o = origin("container", f"the {who}'s OCI spec sets RLIMIT_CORE soft {_lim(rl[0])} hard {_lim(rl[1])}: "
                   f"{how}", row["source"], program=row["program"], file=spec.get("bundle"),
                   text=f"RLIMIT_CORE soft={_lim(rl[0])} hard={_lim(rl[1])}", via=via)
    elif spec.get("bundle"):
        o = origin("container", f"the {who}'s OCI spec sets no RLIMIT_CORE: the process kept the limit of the "
                   f"runtime's monitor (conmon/containerd-shim), soft {_lim(soft)} hard {_lim(hard)}, inherited "
                   "from whatever started the runtime", row["source"], program=row["program"],
                   file=spec.get("bundle"), text=None)
    else:
        o = origin("container", f"the process is in a {who}: RLIMIT_CORE is what its runtime set at start "
                   f"(soft {_lim(soft)}); the runtime's spec could not be read", row["source"],
                   program=row["program"])
    return Found({"rlimit-core": o}, [R.public_fix(_fix(rt, row, c.get("name")))])
