"""
Worlds
------
The facts one evaluation of the gates sees: a snapshot, one process, the signal and how it is
sent, and one possible dumpable value (a "world"), with what follows from them (the parsed and
expanded core_pattern, the directory the kernel opens in, the dumping credentials).
"""

from typing import Any, Dict, Optional, Tuple

from coredoctor import runtimes
from coredoctor.kernel import core_pattern, dumpable as dmod

__all__ = ["estimate_core_size", "pattern_context", "parsed_pattern", "expand", "destination_views",
           "make_world", "dump_cred", "who_values", "limit_text"]

World = Dict[str, Any]


def estimate_core_size(proc: Dict[str, Any]) -> Optional[int]:
    """A lower bound of the core's data: anonymous + shmem resident memory (what the default
    coredump_filter 0x33 writes; file-backed text is not dumped)."""
    m = proc.get("mem") or {}
    if m.get("anon") is None:
        return m.get("rss")
    return (m.get("anon") or 0) + (m.get("shmem") or 0)


def pattern_context(proc: Dict[str, Any], kernel: Dict[str, Any], signo: Optional[int],
                    dumpable_value: Optional[int]) -> Dict[str, Any]:
    """Known values of format_corename()'s specifiers for this process."""
    c = proc["creds"]
    core = (proc.get("limits") or {}).get("core") or [None, None]
    soft = core[0]
    single = proc.get("threads", 1) == 1
    # %e is the comm of the thread that faults (current->comm): known only if every thread
    # has the same name; %E/%f are the exe path as seen from the task's root (d_path keeps a
    # " (deleted)" suffix), which the host's readlink shows only for a task in our root
    comm_known = single or proc.get("thread_comms_same") is True
    exe_known = proc.get("root_is_host") is not False
    return {
        "pid": proc["pid"], "pid_ns": (proc.get("nspid") or [proc["pid"]])[-1],
        "tid": proc["pid"] if single else None,
        "tid_ns": (proc.get("nspid") or [proc["pid"]])[-1] if single else None,
        "uid": c["uid"][0], "gid": c["gid"][0], "dumpable": dumpable_value, "signo": signo,
        "hostname": kernel.get("hostname") if proc.get("uts_is_host", True) is not False else None,
        "comm": proc.get("comm") if comm_known else None,
        "exe": (proc.get("exe") or None) if exe_known else None,
        "rlimit_core": 18446744073709551615 if soft is None else soft,
    }


def parsed_pattern(snap: Dict[str, Any]) -> Dict[str, Any]:
    return core_pattern.parse(snap["sysctl"].get("kernel.core_pattern") or "",
                              snap["kernel"]["features"].get("socket_pattern", False))


def expand(snap: Dict[str, Any], proc: Dict[str, Any], signo: Optional[int], dumpable_value: Optional[int],
           parsed: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    ctx = pattern_context(proc, snap["kernel"], signo, dumpable_value)
    return core_pattern.expand(parsed or parsed_pattern(snap), ctx, snap["sysctl"].get("kernel.core_uses_pid") or 0)


def destination_views(snap: Dict[str, Any], proc: Dict[str, Any], signo: Optional[int],
                      dumpable_value: Optional[int], exp: Optional[Dict[str, Any]] = None) -> Optional[Tuple]:
    """For file mode: ``(key, base, dirpath, base_parts)`` of the directory the kernel opens in,
    or None. *base* is a host path: ``/proc/PID/root`` (absolute, dumpable 1), ``/proc/PID/cwd``
    (relative) or ``/`` (dumpable 2 opens from init_task's root, 4.x+)."""
    if exp is None:
        exp = expand(snap, proc, signo, dumpable_value)
    if exp["kind"] != "file":
        return None
    d, base_parts = core_pattern.split_dir(exp["parts"])
    if d is None:
        return ("", None, None, base_parts)
    pid = proc["pid"]
    if exp["absolute"]:
        if dumpable_value == dmod.SUID_DUMP_ROOT:
            return (f"init:{d}", "/", d, base_parts)
        return (f"root:{proc.get('root_id')}:{d}", f"/proc/{pid}/root", d, base_parts)
    return (f"cwd:{proc.get('cwd_id')}:{d}", f"/proc/{pid}/cwd", d, base_parts)


def make_world(snap: Dict[str, Any], proc: Dict[str, Any], parent: Optional[Dict[str, Any]], signal: str,
               how: str, dumpable_value: int, cause_info: Dict[str, Any],
               facts: Optional[Dict[str, Any]] = None, observed: Optional[Any] = None) -> World:
    """The facts of one evaluation; *observed* (:class:`coredoctor.kernel.observed.Observed`) is
    what was seen of a real crash or delivery, for the predicates it settles."""
    parsed = parsed_pattern(snap)
    k = snap["kernel"]
    # the signal of the core: a runtime may re-raise another one (coredoctor.runtimes)
    signo = k["signals"].get(runtimes.core_signal(proc.get("runtime"), signal, how), k["signals"].get(signal))
    exp = expand(snap, proc, signo, dumpable_value, parsed)
    view = destination_views(snap, proc, signo, dumpable_value, exp) if parsed["kind"] == "file" else None
    return {"snap": snap, "proc": proc, "parent": parent, "kernel": k, "sysctl": snap["sysctl"],
            "signal": signal, "how": how, "dumpable": dumpable_value, "cause_info": cause_info,
            "parsed": parsed, "kind": parsed["kind"], "exp": exp, "view": view,
            "observed": observed, **({"facts": facts} if facts is not None else {})}


def dump_cred(w: World) -> Dict[str, Any]:
    c = w["proc"]["creds"]
    fsuid = 0 if w["dumpable"] == dmod.SUID_DUMP_ROOT else c["uid"][3]
    # capabilities count only in the task's own user namespace (capable_wrt_inode_uidgid()):
    # a container's "root" has them over inodes whose owner and group are mapped there (its
    # uid_map/gid_map), none over the host's; without the maps, none at all
    p = w["proc"]
    caps = c.get("cap_eff", "0")
    out = {"fsuid": fsuid, "fsgid": c["gid"][3], "groups": c.get("groups", []), "cap_eff": caps}
    if p.get("userns_is_host") is False:
        if isinstance(p.get("uid_map"), list) and isinstance(p.get("gid_map"), list):
            out["userns_maps"] = (p["uid_map"], p["gid_map"])
        else:
            out["cap_eff"] = "0"
    return out


def who_values(w: World) -> Dict[str, Any]:
    """Values for :func:`coredoctor.kernel.reasons.who`."""
    cr = dump_cred(w)
    return {"root": w["dumpable"] == dmod.SUID_DUMP_ROOT, "user": w["proc"]["creds"].get("user"),
            "fsuid": cr["fsuid"] if w["dumpable"] == dmod.SUID_DUMP_ROOT else w["proc"]["creds"]["uid"][3],
            "fsgid": cr["fsgid"]}


def limit_text(v: Optional[int]) -> str:
    return "unlimited" if v is None else str(v)
