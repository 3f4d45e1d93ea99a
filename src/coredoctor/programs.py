"""
Known programs
--------------
What coredoctor knows about particular programs, from their source: signal handlers that end
by re-raising the signal with SIG_DFL (so the kernel's default action, and the dump, still
happen), and programs that make themselves non-dumpable on purpose. Matched on the
executable's file name.
"""

from typing import Optional

__all__ = ["reraising_handler", "DELIBERATELY_UNDUMPABLE", "own_switch"]

#: exe name -> {signal: where the handler re-raises}
_RERAISE = {
    "ovs-vswitchd": {"SIGSEGV": "Open vSwitch lib/fatal-signal.c: the SIGSEGV handler sends a backtrace to "
                                "the monitor, restores SIG_DFL and raise()s the signal again"},
    "ovsdb-server": {"SIGSEGV": "Open vSwitch lib/fatal-signal.c: the SIGSEGV handler restores SIG_DFL and "
                                "raise()s the signal again"},
}

#: programs that call prctl(PR_SET_DUMPABLE, 0) or set RLIMIT_CORE 0 to protect secrets
DELIBERATELY_UNDUMPABLE = ("sshd", "ssh-agent", "sftp-server", "ssh-pkcs11-helper", "gpg-agent", "tor",
                           "keepassxc")


def reraising_handler(exe: Optional[str], signal: str) -> Optional[str]:
    """Evidence string if *exe*'s handler for *signal* is known to re-raise it, else None."""
    if not exe:
        return None
    name = exe.replace(" (deleted)", "").rsplit("/", 1)[-1]
    return _RERAISE.get(name, {}).get(signal)


#: daemons with their own switch to stay dumpable after dropping privileges: a fix with a
#: smaller blast radius than the host-wide fs.suid_dumpable=2
_SWITCHES = {
    "haproxy": "HAProxy's own switch: 'set-dumpable' in the global section of haproxy.cfg (prctl(PR_SET_DUMPABLE, 1) "
               "after the privilege drop); the core then follows HAProxy's chroot and user, so the core "
               "directory must exist inside the chroot and be writable by that user",
    "squid": "squid's own switch: 'coredump_dir /var/spool/squid' (or another directory writable by the squid user) "
             "in squid.conf; squid re-enables dumping when coredump_dir is set",
    "nginx": "nginx re-enables dumping in its workers itself; set 'worker_rlimit_core' and 'working_directory' "
             "(writable by the worker user) in nginx.conf",
    "named": "BIND re-enables dumping after changing user (named_os_changeuser); check its working directory",
}


def own_switch(exe: Optional[str]) -> Optional[str]:
    """The daemon's own switch for staying dumpable, if coredoctor knows one."""
    if not exe:
        return None
    return _SWITCHES.get(exe.replace(" (deleted)", "").rsplit("/", 1)[-1])
