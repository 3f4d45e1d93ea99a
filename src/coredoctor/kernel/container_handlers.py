"""
Pipe and socket handlers for a containerized process
----------------------------------------------------
A pipe helper is started by the kernel with call_usermodehelper_exec(): a child of kthreadd, in
the initial namespaces (mount, pid, user, UTS, network), as root -- whatever namespaces the
crashing task was in. A socket core_pattern is connected from init_task's root. What the
helper is told about a containerized process is therefore a mix of the two views; each
specifier's row (:data:`SPECIFIERS`) says which, from format_corename() (fs/coredump.c). What
the known helpers then do with a container's crash is in :data:`HANDLERS`. Pure: the
predicates call :func:`note` with the world of one evaluation.
"""

from typing import Any, Dict, List, Optional, Tuple

__all__ = ["SPECIFIERS", "HANDLERS", "in_container", "note"]

#: specifier -> (what the helper gets for a containerized process, source)
SPECIFIERS: Dict[str, Tuple[str, str]] = {
    "p": ("the pid in the crashing task's own pid namespace (the container's view)",
          "format_corename(): task_tgid_vnr(current) -- fs/coredump.c"),
    "P": ("the pid in the initial pid namespace (the host's view)",
          "format_corename(): task_tgid_nr(current) -- fs/coredump.c (since 3.12)"),
    "i": ("the tid in the task's own pid namespace", "format_corename(): task_pid_vnr(current)"),
    "I": ("the tid in the initial pid namespace", "format_corename(): task_pid_nr(current)"),
    "u": ("the real uid as the host sees it (not the container's uid)",
          "format_corename(): from_kuid(&init_user_ns, cred->uid) -- fs/coredump.c"),
    "g": ("the real gid as the host sees it", "format_corename(): from_kgid(&init_user_ns, cred->gid)"),
    "h": ("the crashing task's UTS nodename: the container's hostname, not the host's",
          "format_corename(): utsname()->nodename (current's UTS namespace) -- fs/coredump.c"),
    "E": ("the executable's path from the crashing task's root (the path inside the container)",
          "cn_print_exe_file(): d_path(&exe_file->f_path) in the crashing task's context"),
}

#: helper -> what it does with a crash of a process in a container; each row cites its source
HANDLERS: Dict[str, Dict[str, str]] = {
    "systemd-coredump": {
        "host": "stores the core on the host (/var/lib/systemd/coredump, coredumpctl on the host) with the "
                "container's cgroup in COREDUMP_CGROUP",
        "forward": "systemd 255+ forwards it into the container's own systemd-coredump instead when the "
                   "process's unit cgroup is delegated (Delegate=yes) and has CoredumpReceive=yes (the cgroup "
                   "xattr user.coredump_receive), and only with a pidfd (%F) or dumpable 1",
        "source": "systemd src/coredump/coredump.c can_forward_coredump(), cg_is_delegated(), "
                  "cg_has_coredump_receive(); systemd.resource-control(5) CoredumpReceive= (v255)"},
    "apport": {
        "forward": "apport (started with -P%P) sees a process in another mount and pid namespace as a container "
                   "crash and forwards it to the container's /run/apport.socket (owned by a uid mapped in the "
                   "container); without one it logs \"host pid N crashed in a container without apport "
                   "support\" and keeps nothing; in another mount namespace but the host's pid namespace: "
                   "\"crashed in a separate mount namespace, ignoring\"; a dump mode other than 1 is not "
                   "forwarded without --pidfd",
        "source": "apport data/apport _check_global_pid_and_forward(), forward_crash_to_container(), is_same_ns()"},
}


def in_container(proc: Dict[str, Any]) -> bool:
    """Is *proc* in a container or another namespace set (its own pid or mount namespace)?"""
    nspid = proc.get("nspid") or []
    return bool(isinstance(proc.get("container"), dict) or len(nspid) > 1 or proc.get("mnt_ns"))


def _spec_words(tokens: List[Any], proc: Dict[str, Any], hostname: Optional[str]) -> List[str]:
    seen: List[str] = []
    for tok in tokens:
        for part in tok if isinstance(tok, list) else [tok]:
            if isinstance(part, dict) and part.get("spec") in SPECIFIERS and part["spec"] not in seen:
                seen.append(part["spec"])
            elif isinstance(part, str):
                for s in SPECIFIERS:
                    if f"%{s}" in part and s not in seen:
                        seen.append(s)
    nspid = proc.get("nspid") or [proc.get("pid")]
    c = proc.get("creds") or {}
    vals = {"p": nspid[-1], "P": proc.get("pid"), "i": nspid[-1], "I": proc.get("pid"),
            "u": (c.get("uid") or [None])[0], "g": (c.get("gid") or [None])[0]}
    out = []
    for s in seen:
        v = vals.get(s)
        out.append(f"%{s}={v} ({SPECIFIERS[s][0]})" if v is not None else f"%{s}: {SPECIFIERS[s][0]}")
    return out


def note(w: Dict[str, Any], name: str, status: str, evidence: str) -> Tuple[str, str]:
    """The handler gate's (status, evidence) with what a container changes, for the world *w* of
    a process in a container (unchanged otherwise)."""
    proc = w["proc"]
    if not in_container(proc):
        return status, evidence
    parsed = w["parsed"]
    tokens = parsed.get("tokens") or [parsed.get("pattern", "")]
    where = ("the helper runs on the host (initial namespaces, as root), not in the container"
             if w["kind"] == "pipe" else "the kernel connects from init's root, on the host")
    parts = [where]
    words = _spec_words(list(tokens), proc, None)
    if words:
        parts.append("it gets " + ", ".join(words))
    row = HANDLERS.get(name)
    facts = (w["snap"].get("container_handler") or {})
    if name == "systemd-coredump" and row:
        fwd = facts.get("systemd_coredump_forwards")
        has = {True: "this systemd-coredump has it", False: "this systemd-coredump lacks it (older than 255)",
               None: "whether this one has it is unknown"}[fwd if fwd in (True, False) else None]
        parts.append(f"{row['host']}; {row['forward']} ({has}) [{row['source']}]")
    elif name == "apport" and row:
        other_pid = len(proc.get("nspid") or []) > 1
        sock = (proc.get("container_spec") or {}).get("apport_socket")
        if str(proc.get("cgroup") or "").startswith("/system.slice"):
            # is_same_ns() answers "same" for anything under /system.slice (LP: #1870060)
            parts.append("apport treats a process under /system.slice as the host's (is_same_ns(), LP: "
                         f"#1870060) and handles it on the host [{row['source']}]")
        elif proc.get("mnt_ns") and not other_pid:
            status = "fail"
            parts.append("apport ignores a crash in a separate mount namespace (\"crashed in a separate mount "
                         f"namespace, ignoring\") [{row['source']}]")
        elif proc.get("mnt_ns") and other_pid and sock is False:
            status = "fail"
            parts.append("apport forwards a container's crash to the container's /run/apport.socket, which this "
                         "container does not have: \"host pid N crashed in a container without apport "
                         f"support\", nothing is kept [{row['source']}]")
        else:
            parts.append(f"{row['forward']} [{row['source']}]")
    return status, f"{evidence}; in a container: " + "; ".join(parts)
