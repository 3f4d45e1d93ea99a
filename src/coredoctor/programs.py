"""
Known programs
--------------
What coredoctor knows about particular programs, from their source: signal handlers that end
by re-raising the signal with SIG_DFL (so the kernel's default action, and the dump, still
happen), and programs that make themselves non-dumpable on purpose. Matched on the
executable's file name.
"""

__all__ = ["reraising_handler", "DELIBERATELY_UNDUMPABLE"]

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


def reraising_handler(exe, signal):
    """Evidence string if *exe*'s handler for *signal* is known to re-raise it, else None."""
    if not exe:
        return None
    name = exe.replace(" (deleted)", "").rsplit("/", 1)[-1]
    return _RERAISE.get(name, {}).get(signal)
