"""
The kernel model
----------------
Pure functions over plain data: no I/O happens below this package. One module per kernel
concept, named as the kernel names it:

- :mod:`.signal` -- which signals dump and how disposition decides (kernel/signal.c)
- :mod:`.dumpable` -- SUID_DUMP_* values, mm->flags, where non-dumpability came from
- :mod:`.core_pattern` -- parsing and expanding kernel.core_pattern (fs/coredump.c)
- :mod:`.namei` -- permission checks done by path lookup and open (fs/namei.c)
- :mod:`.handlers` -- what user-space pipe/socket handlers do with a core
- :mod:`.table` -- the ordered gate records of the core-dump path; :mod:`.predicates` -- one
  function per gate; :mod:`.world` -- the facts one evaluation sees; :mod:`.evaluator` --
  worlds over possible dumpable values, merged; :mod:`.remedies` -- fixes as action records;
  :mod:`.reasons` -- verdict sentences from reason records; :mod:`.gates` -- their public face
"""
