"""
The tracer's reads
------------------
What :class:`~coredoctor.trace.transitions.Tracker` asks the kernel, from the one /proc reader
(:mod:`coredoctor.snapshot.proc.task`). The reader raises its error model; the tracer follows
tasks that may exit at any moment, so here -- the one place it catches them -- a task that is
gone (NoSuchProcess, which includes ProcessGone and ZombieProcess) or refuses (AccessDenied)
gives no answer: None.
"""

import functools
from typing import Any, Callable, Optional, TypeVar

from coredoctor.errors import AccessDenied, NoSuchProcess
from coredoctor.snapshot.proc import task as _task

__all__ = ["read_creds", "read_dumpable", "suid_dumpable", "open_pidfd", "exit_status", "zombie_status",
           "zombie_dumpcore", "self_dumpable", "exe_facts", "read_unit"]

T = TypeVar("T")


def _none_if_gone(f: Callable[..., T]) -> Callable[..., Optional[T]]:
    @functools.wraps(f)
    def call(*a: Any, **kw: Any) -> Optional[T]:
        try:
            return f(*a, **kw)
        except (NoSuchProcess, AccessDenied):
            return None
    return call


read_creds = _none_if_gone(_task.read_creds)
read_dumpable = _none_if_gone(_task.read_dumpable)
open_pidfd = _none_if_gone(_task.open_pidfd)
zombie_status = _none_if_gone(_task.zombie_status)
zombie_dumpcore = _none_if_gone(_task.zombie_dumpcore)
read_unit = _none_if_gone(_task.read_unit)
exit_status = _task.exit_status
exe_facts = _task.exe_facts
suid_dumpable = _task.suid_dumpable
self_dumpable = _task.self_dumpable
