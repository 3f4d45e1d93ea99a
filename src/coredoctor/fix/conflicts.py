"""
What will fight a fix
---------------------
``systemd-sysctl`` and ``sysctl --system`` read ``*.conf`` from these directories, a file name in
an earlier directory masking the same name in a later one, and apply them sorted by file name:
a later file wins (sysctl.d(5)). Debian also links ``99-sysctl.conf`` to ``/etc/sysctl.conf``.
"""

import os
from typing import Any, Dict, List, Mapping

__all__ = ["SYSCTL_DIRS", "sysctl_files", "settings", "find"]

SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
KEYS = ("kernel.core_pattern", "fs.suid_dumpable", "kernel.core_pipe_limit", "kernel.core_uses_pid")


def sysctl_files() -> List[str]:
    """The effective sysctl.d files in the order they are applied."""
    chosen = {}
    for d in SYSCTL_DIRS:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            if n.endswith(".conf") and n not in chosen:
                chosen[n] = os.path.join(d, n)
    order = [chosen[n] for n in sorted(chosen)]
    if os.path.exists("/etc/sysctl.conf") and "99-sysctl.conf" not in chosen:
        order.append("/etc/sysctl.conf")  # read last by procps' sysctl --system
    return order


def _norm(key: str) -> str:
    return key.strip().lstrip("-").replace("/", ".")


def settings(path: str) -> Dict[str, str]:
    """{key: value} of the core-dump keys that *path* sets."""
    out = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line or line[0] in "#;" or "=" not in line:
                    continue
                k, _, v = line.partition("=")
                k = _norm(k)
                if k in KEYS:
                    out[k] = v.strip()
    except OSError:
        pass
    return out


def find(ours_path: str, wanted: Mapping[str, object]) -> List[Dict[str, Any]]:
    """Conflicts with *wanted* ({key: value}) written to *ours_path*: files applied after ours
    that set a key differently (they win at boot), and known programs that rewrite the keys."""
    files = sysctl_files()
    if ours_path not in files:
        files = sorted(files + [ours_path], key=lambda p: (p == "/etc/sysctl.conf", os.path.basename(p)))
    after = False
    found: List[Dict[str, Any]] = []
    for p in files:
        if p == ours_path:
            after = True
            continue
        for k, v in settings(p).items():
            if k in wanted and str(v) != str(wanted[k]):
                found.append({"kind": "sysctl.d", "path": p, "key": k, "value": v,
                              "effect": ("applied after coredoctor's file: it wins at boot" if after
                                         else "applied before coredoctor's file: overridden"),
                              "wins": after})
    if os.path.exists("/usr/share/apport/apport") or os.path.exists("/etc/init.d/apport"):
        found.append({"kind": "apport", "path": "/usr/share/apport/apport",
                      "effect": "stopping apport (apport.service ExecStop) writes fs.suid_dumpable=0 and "
                                "core_pattern 'core': disabling apport undoes this fix", "wins": True})
    if not any(os.path.exists(os.path.join(d, "50-coredump.conf")) for d in SYSCTL_DIRS) and _systemd_is_init():
        found.append({"kind": "systemd", "path": "/proc/1/exe",
                      "effect": "systemd writes '|/bin/false' into core_pattern at boot when 50-coredump.conf "
                                "is missing (systemd issue #25831); coredoctor's later file overrides it",
                      "wins": False})
    for c in found:
        name = os.path.basename(c.get("path", "")).lower()
        if c["kind"] == "sysctl.d" and any(w in name for w in ("cis", "harden", "stig", "security", "lynis")):
            c["baseline"] = True
            c["effect"] += " (a hardening baseline: CIS 1.5.x/STIG want fs.suid_dumpable=0; agree on an exception)"
    return found


def _systemd_is_init() -> bool:
    if os.path.isdir("/run/systemd/system"):  # sd_booted()
        return True
    try:
        return os.readlink("/proc/1/exe").endswith("/systemd")
    except OSError:
        return False
