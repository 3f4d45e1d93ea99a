"""Moved to :mod:`coredoctor.snapshot.proc.ptrace` (the one /proc reader); kept so that
``from coredoctor.snapshot import ptrace`` goes on working."""
from coredoctor.snapshot.proc.ptrace import probe_root_dumpable  # noqa: F401
