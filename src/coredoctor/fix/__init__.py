"""
fix
---
Apply the smallest change set that makes a target's next crash leave a core, safely and
reversibly: :mod:`.plan` (pure: failing gates -> actions), :mod:`.conflicts` (what will fight the
fix: sysctl.d order, apport, systemd, hardening baselines), :mod:`.journal` (prior bytes and live
values under /var/lib/coredoctor) and :mod:`.actions` (atomic apply and byte-for-byte rollback).
"""
