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
from typing import Any, Collection, Dict, Iterator, Optional, Tuple

from coredoctor.history import BadRecord, OnSkip, finite_time, kmsg, lines_bounded, number

__all__ = ["available", "read", "parse_entry", "parse_json_line", "COREDUMP_MESSAGE_ID", "MAX_ENTRY"]

#: the longest ``-o json`` line read: journald keeps fields up to DATA_SIZE_MAX (768 MiB) but
#: writes MESSAGE lines of at most LineMax= (48K) from stdout streams; a coredump entry holds
#: its stack trace (and, with Storage=journal, the core as COREDUMP=, which -o json prints as
#: null above 4 KiB unless --all): 16 MiB is far beyond what is classified
MAX_ENTRY = 16 << 20

COREDUMP_MESSAGE_ID = "fc2e22bc6ee647b6b90729ab34a250b1"  # SD_MESSAGE_COREDUMP, systemd catalog
_DIRS = ("/var/log/journal", "/run/log/journal")
_MATCHES = ["_TRANSPORT=kernel", "+", "_TRANSPORT=audit", "+", f"MESSAGE_ID={COREDUMP_MESSAGE_ID}", "+",
            "SYSLOG_IDENTIFIER=systemd", "SYSLOG_IDENTIFIER=systemd-coredump", "SYSLOG_IDENTIFIER=apport"]


def available(directory: Optional[str] = None) -> Tuple[bool, str]:
    """``(True, why)`` when journalctl exists and there are journal files to read."""
    if shutil.which("journalctl") is None:
        return False, "journalctl is not installed"
    for d in ([directory] if directory else _DIRS):
        for _dirpath, _dirs, files in os.walk(d):
            if any(f.endswith((".journal", ".journal~")) for f in files):
                return True, f"journal files under {d}"
    return False, "no journal files (" + ", ".join([directory] if directory else _DIRS) + ")"


def _text(v: object, source: str = "journal") -> Optional[str]:
    if isinstance(v, list):
        if v and isinstance(v[0], int):  # non-UTF-8 fields come as byte arrays
            if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in v):
                raise BadRecord(source, "a byte-array field holds what is not a byte")
            return bytes(v).decode("utf-8", "replace")
        return _text(v[0], source) if v else None  # a field given more than once: the first
    if v is not None and not isinstance(v, str):
        raise BadRecord(source, f"a field is a JSON {type(v).__name__}, not a string")
    return v


def _int(v: object, kind: str = "pid", what: Optional[str] = None) -> Optional[int]:
    v = _text(v)
    if v is None or v == "":
        return None
    return number(v, kind, "journal", what)


def _usec(v: object, what: str) -> Optional[float]:
    """A journal timestamp (usec since the epoch, u64) as seconds, or None."""
    t = _int(v, "u64", what)
    return None if t is None else finite_time(t / 1e6, "journal", what)


def parse_entry(entry: dict, classify: "kmsg.Classify | None" = None,
                trusted_uids: "Collection[int] | None" = None) -> "kmsg.Event | None":
    """One journal entry (a decoded ``-o json`` object) -> an Event or None. *classify* is
    daemonlog's ``parse_message(ident, pid, message, when)`` for user-space lines.
    *trusted_uids*: the uids (journald's own ``_UID``, which a sender cannot set) that
    systemd-coredump, apport and systemd log as; an entry of theirs from another uid -- any user
    can send MESSAGE_ID=, COREDUMP_PID= or SYSLOG_IDENTIFIER=systemd -- is given ``untrusted``."""
    if not isinstance(entry, dict):
        raise BadRecord("journal", "an entry that is not a JSON object")
    e = _parse_entry(entry, classify)
    if e is not None and trusted_uids is not None and _text(entry.get("_TRANSPORT")) not in ("kernel", "audit"):
        uid = _int(entry.get("_UID"), "uid", "_UID")
        if uid is not None and uid not in trusted_uids:
            e["untrusted"] = (f"a journal entry of uid {uid} in the name of {e.get('handler') or e.get('ident')}: "
                              "any user can log such fields; not that program's word")
    return e


def trusted_uids() -> "set[int]":
    """root, and the user systemd-coredump drops to (when there is one)."""
    import pwd
    uids = {0}
    try:
        uids.add(pwd.getpwnam("systemd-coredump").pw_uid)
    except KeyError:
        pass
    return uids


def _parse_entry(entry: Dict[str, Any], classify: "kmsg.Classify | None") -> "kmsg.Event | None":
    msg = _text(entry.get("MESSAGE"))
    if msg is None:
        return None
    rt = _int(entry.get("__REALTIME_TIMESTAMP"), "u64", "__REALTIME_TIMESTAMP")
    when = finite_time(rt / 1e6, "journal", "__REALTIME_TIMESTAMP") if rt is not None else None
    transport = _text(entry.get("_TRANSPORT"))
    src_mono = _int(entry.get("_SOURCE_MONOTONIC_TIMESTAMP"), "u64", "_SOURCE_MONOTONIC_TIMESTAMP")
    mono = _int(entry.get("__MONOTONIC_TIMESTAMP"), "u64", "__MONOTONIC_TIMESTAMP")
    if when is not None and src_mono and mono and mono >= src_mono:
        # kernel lines are stamped when journald read them (at its start: the whole ring buffer at
        # once); the record's own time is that much earlier
        when = max(0.0, when - (mono - src_mono) / 1e6)
    if _text(entry.get("MESSAGE_ID")) == COREDUMP_MESSAGE_ID:
        ts = _usec(entry.get("COREDUMP_TIMESTAMP"), "COREDUMP_TIMESTAMP")
        filename = _text(entry.get("COREDUMP_FILENAME"))
        return kmsg.Event(event="handler-coredump", pid=_int(entry.get("COREDUMP_PID")),
                          comm=_text(entry.get("COREDUMP_COMM")), exe=_text(entry.get("COREDUMP_EXE")),
                          signo=_int(entry.get("COREDUMP_SIGNAL"), "signo"), signal=None,
                          unit=_text(entry.get("COREDUMP_UNIT")), gate=None,
                          time=ts if ts else when, path=filename,
                          truncated=_text(entry.get("COREDUMP_TRUNCATED")) in ("1", "yes", "true"),
                          handler="systemd-coredump", source="journal", line=msg,
                          cgroup=_text(entry.get("COREDUMP_CGROUP")))  # the crashed process's cgroup
    if transport == "kernel":
        e = kmsg.parse_line(msg, when, "journal")
    elif transport == "audit":
        if _text(entry.get("_AUDIT_TYPE")) != "1701":
            return None
        src = _int(entry.get("_SOURCE_REALTIME_TIMESTAMP"), "u64", "_SOURCE_REALTIME_TIMESTAMP") or rt or 0
        serial = str(_int(entry.get("_AUDIT_ID"), "u64", "_AUDIT_ID") or 0)
        body = msg.split(" ", 1)[1] if msg.startswith("ANOM_ABEND ") else msg
        e = kmsg.parse_line(f"type=1701 audit({src // 1000000}.{(src // 1000) % 1000:03d}:{serial}): {body}")
    elif classify is not None:
        ident = _text(entry.get("SYSLOG_IDENTIFIER")) or _text(entry.get("_COMM"))
        e = classify(ident, _int(entry.get("SYSLOG_PID"), what="SYSLOG_PID") or _int(entry.get("_PID")), msg, when)
        if e is not None and not e.get("unit"):
            e["unit"] = _text(entry.get("UNIT")) or None
        if e is not None and _text(entry.get("_SYSTEMD_CGROUP")):
            e["cgroup"] = _text(entry.get("_SYSTEMD_CGROUP"))  # the logging daemon's (a monitor's)
    else:
        return None
    if e is not None:
        e["source"] = "journal"
    return e


def parse_json_line(raw: bytes, classify: "kmsg.Classify | None" = None,
                    trusted: "Collection[int] | None" = None) -> "kmsg.Event | None":
    """One line of ``journalctl -o json`` -> :func:`parse_entry`; :class:`BadRecord` for a line
    that is no JSON object (or too long, or nested past the parser's depth)."""
    if len(raw) > MAX_ENTRY:
        raise BadRecord("journal", f"an entry of {len(raw)} bytes (at most {MAX_ENTRY} are read)")
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRecord("journal", "a line that is not JSON") from None
    return parse_entry(entry, classify, trusted)


def read(since: "float | None" = None, directory: "str | None" = None, classify: "kmsg.Classify | None" = None,
         journalctl: str = "journalctl", skipped: "OnSkip | None" = None) -> "Iterator[kmsg.Event]":
    """Classified events from the journal, oldest first, streamed from ``journalctl -o json``.
    ``skipped``: called with the :class:`BadRecord` of each entry left out."""
    cmd = [journalctl, "-o", "json", "--no-pager", "-q"]
    if directory:
        cmd += ["-D", directory]
    if since is not None:
        cmd += [f"--since=@{int(since)}"]
    cmd += _MATCHES
    trusted = trusted_uids()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    stdout = p.stdout
    assert stdout is not None  # (stdout=PIPE)

    def events() -> Iterator["kmsg.Event"]:
        for raw, n in lines_bounded(stdout, MAX_ENTRY):
            try:
                if raw is None:
                    raise BadRecord("journal", f"an entry of {n} bytes (at most {MAX_ENTRY} are read)")
                e = parse_json_line(raw, classify, trusted)
            except BadRecord as err:
                if skipped is not None:
                    skipped(err)
                continue
            if e is not None:
                yield e
    try:
        yield from kmsg.join_task_context(events())
    finally:
        if p.poll() is None:
            p.kill()
        stdout.close()
        p.wait()
