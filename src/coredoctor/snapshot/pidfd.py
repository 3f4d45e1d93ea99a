"""Moved to :mod:`coredoctor.snapshot.proc.pidfd` (the one /proc and pidfd reader); kept so
that ``from coredoctor.snapshot import pidfd`` goes on working."""
from coredoctor.snapshot.proc.pidfd import *  # noqa: F401,F403
from coredoctor.snapshot.proc.pidfd import PIDFD_GET_INFO, PIDFD_INFO_EXIT, coredump_info, probe  # noqa: F401
