"""
ABRT's policy
-------------
What ``abrt-hook-ccpp`` (RHEL 7/8's default core_pattern ``|/usr/libexec/abrt-hook-ccpp %s %c %p
%u %g %t %P %I %h``, installed by abrt-install-ccpp-hook) and abrtd keep of a core, and why they
drop one: :data:`RULES`, in the order the hook and then abrtd's post-create event apply them,
each row citing ABRT's source or configuration file. Read by check's handler-policy gate
(:func:`coredoctor.kernel.handlers.policy`) from the snapshot's ``handler.abrt``
(:mod:`coredoctor.snapshot.abrt`).
"""

import fnmatch
from typing import Any, Dict, List, Optional, Tuple

from coredoctor.kernel import remedies as R

__all__ = ["RULES", "RULE_IDS", "decide", "DEFAULTS"]

_HOOK = "abrt src/hooks/abrt-hook-ccpp.c main()"
_PKG = ("abrt src/plugins/abrt-action-save-package-data.c (post-create event of abrtd: the problem "
        "directory is deleted)")

#: the settings' defaults when no file sets them (ABRT's shipped abrt.conf, CCpp.conf,
#: abrt-action-save-package-data.conf on RHEL 7/8)
DEFAULTS = {
    "DumpLocation": "/var/spool/abrt", "MaxCrashReportsSize": "5000",
    "MakeCompatCore": "yes", "SaveFullCore": "yes",
    "ProcessUnpackaged": "no",
    "BlackList": "nspluginwrapper, valgrind, strace, mono-core",
    "BlackListedPaths": "/usr/share/doc/*, */example*, /usr/bin/nspluginviewer, "
                        "/usr/lib*/firefox/plugin-container",
}

#: the signals the hook makes a problem directory for (its switch on signal_no); any other
#: one only gets the compat core
SIGNALS = ("SIGILL", "SIGFPE", "SIGSEGV", "SIGBUS", "SIGABRT", "SIGTRAP")

#: where no RPM puts an executable (FHS): abrt-action-save-package-data finds no package
_NEVER_PACKAGED = ("/usr/local/", "/home/", "/tmp/", "/var/tmp/", "/root/", "/srv/", "/dev/shm/")

RULES: List[Dict[str, str]] = [
    {"id": "signal", "when": "the signal is not SIGILL/FPE/SEGV/BUS/ABRT/TRAP",
     "source": _HOOK + ": switch (signal_no) ... default: goto create_user_core"},
    {"id": "abrtd-down", "when": "abrtd is not running (no /var/run/abrt/abrtd.pid, or its pid has no /proc entry)",
     "source": _HOOK + ": daemon_is_ok() (libabrt): \"abrtd is not running. If it crashed, "
               "/proc/sys/kernel/core_pattern contains a stale value\""},
    {"id": "space", "when": "free space in DumpLocation below MaxCrashReportsSize x 1.25 (MiB, rounded up to 64)",
     "source": _HOOK + ": check_free_space(maxsize, g_settings_dump_location) (abrt.conf MaxCrashReportsSize)"},
    {"id": "repeat", "when": "the same executable crashed less than 20 s ago (DumpLocation/last-ccpp)",
     "source": _HOOK + ": check_recent_crash_file()"},
    {"id": "abrt-self", "when": "the executable's name starts with 'abrt'",
     "source": _HOOK + ": saved as DumpLocation/NAME-coredump, not as a problem directory"},
    {"id": "blacklisted-path", "when": "the executable matches BlackListedPaths",
     "source": _PKG + ", abrt-action-save-package-data.conf BlackListedPaths"},
    {"id": "blacklisted-package", "when": "the executable's package is in BlackList",
     "source": _PKG + ", abrt-action-save-package-data.conf BlackList"},
    {"id": "unpackaged", "when": "no package owns the executable and ProcessUnpackaged = no",
     "source": _PKG + ", abrt-action-save-package-data.conf ProcessUnpackaged"},
    {"id": "no-full-core", "when": "SaveFullCore = no: only a core_backtrace is kept",
     "source": "abrt CCpp.conf SaveFullCore (abrt-CCpp.conf(5))"},
    {"id": "compat-core", "when": "MakeCompatCore = yes and %c is not 0: also a core in the process's cwd, "
               "named by the saved pattern (/var/run/abrt/saved_core_pattern; 'core' if that is a pipe)",
     "source": _HOOK + ": open_user_core(), copyfd_sparse() (CCpp.conf MakeCompatCore)"},
]
RULE_IDS = frozenset(r["id"] for r in RULES)


def _src(rid: str) -> str:
    return next(r["source"] for r in RULES if r["id"] == rid)


def _bool(v: Optional[str]) -> bool:
    """libreport string_to_bool(): yes/on/true/1, any case."""
    return (v or "").strip().lower() in ("yes", "on", "true", "1")


def _setting(a: Dict[str, Any], part: str, key: str) -> str:
    d = a.get(part) if isinstance(a.get(part), dict) else {}
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, str) else DEFAULTS.get(key, "")


def _list(v: str) -> List[str]:
    return [x.strip() for x in v.split(",") if x.strip()]


def _fix(summary: str, text: str, why: str, cmds: List[str]) -> Dict[str, Any]:
    acts = [R.daemon_option("abrt", text, why, cmds)]
    return {"summary": summary, "actions": acts, "commands": [c for a in acts for c in R.commands(a)],
            "needs_restart": False, "limit": False, "pattern": False}


def _compat(a: Dict[str, Any], rlimit_core_soft: Optional[int]) -> Optional[str]:
    """Where the compat core goes, or None when the hook writes none."""
    if not _bool(_setting(a, "ccpp", "MakeCompatCore")) or rlimit_core_soft == 0:
        return None
    saved = a.get("saved_core_pattern")
    name = saved if isinstance(saved, str) and saved and not saved.startswith("|") else "core"
    return f"the process's cwd as {name!r} (MakeCompatCore = yes, the pattern saved by abrt-install-ccpp-hook)"


def decide(a: Dict[str, Any], exe: Optional[str], signal: Optional[str], rlimit_core_soft: Optional[int],
           ) -> Tuple[str, str, Optional[Dict[str, Any]]]:
    """``(status, evidence, fix)`` for what ABRT keeps of the core of *exe* killed by *signal*,
    from the snapshot's ``handler.abrt`` record *a* (a fix as kernel.handlers.policy returns)."""
    loc = _setting(a, "abrt", "DumpLocation") or "/var/spool/abrt"
    compat = _compat(a, rlimit_core_soft)
    also = f"; the hook still writes the compat core into {compat}" if compat else ""
    if signal and signal not in SIGNALS:
        st = "warn" if compat else "fail"
        return (st, f"abrt-hook-ccpp makes no problem directory for {signal} (only ILL, FPE, SEGV, BUS, ABRT, "
                f"TRAP){also or ': the core is dropped'} [{_src('signal')}]", None)
    d: Dict[str, Any] = a["daemon"] if isinstance(a.get("daemon"), dict) else {}
    if not d.get("running"):
        st = "warn" if compat else "fail"
        why = ("no pid file" if not d.get("pidfile") else f"{d['pidfile']} names pid {d.get('pid')}, which is not "
               "running")
        return (st, f"abrtd is not running ({why}): abrt-hook-ccpp logs \"abrtd is not running\" and keeps no "
                f"problem directory{also or '; the core is dropped'} [{_src('abrtd-down')}]",
                _fix("Start abrtd (or reset core_pattern if ABRT is no longer wanted)", "start abrtd",
                     "abrt-hook-ccpp keeps nothing while abrtd is down",
                     ["systemctl enable --now abrtd.service", "# or: abrt-install-ccpp-hook uninstall"]))
    try:
        mcrs = int(_setting(a, "abrt", "MaxCrashReportsSize") or "0")
    except ValueError:
        mcrs = 0
    free = a.get("free_bytes")
    if mcrs > 0 and isinstance(free, int):
        need = (mcrs + mcrs // 4) | 63
        if free < need * (1 << 20):
            return ("fail", f"{loc} has {free >> 20} MiB free, less than abrt-hook-ccpp wants for "
                    f"MaxCrashReportsSize = {mcrs} ({need} MiB): it refuses the core{also} [{_src('space')}]",
                    _fix(f"Free space in {loc} or lower MaxCrashReportsSize", f"free space in {loc}, or lower "
                         "MaxCrashReportsSize in /etc/abrt/abrt.conf", "the hook checks free space at each crash",
                         [f"abrt-cli remove <old problem directories in {loc}>",
                          "# or: sed -i 's/^MaxCrashReportsSize.*/MaxCrashReportsSize = 1000/' /etc/abrt/abrt.conf"]))
    base = (exe or "").rsplit("/", 1)[-1]
    if base.startswith("abrt"):
        return ("pass", f"abrt-hook-ccpp saves the core of its own programs as {loc}/{base}-coredump "
                f"[{_src('abrt-self')}]", None)
    if exe:
        for pat in _list(_setting(a, "pkgdata", "BlackListedPaths")):
            if fnmatch.fnmatchcase(exe, pat):
                return ("fail", f"{exe} matches BlackListedPaths entry {pat!r}: abrtd deletes the problem directory "
                        f"with its core after the hook wrote it{also} [{_src('blacklisted-path')}]",
                        _fix("Take the path out of ABRT's BlackListedPaths", f"remove {pat!r} from BlackListedPaths "
                             "in /etc/abrt/abrt-action-save-package-data.conf",
                             "abrt-action-save-package-data drops crashes of blacklisted paths",
                             ["${EDITOR:-vi} /etc/abrt/abrt-action-save-package-data.conf"]))
        unpack = _bool(_setting(a, "pkgdata", "ProcessUnpackaged"))
        if not unpack and exe.startswith(_NEVER_PACKAGED):
            return ("fail", f"{exe} belongs to no package (no RPM installs under {exe.split('/')[1]}/) and "
                    "ProcessUnpackaged = no: abrtd deletes the problem directory with its core"
                    f"{also} [{_src('unpackaged')}]",
                    _fix("Let ABRT keep crashes of unpackaged programs (ProcessUnpackaged = yes)",
                         "ProcessUnpackaged = yes in /etc/abrt/abrt-action-save-package-data.conf",
                         "abrt-action-save-package-data drops crashes of executables no package owns",
                         ["sed -i 's/^ProcessUnpackaged.*/ProcessUnpackaged = yes/' "
                          "/etc/abrt/abrt-action-save-package-data.conf"]))
    if not _bool(_setting(a, "ccpp", "SaveFullCore")):
        return ("fail", f"SaveFullCore = no (CCpp.conf): ABRT keeps only a core_backtrace in {loc}, no core"
                f"{also} [{_src('no-full-core')}]",
                _fix("Let ABRT keep full cores (SaveFullCore = yes)", "SaveFullCore = yes in /etc/abrt/plugins/CCpp.conf",
                     "without it the core is reduced to a backtrace",
                     ["sed -i 's/^SaveFullCore.*/SaveFullCore = yes/' /etc/abrt/plugins/CCpp.conf"]))
    bl = ", ".join(_list(_setting(a, "pkgdata", "BlackList")))
    return ("pass", f"abrt-hook-ccpp keeps it as {loc}/ccpp-<date>-<pid>/coredump (abrt-cli list){also}; abrtd "
            f"still deletes it if the executable's package is blacklisted ({bl or 'none'}), if no package owns it "
            "while ProcessUnpackaged = no, or if it crashed less than 20 s before (last-ccpp) "
            f"[{_src('compat-core')}; {_src('repeat')}]", None)
