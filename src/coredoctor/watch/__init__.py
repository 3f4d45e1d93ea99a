"""
coredoctor watch
----------------
Host-wide, for days: every loss of dumpability by a service or container process and every
fatal signal, with coredoctor's verdict and the kernel's outcome, as journal entries (or syslog
lines), and the metrics file kept current. :mod:`.entries` (pure: kinds, MESSAGE_IDs, framing,
catalog), :mod:`.sinks` (journal, syslog, JSON lines), :mod:`.run` (the loop).
"""
