"""
The journal
-----------
Crash traces in systemd's journal, read through ``journalctl -o json`` (one JSON object per line,
streamed through a pipe: memory stays bounded whatever the journal's size). Only entries that
can matter are asked for: the kernel transport (classified by :mod:`.kmsg`), the audit transport
(``ANOM_ABEND``, journald reads the audit socket itself), and the messages of systemd (unit
results: ``code=dumped`` vs ``code=killed``), systemd-coredump and apport (classified by
:mod:`.daemonlog`). systemd-coredump's own structured entry (``MESSAGE_ID``
fc2e22bc6ee647b6b90729ab34a250b1, ``COREDUMP_PID``, ``COREDUMP_FILENAME``, ``COREDUMP_TRUNCATED``
...) becomes one ``handler-coredump`` event.

Feature-detected: no ``journalctl``, or no journal files, means this source is ``absent``.
"""

import json
import os
import shutil
import subprocess

from coredoctor.history import kmsg

__all__ = ["available", "read", "parse_entry", "COREDUMP_MESSAGE_ID"]

COREDUMP_MESSAGE_ID = "fc2e22bc6ee647b6b90729ab34a250b1"  # SD_MESSAGE_COREDUMP, systemd catalog
_DIRS = ("/var/log/journal", "/run/log/journal")
_MATCHES = ["_TRANSPORT=kernel", "+", "_TRANSPORT=audit", "+", f"MESSAGE_ID={COREDUMP_MESSAGE_ID}", "+",
            "SYSLOG_IDENTIFIER=systemd", "SYSLOG_IDENTIFIER=systemd-coredump", "SYSLOG_IDENTIFIER=apport"]


def available(directory=None):
    """``(True, why)`` when journalctl exists and there are journal files to read."""
    if shutil.which("journalctl") is None:
        return False, "journalctl is not installed"
    for d in ([directory] if directory else _DIRS):
        for _dirpath, _dirs, files in os.walk(d):
            if any(f.endswith((".journal", ".journal~")) for f in files):
                return True, f"journal files under {d}"
    return False, "no journal files (" + ", ".join([directory] if directory else _DIRS) + ")"


def _text(v):
    if isinstance(v, list):
        if v and isinstance(v[0], int):  # non-UTF-8 fields come as byte arrays
            return bytes(v).decode("utf-8", "replace")
        return _text(v[0]) if v else None
    return v


def _int(v):
    v = _text(v)
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def parse_entry(entry, classify=None):
    """One journal entry (a decoded ``-o json`` object) -> an Event or None. *classify* is
    daemonlog's ``parse_message(ident, pid, message, when)`` for user-space lines."""
    msg = _text(entry.get("MESSAGE"))
    if msg is None:
        return None
    rt = _int(entry.get("__REALTIME_TIMESTAMP"))
    when = rt / 1e6 if rt is not None else None
    transport = _text(entry.get("_TRANSPORT"))
    src_mono, mono = _int(entry.get("_SOURCE_MONOTONIC_TIMESTAMP")), _int(entry.get("__MONOTONIC_TIMESTAMP"))
    if when is not None and src_mono and mono and mono >= src_mono:
        # kernel lines are stamped when journald read them (at its start: the whole ring buffer at
        # once); the record's own time is that much earlier
        when -= (mono - src_mono) / 1e6
    if _text(entry.get("MESSAGE_ID")) == COREDUMP_MESSAGE_ID:
        ts = _int(entry.get("COREDUMP_TIMESTAMP"))
        filename = _text(entry.get("COREDUMP_FILENAME"))
        return kmsg.Event(event="handler-coredump", pid=_int(entry.get("COREDUMP_PID")),
                          comm=_text(entry.get("COREDUMP_COMM")), exe=_text(entry.get("COREDUMP_EXE")),
                          signo=_int(entry.get("COREDUMP_SIGNAL")), signal=None,
                          unit=_text(entry.get("COREDUMP_UNIT")), gate=None,
                          time=ts / 1e6 if ts else when, path=filename,
                          truncated=_text(entry.get("COREDUMP_TRUNCATED")) in ("1", "yes", "true"),
                          handler="systemd-coredump", source="journal", line=msg)
    if transport == "kernel":
        e = kmsg.parse_line(msg, when)
    elif transport == "audit":
        if _text(entry.get("_AUDIT_TYPE")) != "1701":
            return None
        src = _int(entry.get("_SOURCE_REALTIME_TIMESTAMP")) or rt or 0
        serial = _text(entry.get("_AUDIT_ID")) or "0"
        body = msg.split(" ", 1)[1] if msg.startswith("ANOM_ABEND ") else msg
        e = kmsg.parse_line(f"type=1701 audit({src // 1000000}.{(src // 1000) % 1000:03d}:{serial}): {body}")
    elif classify is not None:
        ident = _text(entry.get("SYSLOG_IDENTIFIER")) or _text(entry.get("_COMM"))
        e = classify(ident, _int(entry.get("SYSLOG_PID")) or _int(entry.get("_PID")), msg, when)
        if e is not None and not e.get("unit"):
            e["unit"] = _text(entry.get("UNIT")) or None
    else:
        return None
    if e is not None:
        e["source"] = "journal"
    return e


def read(since=None, directory=None, classify=None, journalctl="journalctl"):
    """Classified events from the journal, oldest first, streamed from ``journalctl -o json``."""
    cmd = [journalctl, "-o", "json", "--no-pager", "-q"]
    if directory:
        cmd += ["-D", directory]
    if since is not None:
        cmd += [f"--since=@{int(since)}"]
    cmd += _MATCHES
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    def events():
        for raw in p.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            e = parse_entry(entry, classify)
            if e is not None:
                yield e
    try:
        yield from kmsg.join_task_context(events())
    finally:
        if p.poll() is None:
            p.kill()
        p.stdout.close()
        p.wait()
