"""
Domain errors
-------------
Every error the tool reports to a user. The CLI prints ``str(err)`` on one line and exits with
``err.exit_code``; nothing else reaches the user as a traceback.

Processes vanish while they are being read. :func:`proc_errors` is the one place that turns
``ENOENT``/``ESRCH``/``EACCES`` from a ``/proc/PID`` read into :class:`NoSuchProcess`,
:class:`ProcessGone` or :class:`AccessDenied` (the idea of psutil's ``wrap_exceptions``).
"""

import contextlib
import errno
import os

__all__ = ["Error", "UsageError", "NoSuchProcess", "ProcessGone", "AccessDenied",
           "SnapshotError", "NotRoot", "proc_errors"]

EXIT_USAGE = 2


class Error(Exception):
    """Base of every coredoctor error; ``exit_code`` is what the CLI returns."""
    exit_code = EXIT_USAGE


class UsageError(Error):
    """Bad command line or a target that names nothing."""


class NoSuchProcess(Error):
    """No process with that pid (it never existed or already exited before we looked)."""

    def __init__(self, pid, msg=None):
        self.pid = pid
        super().__init__(msg or f"no such process: pid {pid}")


class ProcessGone(NoSuchProcess):
    """The process exited while it was being read."""

    def __init__(self, pid, comm=None):
        name = f"{comm} (pid {pid})" if comm else f"pid {pid}"
        super().__init__(pid, f"{name} exited while it was being checked")


class AccessDenied(Error):
    """The kernel refused to show a process's state (EACCES/EPERM)."""

    def __init__(self, pid, what):
        self.pid = pid
        super().__init__(f"permission denied reading {what} of pid {pid}: run as root")


class NotRoot(Error):
    """A subcommand that reads other processes' state needs root."""


class SnapshotError(Error):
    """A snapshot file that cannot be read or is not a coredoctor snapshot."""


@contextlib.contextmanager
def proc_errors(pid, what="/proc entry", comm=None):
    """Map OS errors from reading ``/proc/PID/...`` to domain errors.

    ENOENT/ESRCH mean the process is gone (or never was: the caller knows which); a
    ``/proc/PID`` that still exists but refuses us is :class:`AccessDenied`.
    """
    try:
        yield
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcessGone(pid, comm) from e
    except PermissionError as e:
        if not os.path.exists(f"/proc/{pid}"):
            raise ProcessGone(pid, comm) from e
        raise AccessDenied(pid, what) from e
    except OSError as e:
        if e.errno in (errno.ESRCH, errno.ENOENT):
            raise ProcessGone(pid, comm) from e
        raise
