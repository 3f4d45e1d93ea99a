"""
canary
------
Prove a prediction with a real crash: fork a throwaway process that goes through the same
credential change as the target (start as root, then ``setgroups``/``setresgid``/``setresuid``
to the target's ids, so ``commit_creds()`` sets its dumpable flag from ``fs.suid_dumpable`` the
way the target's was), with the target's RLIMIT_CORE/RLIMIT_FSIZE, cwd, umask and
coredump_filter; ask the gate model about it; make it fault for real; and look where the core
landed. When the kernel's outcome differs from the prediction, that is a bug in the model.
"""

import glob
import os
import resource
import stat
import time

from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

from coredoctor import elfcore
from coredoctor.errors import UsageError

__all__ = ["spec_like", "spec_for_user", "run", "CANARY_COMM"]

CANARY_COMM = "cd-canary"
PR_SET_NAME = 15
PR_SET_DUMPABLE = 4


def spec_like(proc: Dict[str, Any]) -> Dict[str, Any]:
    """The canary spec that reproduces snapshot process *proc*."""
    c = proc["creds"]
    lim = proc.get("limits") or {}
    return {"uid": c["uid"], "gid": c["gid"], "groups": c.get("groups") or [],
            "rlimit_core": (lim.get("core") or [None, None]), "rlimit_fsize": (lim.get("fsize") or [None, None]),
            "cwd": proc.get("cwd") or "/", "umask": proc.get("umask"),
            "coredump_filter": proc.get("coredump_filter"), "like": proc["pid"], "like_comm": proc.get("comm"),
            # the target's filesystem view (a unit's ProtectSystem=/PrivateTmp=, a chroot, a container)
            "mntns": f"/proc/{proc['pid']}/ns/mnt", "root": f"/proc/{proc['pid']}/root",
            "cwd_link": f"/proc/{proc['pid']}/cwd", **_userns_spec(proc),
            # a container's process got its ids from the runtime and then exec'd its program,
            # which made it dumpable again (begin_new_exec()): the canary does the same
            **({"exec_dumpable": True} if isinstance(proc.get("container"), dict)
               and (proc.get("dumpable") or {}).get("value") == 1 else {})}


def _userns_spec(proc: Dict[str, Any]) -> Dict[str, Any]:
    """For a target in another user namespace (a container with --uidmap, rootless podman): the
    namespace to join and the target's ids as that namespace sees them (its uid_map/gid_map), so
    that the canary's credentials are the same kuids, with capabilities relative to that
    namespace (capable_wrt_inode_uidgid())."""
    if proc.get("userns_is_host") is not False or not proc.get("uid_map") or not proc.get("gid_map"):
        return {}
    from coredoctor.kernel.landing import unmap_id
    c = proc["creds"]
    uids = [unmap_id(proc["uid_map"], u) for u in c["uid"]]
    gids = [unmap_id(proc["gid_map"], g) for g in c["gid"]]
    if any(x is None for x in uids + gids):
        return {}
    groups = [g for g in (unmap_id(proc["gid_map"], g) for g in c.get("groups") or []) if g is not None]
    return {"userns": f"/proc/{proc['pid']}/ns/user", "ns_uid": uids, "ns_gid": gids, "ns_groups": groups}


def spec_for_user(user: str, group: Optional[str] = None,
                  rlimit_core: Optional[List[Optional[int]]] = None) -> Dict[str, Any]:
    import grp
    import pwd
    def numeric(v: object) -> bool:  # an id: ASCII digits that fit a uid_t/gid_t (not thousands of digits)
        s = str(v)
        return s.isdigit() and s.isascii() and len(s) <= 10 and int(s) < 1 << 32

    try:
        pw = pwd.getpwnam(user) if not numeric(user) else pwd.getpwuid(int(user))
    except (KeyError, ValueError, OverflowError):
        raise UsageError(f"no such user: {user}")
    try:
        gid = (grp.getgrnam(group).gr_gid if not numeric(group) else int(group)) if group else pw.pw_gid
    except (KeyError, ValueError, OverflowError):
        raise UsageError(f"no such group: {group}")
    groups = sorted({g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem} | {gid})
    return {"uid": [pw.pw_uid] * 4, "gid": [gid] * 4, "groups": groups,
            "rlimit_core": rlimit_core or [None, None], "rlimit_fsize": [None, None], "cwd": "/",
            "umask": 0o022, "coredump_filter": None}


def _rl(v: Optional[int]) -> int:
    return resource.RLIM_INFINITY if v is None else v


def _limits(pair: Sequence[Optional[int]]) -> Tuple[int, int]:
    """``[soft, hard]`` of a spec (None: unlimited) for setrlimit() (a ValueError for another
    length, as setrlimit() gives)."""
    soft, hard = pair
    return _rl(soft), _rl(hard)


def _child(spec: Dict[str, Any], ready_w: int, go_r: int) -> NoReturn:
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, CANARY_COMM.encode(), 0, 0, 0)
        resource.setrlimit(resource.RLIMIT_CORE, _limits(spec["rlimit_core"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, _limits(spec["rlimit_fsize"]))
        if spec.get("coredump_filter"):
            with open("/proc/self/coredump_filter", "w") as f:
                f.write(spec["coredump_filter"])
        if spec.get("mntns"):
            # enter the target's mount namespace, root and cwd (setns() needs a single-threaded
            # caller: the forked child is)
            cwd_fd = os.open(spec["cwd_link"], os.O_RDONLY | os.O_DIRECTORY)
            root_fd = os.open(spec["root"], os.O_RDONLY | os.O_DIRECTORY)
            ns_fd = os.open(spec["mntns"], os.O_RDONLY)
            user_fd = os.open(spec["userns"], os.O_RDONLY) if spec.get("userns") else None
            # the user namespace first: the container's mount namespace belongs to it
            if user_fd is not None and libc.setns(user_fd, 0x10000000) != 0:  # CLONE_NEWUSER
                raise OSError(ctypes.get_errno(), "setns(user)")
            if libc.setns(ns_fd, 0x00020000) != 0:  # CLONE_NEWNS
                raise OSError(ctypes.get_errno(), "setns(mnt)")
            os.fchdir(root_fd)
            os.chroot(".")
            os.fchdir(cwd_fd)
            for fd in (cwd_fd, root_fd, ns_fd, user_fd):
                if fd is not None:
                    os.close(fd)
        else:
            try:
                os.chdir(spec.get("cwd") or "/")
            except OSError:
                os.chdir("/")
        if spec.get("umask") is not None:
            os.umask(spec["umask"])
        uid, gid = spec["uid"], spec["gid"]
        groups = spec.get("groups") or []
        if spec.get("userns"):  # the same kuids, as the joined namespace names them
            uid, gid, groups = spec["ns_uid"], spec["ns_gid"], spec.get("ns_groups") or []
        os.setgroups(groups)
        os.setresgid(gid[0], gid[1], gid[2])
        os.setresuid(uid[0], uid[1], uid[2])
        if len(gid) > 3 and gid[3] != gid[1]:
            libc.setfsgid(gid[3])
        if len(uid) > 3 and uid[3] != uid[1]:
            libc.setfsuid(uid[3])
        if spec.get("exec_dumpable"):
            libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        os.write(ready_w, b"R")
        os.read(go_r, 1)
        ctypes.string_at(0)  # a real fault: SIGSEGV
    except BaseException as e:  # noqa: BLE001 - report anything to the parent, never return
        try:
            os.write(ready_w, b"E" + str(e).encode()[:200])
        finally:
            os._exit(111)
    os._exit(112)


def run(spec: Dict[str, Any], evaluate: Callable[[int], Dict[str, Any]], keep: bool = False,
        timeout: float = 30.0) -> Dict[str, Any]:
    """Fork the canary, get the model's prediction via *evaluate(pid)* (a callable returning a
    check target dict), fault it, and report what the kernel did."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        _child(spec, ready_w, go_r)
    os.close(ready_w)
    os.close(go_r)
    status = None
    try:
        msg = os.read(ready_r, 256)
        if msg[:1] != b"R":
            os.waitpid(pid, 0)
            status = -1
            raise UsageError(f"the canary could not take the target's state: {msg[1:].decode(errors='replace')}")
        predicted = evaluate(pid)
        started = time.time()
        os.write(go_w, b"G")
        deadline = time.time() + timeout
        while True:
            wp, status = os.waitpid(pid, os.WNOHANG)
            if wp == pid:
                break
            if time.time() > deadline:
                os.kill(pid, 9)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    finally:
        os.close(ready_r)
        os.close(go_w)
        if status is None:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    core = _find_core(predicted, pid, started, spec.get("root"))
    dumped = bool(core and core.get("size", 0) > 0 and core.get("verified") is not False)
    report = {
        "pid": pid,
        "credentials": {"uid": spec["uid"], "gid": spec["gid"], "groups": spec.get("groups", [])},
        "like": spec.get("like"),
        "predicted": {"dumps": predicted["dumps"], "blocking_gate": predicted["blocking_gate"],
                      "verdict": predicted["verdict"], "dumpable": predicted["dumpable"]["value"],
                      "core_destination": predicted["core_destination"],
                      "reasons": predicted.get("reasons") or [], "outcome": _outcome(predicted)},
        "signaled": os.WIFSIGNALED(status), "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "wcoredump": bool(os.WIFSIGNALED(status) and os.WCOREDUMP(status)),
        "dumped": dumped if core is not None or predicted["core_destination"]["kind"] == "file" else None,
        "core": core,
    }
    d = report["dumped"]
    report["agrees"] = None if d is None or predicted["dumps"] is None else (d == predicted["dumps"])
    ident = core.pop("_ident", None) if core else None
    # removed only when it is provably the canary's own core: its ELF notes name the canary's pid
    # (a file pattern), or a handler's name for it carries the canary's name and pid; never a
    # core that merely matched the pattern, and only the very file described, not one put in its place
    if core and _is_own(core, pid) and not keep and ident is not None and _ident(core["path"]) == ident:
        os.unlink(core["path"])
        core["removed"] = True
    return report


def _is_own(core: Dict[str, Any], pid: int) -> bool:
    """Is the core found provably the canary's (pid *pid*), and so the canary's to remove?"""
    if not core.get("path") or not core.get("found", True):
        return False
    if "verified" in core:
        return core["verified"] is True
    return _names_canary(core["path"], pid)


def _names_canary(path: Optional[str], pid: int) -> bool:
    """A handler's file name with the canary's name and its pid as a separate field
    (systemd-coredump: core.COMM.UID.BOOT.PID.TIME)."""
    if not path:
        return False
    name = os.path.basename(path)
    return CANARY_COMM in name and str(pid) in name.replace("-", ".").split(".")


def _ident(path: str) -> Optional[Tuple[int, int]]:
    """(st_dev, st_ino) of *path* itself (a symlink is not followed), None when it is gone."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _outcome(t: Dict[str, Any]) -> str:
    from coredoctor.kernel import reasons
    return reasons.outcome(t)


def _find_core(predicted: Dict[str, Any], pid: int, started: float,
               root: Optional[str] = None) -> Optional[Dict[str, Any]]:
    dest = predicted["core_destination"]
    handler = dest.get("handler")
    if dest["kind"] == "file":
        # where check said it lands on the host (kernel/landing.py); a file in the container's
        # memory (tmpfs) through the target's root while it runs
        where = dest.get("host_path")
        if where is None and root and dest.get("landing") == "memory" and dest.get("container_path"):
            where = root + dest["container_path"]
        pattern = (where or dest["path"]).replace("*", "?*")
        # a pattern without %p (plain "core", "/var/crash/core.%e") may match another crash's
        # core written meanwhile: the canary's own is the one whose NT_PRPSINFO names its pid
        found = [_describe(c, pid) for c in _candidates(pattern, started)]
        return next((c for c in found if c.get("verified")), found[0] if found else None)
    if handler == "systemd-coredump":
        return _wait_glob(f"/var/lib/systemd/coredump/core.{CANARY_COMM}.*.{pid}.*", pid, started, verify=False)
    if handler == "apport":
        return _wait_glob(f"/var/crash/*{CANARY_COMM}*", pid, started, verify=False)
    return None  # an unknown handler or a socket server: where it keeps cores is its business


def _wait_glob(pattern: str, pid: int, started: float, verify: bool, timeout: float = 10.0) -> Dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        cands = _candidates(pattern, started)
        if cands:
            return _describe(cands[0], pid, verify)
        time.sleep(0.1)
    return {"path": None, "size": 0, "found": False}


def _candidates(pattern: str, started: float) -> List[str]:
    """The regular files matching *pattern* changed since the canary started, sorted. Cores
    land in directories others may write (/var/crash, a cwd, a container's root): what lstat
    shows is a symlink, a FIFO or a device is no candidate (never followed, never opened)."""
    out = []
    for p in glob.glob(pattern):
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mtime >= started - 1:
            out.append(p)
    return sorted(out)


def _describe(path: str, pid: int, verify: bool = True, settle: float = 5.0) -> Dict[str, Any]:
    """What the candidate core *path* is, read through one descriptor opened with O_NOFOLLOW and
    O_NONBLOCK (elfcore.open_core): a symlink or a FIFO put in its place since it was listed is
    not found, and is neither followed nor waited on."""
    try:
        fd = elfcore.open_core(path)
    except (elfcore.NotACore, OSError) as e:
        return {"path": path, "size": 0, "found": False, "error": str(e)}
    try:
        # a pipe helper may still be writing: wait for the size to settle
        last, deadline = -1, time.time() + settle
        while time.time() < deadline:
            size = os.fstat(fd).st_size
            if size == last and size > 0:
                break
            last = size
            time.sleep(0.1)
        st = os.fstat(fd)
        out = {"path": path, "size": st.st_size, "time": st.st_mtime, "uid": st.st_uid, "gid": st.st_gid,
               "mode": f"{st.st_mode & 0o7777:04o}", "found": True, "_ident": (st.st_dev, st.st_ino)}
        if verify:
            try:
                info = elfcore.read_core_info(path, fd=fd)
                out.update(elf=True, elf_pid=info["pid"], elf_signal=info.get("signal"),
                           verified=info["pid"] == pid)
            except elfcore.NotACore as e:
                out.update(elf=False, verified=False, error=str(e))
        return out
    finally:
        os.close(fd)
