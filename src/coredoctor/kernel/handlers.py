"""
User-space core handlers
------------------------
What the known pipe and socket handlers do with a core once the kernel has handed it over:
systemd-coredump (src/coredump/ in systemd), apport (data/apport), ``|/bin/false``. Shared
by check's ``handler-policy`` gate and, later, by crash history.
"""

from typing import Any, Dict, List, Optional, Tuple

from coredoctor.kernel import remedies as R

__all__ = ["identify", "policy", "parse_size", "apport_likely_packaged", "SOCKET_RULES", "SOCKET_RULE_IDS",
           "UNIX_PATH_MAX", "socket_path_problem"]

# apport's apport/fileutils.py likely_packaged(): packages only ship executables under these
# prefixes; /usr/local/ and /var/lib/ never belong to one. apport ignores the crash of an
# executable that does not belong to a package ("executable does not belong to a package,
# ignoring") unless the user's ~/.config/apport/settings says unpackaged=true.
_APPORT_PACKAGED = ("/bin/", "/boot", "/etc/", "/initrd", "/lib", "/sbin/", "/opt", "/usr/", "/var")
_APPORT_NEVER = ("/usr/local/", "/var/lib/")

_DISCARDERS = {"false", "true"}


def identify(helper_path: Optional[str]) -> Optional[str]:
    """A short name for a pipe helper or socket path."""
    if not helper_path:
        return None
    base = helper_path.rsplit("/", 1)[-1]
    if "systemd-coredump" in base or helper_path.startswith("/run/systemd/coredump"):
        return "systemd-coredump"
    if base == "apport":
        return "apport"
    if base.startswith("abrt-hook"):
        return "abrt"
    if base in _DISCARDERS:
        return "discard"
    if base in ("cdc", "core-dump-composer"):
        return "core-dump-handler"
    return base


def parse_size(v: Any) -> Optional[int]:
    """systemd size syntax (``2G``, ``512M``, ``infinity``) -> bytes or None for infinity."""
    if v is None:
        return None
    s = str(v).strip()
    if s.lower() == "infinity":
        return None
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
    try:
        if s and s[-1].upper() in mult:
            return int(float(s[:-1]) * mult[s[-1].upper()])
        if s and s[-1].upper() == "B":
            return int(s[:-1])
        return int(s)
    except (ValueError, OverflowError):  # "nanG", "1e999G", or thousands of digits
        return None


def apport_likely_packaged(exe: Optional[str]) -> Optional[bool]:
    """False when apport will certainly take *exe* for unpackaged (and ignore its crash); True
    is only a guess (apport then asks dpkg); None when the executable is not known."""
    if not exe:
        return None
    return exe.startswith(_APPORT_PACKAGED) and not exe.startswith(_APPORT_NEVER)


def policy(name: Optional[str], facts: Dict[str, Any], argv_tokens: List[str], rlimit_core_soft: Optional[int],
           page_size: int, est_size: Optional[int],
           exe: Optional[str] = None, signal: Optional[str] = None) -> Tuple[str, str, Optional[Dict[str, Any]]]:
    """``(status, evidence, fix)`` for what handler *name* will do with the core of a process
    running *exe* (when known). *fix* is None or ``{"summary", "actions", "commands"}`` (records of
    :mod:`.remedies`, rendered), with ``limit``/``pattern`` set when the process's own RLIMIT_CORE
    or an absolute core_pattern is (also) the remedy: those need the process's facts."""
    if name == "discard":
        return ("fail", "the pipe helper discards every core (core_pattern pipes to "
                f"{argv_tokens[0] if argv_tokens else '?'}); systemd writes |/bin/false at boot when "
                "systemd-coredump is not installed (systemd issue #25831)",
                _fix("Send cores somewhere: install systemd-coredump, or set an absolute core_pattern",
                     [R.manual("install systemd-coredump (or let fix set an absolute core_pattern)",
                               "a helper that exits drops every core",
                               ["apt-get install systemd-coredump   # or:"])], pattern=True))
    if name == "systemd-coredump":
        sc = facts.get("systemd_coredump") or {}
        conf = sc.get("conf") or {}
        storage = conf.get("Storage", "external").lower()
        if storage == "none":
            return ("fail", "systemd-coredump has Storage=none (coredump.conf): it logs the crash "
                    "and throws the core away", _sc_fix("Storage=external"))
        psm = parse_size(conf.get("ProcessSizeMax", "2G"))
        if psm == 0:
            return ("fail", "systemd-coredump has ProcessSizeMax=0: no core is processed or stored",
                    _sc_fix("ProcessSizeMax=2G"))
        if "%c" in argv_tokens and rlimit_core_soft is not None and rlimit_core_soft < page_size:
            return ("fail", f"systemd-coredump receives RLIMIT_CORE through %c ({rlimit_core_soft}) and "
                    "refuses: \"Resource limits disable core dumping for process\"",
                    _fix("Raise RLIMIT_CORE of the process (systemd-coredump honours %c)", [], limit=True))
        if sc.get("socket") is None and sc.get("socket_known") is False:
            return ("unknown", "/proc/1/net/unix could not be read: cannot tell whether systemd-coredump's "
                    "socket /run/systemd/coredump is listening", None)
        if sc.get("socket") is None:
            return ("fail", "nothing listens on /run/systemd/coredump: systemd-coredump will log "
                    "\"Failed to connect to coredump service\" and the core is lost (the kernel still "
                    "reports \"core dumped\")",
                    _fix("Start the systemd-coredump socket",
                         [R.manual("start the systemd-coredump socket", "systemd-coredump hands each core to it",
                                   ["systemctl enable --now systemd-coredump.socket"])]))
        if psm is not None and est_size and est_size > psm:
            return ("warn", f"the process uses at least {est_size} bytes, more than systemd-coredump's "
                    f"ProcessSizeMax ({conf.get('ProcessSizeMax', '2G')}): the core will not be stored",
                    _sc_fix("ProcessSizeMax=<bigger>"))
        return ("pass", f"systemd-coredump stores it (Storage={storage}) under /var/lib/systemd/coredump; "
                "see coredumpctl list", None)
    if name == "apport":
        ap = facts.get("apport") or {}
        if ap.get("enabled") is False:
            return ("fail", "apport is disabled (/etc/default/apport enabled=0) but still in core_pattern: "
                    "it drops the core", _fix("Enable apport or set another core_pattern", [R.daemon_option(
                        "apport", "enable apport (/etc/default/apport enabled=1)", "a disabled apport drops cores",
                        ["sed -i 's/^enabled=0/enabled=1/' /etc/default/apport", "systemctl restart apport"])]))
        if apport_likely_packaged(exe) is False:
            return ("fail", f"apport ignores {exe}: it does not belong to a package (apport's likely_packaged(): "
                    "nothing under /usr/local/, /var/lib/, /home, /tmp ...), so neither report nor core is kept",
                    _fix("Let apport keep crashes of unpackaged programs, or send cores elsewhere", [R.daemon_option(
                        "apport", "let apport keep crashes of unpackaged programs (unpackaged=true in the crashing "
                        "user's ~/.config/apport/settings), or send cores elsewhere",
                        "apport ignores executables that no package owns",
                        ["printf '[main]\\nunpackaged=true\\n' >> ~/.config/apport/settings   # as the "
                         "crashing user", "# or: sysctl -w kernel.core_pattern=/var/crash/core.%e.%p.%t"])]))
        return ("warn", "apport writes a report to /var/crash (core in /var/lib/apport/coredump only when "
                "%c is non-zero); it ignores executables that do not belong to a package", None)
    if name == "abrt":
        from coredoctor.kernel import abrt
        return abrt.decide(facts.get("abrt") or {}, exe, signal, rlimit_core_soft)
    if name == "socket-request":
        return ("warn", "an @@ server decides per crash: its coredump_ack asks the kernel to write the core "
                "(COREDUMP_KERNEL), to write nothing but report a dump (COREDUMP_USERSPACE), or to drop it "
                "silently (COREDUMP_REJECT, no WCOREDUMP); coredoctor cannot tell what it will answer", None)
    if name == "socket-unknown":
        return ("warn", "an unknown server listens on the core socket: coredoctor cannot tell what it keeps",
                None)
    return ("warn", f"the pipe helper {name} is not one coredoctor knows: the kernel hands it the core, "
            "what it keeps is up to the helper", None)


_PATTERN_CMDS = ["mkdir -p /var/crash && chmod 1777 /var/crash",
                 "sysctl -w kernel.core_pattern=/var/crash/core.%e.%p.%t"]


def _fix(summary: str, actions: List[Dict[str, Any]], limit: bool = False, pattern: bool = False) -> Dict[str, Any]:
    cmds = [c for a in actions for c in R.commands(a)] + (_PATTERN_CMDS if pattern else [])
    return {"summary": summary, "actions": actions, "commands": cmds, "needs_restart": False,
            "limit": limit, "pattern": pattern}


def _sc_fix(setting: str) -> Dict[str, Any]:
    return _fix(f"Let systemd-coredump keep cores ({setting})", [R.daemon_option(
        "systemd-coredump", f"{setting} in /etc/systemd/coredump.conf.d/90-coredoctor.conf",
        "systemd-coredump reads its configuration at each crash",
        ["mkdir -p /etc/systemd/coredump.conf.d",
         "printf '%s\\n' '[Coredump]' '" + setting + "' > /etc/systemd/coredump.conf.d/90-coredoctor.conf"])])


# --------------------------------------------------------------------------- socket mode (6.16+)
#: sizeof(sockaddr_un.sun_path) -- include/uapi/linux/un.h
UNIX_PATH_MAX = 108

#: The socket branch, in the kernel's order (6.18/6.19 fs/coredump.c, net/unix/af_unix.c). Each
#: row: id, what fails, the kernel's line, what it logs (the errno of kernel_connect()), the fix.
#: Proved against real listeners on 6.18 in tests/crashlab/test_socket_real.py.
SOCKET_RULES: List[Dict[str, str]] = [
    {"id": "path-written", "when": "core_pattern '@...' not absolute, '..' in it, or strlen >= 108",
     "kernel": "check_coredump_socket() in proc_dostring_coredump(): the sysctl write fails with EINVAL "
               "(also: the writer must be in init_task's mount namespace)",
     "log": "none (write(2) returns EINVAL)", "fix": "an absolute path of at most 107 bytes, no '..'"},
    {"id": "path-space", "when": "the socket path contains a space (check_coredump_socket() lets it through)",
     "kernel": "coredump_parse(): strchr(cn->corename, ' ') -> return false",
     "log": "Coredump socket may not %s contain spaces + format_corename failed, aborting core",
     "fix": "a path without spaces (spaces are reserved for future parameters)"},
    {"id": "lookup-missing", "when": "a component is missing as seen from init_task's fs root",
     "kernel": "unix_find_bsd(SOCK_COREDUMP): vfs_path_lookup(init_task root, LOOKUP_BENEATH | "
               "LOOKUP_NO_SYMLINKS | LOOKUP_NO_MAGICLINKS) with kernel credentials -> -ENOENT",
     "log": "Coredump socket connection %s failed -2", "fix": "start the server (bound in the host's view)"},
    {"id": "lookup-mntns", "when": "the server bound the path in another mount namespace (a private /tmp, "
               "a container): the listener exists, init's root does not see it",
     "kernel": "unix_find_bsd(SOCK_COREDUMP): the same vfs_path_lookup() from init_task.fs->root -> -ENOENT (no permission check: "
               "kernel credentials)",
     "log": "Coredump socket connection %s failed -2", "fix": "bind in the initial mount namespace"},
    {"id": "lookup-symlink", "when": "a directory component of the path is a symlink",
     "kernel": "LOOKUP_NO_SYMLINKS in unix_find_bsd(SOCK_COREDUMP) -> -ELOOP",
     "log": "Coredump socket connection %s failed -40", "fix": "the real path in core_pattern"},
    {"id": "not-socket", "when": "the last component is not a socket inode (a regular file, or a symlink: "
               "the last one is not followed)",
     "kernel": "unix_find_bsd(): !S_ISSOCK(inode->i_mode) -> -ECONNREFUSED",
     "log": "Coredump socket connection %s failed -111", "fix": "the real socket path in core_pattern"},
    {"id": "no-listener", "when": "a socket file, but nothing listens on it (the server closed or died)",
     "kernel": "unix_find_socket_byinode() finds nothing / not listening -> -ECONNREFUSED",
     "log": "Coredump socket connection %s failed -111", "fix": "start the server"},
    {"id": "wrong-type", "when": "the listener is SOCK_SEQPACKET or SOCK_DGRAM",
     "kernel": "coredump_sock_connect(): sock_create_kern(&init_net, AF_UNIX, SOCK_STREAM); "
               "unix_find_bsd(): sk->sk_type != type -> -EPROTOTYPE",
     "log": "Coredump socket connection %s failed -91", "fix": "listen with SOCK_STREAM"},
    {"id": "backlog-full", "when": "the listen backlog is full (the server does not accept)",
     "kernel": "kernel_connect(O_NONBLOCK | SOCK_COREDUMP) -> -EAGAIN",
     "log": "Coredump socket %s receive queue full", "fix": "accept faster, a larger backlog"},
    {"id": "netns", "when": "the listener is in another network namespace",
     "kernel": "path sockets are found by inode (unix_find_bsd()), not per namespace: it still connects",
     "log": "none", "fix": "none needed"},
    {"id": "request-protocol", "when": "'@@': the kernel sends struct coredump_req (size, mask = KERNEL | "
               "USERSPACE | REJECT | WAIT, size_ack) and blocks in recvmsg(MSG_PEEK | MSG_WAITALL) for "
               "struct coredump_ack, no timeout",
     "kernel": "coredump_sock_request(): a bad size/mask/spare gets a COREDUMP_MARK_* and no core; "
               "REJECT: no core, no WCOREDUMP; USERSPACE: nothing written, WCOREDUMP set; KERNEL: "
               "the core is written; WAIT: after SHUT_WR the kernel reads until the server closes",
     "log": "none for REJECT; Coredump socket had unexpected data / failed (WAIT)",
     "fix": "the server's answer decides"},
    {"id": "no-reader", "when": "the server accepts but never reads (or, with '@@', never acks)",
     "kernel": "the socket file is blocking (sock_alloc_file(socket, 0, ...)): dump_emit() sleeps in "
               "sock_alloc_send_pskb() (or recvmsg for the ack) with no timeout; the crashing task hangs "
               "in state S with PF_DUMPCORE until the server reads, closes, or SIGKILL (dump_interrupted(): "
               "then it dies of SIGKILL, no WCOREDUMP, the server keeps a partial core)",
     "log": "none", "fix": "a server that reads each connection to EOF"},
]
SOCKET_RULE_IDS = frozenset(r["id"] for r in SOCKET_RULES)


def socket_path_problem(path: str) -> Optional[Tuple[str, str]]:
    """``(rule id, what)`` when coredump_parse()/check_coredump_socket() refuse *path* (the part of
    core_pattern after ``@``/``@@``), else None."""
    if not path.startswith("/"):
        return ("path-written", "is not absolute")
    if ".." in path.split("/"):
        return ("path-written", "contains '..'")
    if len(path.encode("utf-8", "surrogateescape")) >= UNIX_PATH_MAX:
        return ("path-written", f"is {len(path.encode('utf-8', 'surrogateescape'))} bytes long "
                f"(at most {UNIX_PATH_MAX - 1})")
    if " " in path:
        return ("path-space", "contains a space")
    return None
