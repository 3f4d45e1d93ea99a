"""
Crash history
-------------
Where crashes leave traces after the fact. Groundwork for ``coredoctor crashes``: :mod:`.kmsg`
reads and classifies the kernel log.
"""
