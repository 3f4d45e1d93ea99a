"""Watching processes live through a private tracefs instance: the moments a process loses
dumpability (set*id, prctl, exec), its fatal signals, and their user-space stacks."""
