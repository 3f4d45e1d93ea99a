"""
Domain errors
-------------
Every error the tool reports to a user. The CLI prints ``str(err)`` on one line and exits with
``err.exit_code``; nothing else reaches the user as a traceback.

Processes vanish while they are being read. :func:`proc_error` is the one place that turns
``ENOENT``/``ESRCH``/``EACCES`` from a ``/proc/PID`` read into :class:`NoSuchProcess`,
:class:`ProcessGone` or :class:`AccessDenied` (the idea of psutil's ``wrap_exceptions``); the
reader (:mod:`coredoctor.snapshot.proc`) raises :class:`ZombieProcess` (a ``NoSuchProcess``, as
in psutil) and :class:`KernelThread` for tasks without user memory. Each carries ``pid`` and,
once it was read, ``name``. They are raised everywhere in the reader and caught once, by the
caller that decides (``snapshot.take`` skips and counts; the tracer takes them as no answer).
"""

from __future__ import annotations

import contextlib
import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Iterator, Optional

__all__ = ["Error", "UsageError", "NoSuchProcess", "ProcessGone", "ZombieProcess", "KernelThread",
           "AccessDenied", "SnapshotError", "NotRoot", "proc_errors"]

EXIT_USAGE = 2


class Error(Exception):
    """Base of every coredoctor error; ``exit_code`` is what the CLI returns."""
    exit_code = EXIT_USAGE


class UsageError(Error):
    """Bad command line or a target that names nothing."""


def _who(pid: int, name: Optional[str]) -> str:
    return f"{name} (pid {pid})" if name else f"pid {pid}"


class NoSuchProcess(Error):
    """No process with that pid (it never existed or already exited before we looked).
    Carries ``pid`` and, when it was read before, ``name`` (psutil's ``NoSuchProcess``)."""

    def __init__(self, pid: int, msg: Optional[str] = None, name: Optional[str] = None) -> None:
        self.pid = pid
        self.name = name
        super().__init__(msg or f"no such process: {_who(pid, name)}")


class ProcessGone(NoSuchProcess):
    """The process exited while it was being read."""

    def __init__(self, pid: int, comm: Optional[str] = None) -> None:
        super().__init__(pid, f"{_who(pid, comm)} exited while it was being checked", name=comm)


class ZombieProcess(NoSuchProcess):
    """The process has exited and its parent has not reaped it yet (``State: Z``): the pid
    still answers, but there is no user memory left and nothing to dump (psutil's
    ``ZombieProcess``, a ``NoSuchProcess``)."""

    def __init__(self, pid: int, name: Optional[str] = None) -> None:
        super().__init__(pid, f"{_who(pid, name)} has no user memory (a kernel thread or a zombie): nothing "
                              "to dump -- it is a zombie (it exited; its parent has not reaped it)", name=name)


class KernelThread(Error):
    """A kernel thread: it has no user memory, so nothing to dump."""

    def __init__(self, pid: int, name: Optional[str] = None) -> None:
        self.pid = pid
        self.name = name
        super().__init__(f"{_who(pid, name)} has no user memory (a kernel thread or a zombie): nothing "
                         "to dump -- it is a kernel thread")


class AccessDenied(Error):
    """The kernel refused to show a process's state (EACCES/EPERM)."""

    def __init__(self, pid: int, what: str, name: Optional[str] = None) -> None:
        self.pid = pid
        self.name = name
        self.what = what
        super().__init__(f"permission denied reading {what} of {_who(pid, name)}: run as root")


class NotRoot(Error):
    """A subcommand that reads other processes' state needs root."""


class SnapshotError(Error):
    """A snapshot file that cannot be read or is not a coredoctor snapshot."""


def proc_error(e: OSError, pid: int, what: str = "/proc entry", comm: Optional[str] = None,
               root: str = "/proc", first: bool = False) -> Exception:
    """The domain error for an OS error from reading ``ROOT/PID/...`` (raise what it returns).

    ENOENT/ESRCH mean the process is gone: :class:`NoSuchProcess` on the *first* read (it was
    never there, or left before we looked), :class:`ProcessGone` after that; a ``ROOT/PID``
    that still exists but refuses us is :class:`AccessDenied`. Other errors are returned as
    they are.
    """
    if isinstance(e, (FileNotFoundError, ProcessLookupError)) or e.errno in (errno.ESRCH, errno.ENOENT):
        return NoSuchProcess(pid, name=comm) if first else ProcessGone(pid, comm)
    if isinstance(e, PermissionError):
        if not os.path.exists(f"{root}/{pid}"):
            return NoSuchProcess(pid, name=comm) if first else ProcessGone(pid, comm)
        return AccessDenied(pid, what, comm)
    return e


@contextlib.contextmanager
def proc_errors(pid: int, what: str = "/proc entry", comm: Optional[str] = None,
                root: str = "/proc") -> Iterator[None]:
    """:func:`proc_error` as a context manager."""
    try:
        yield
    except OSError as e:
        err = proc_error(e, pid, what, comm, root)
        if err is e:
            raise
        raise err from e
