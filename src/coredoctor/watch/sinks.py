"""
Watch sinks
-----------
Where ``coredoctor watch`` sends its entries: the journal (native protocol over the datagram
socket /run/systemd/journal/socket; an entry too large for one datagram goes in a sealed
memfd passed with SCM_RIGHTS, as sd_journal_sendv() does), else syslog (/dev/log, datagram,
else stream with a newline), else JSON lines on standard output. Stdlib sockets only.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys

from coredoctor.watch import entries as EN

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, IO, Optional

__all__ = ["JOURNAL_SOCKET", "SYSLOG_SOCKET", "Journal", "Syslog", "JsonLines", "open_sink", "notify"]

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_SOCKET = "/dev/log"


class Journal:
    name = "journal"

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.sent = 0

    def send(self, e: "Dict[str, Any]") -> None:
        data = EN.native(e)
        try:
            self._send(data)
        except OSError as ex:  # journald restarted (a new socket at the same path): once more
            if ex.errno not in (errno.ECONNREFUSED, errno.ENOTCONN, errno.ENOENT):
                raise
            self.sock.close()
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.connect(self.path)
            self._send(data)
        self.sent += 1

    def _send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError as ex:
            if ex.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> None:
        fd = os.memfd_create("coredoctor-journal", os.MFD_CLOEXEC | getattr(os, "MFD_ALLOW_SEALING", 2))
        try:
            os.write(fd, data)
            try:
                import fcntl
                seals = 0x0001 | 0x0002 | 0x0004 | 0x0008  # F_SEAL_SEAL|SHRINK|GROW|WRITE
                fcntl.fcntl(fd, 1033, seals)  # F_ADD_SEALS
            except OSError:
                pass
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))])
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()


class Syslog:
    name = "syslog"

    def __init__(self, path: str = SYSLOG_SOCKET) -> None:
        self.path = path
        self.stream = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            if e.errno != errno.EPROTOTYPE:
                raise
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(path)
            self.stream = True
        self.sent = 0

    def send(self, e: "Dict[str, Any]") -> None:
        line = EN.syslog_line(e, os.getpid())
        if self.stream:
            self.sock.sendall(line + b"\n")
        else:
            self.sock.send(line)
        self.sent += 1

    def close(self) -> None:
        self.sock.close()


class JsonLines:
    name = "json"

    def __init__(self, out: "Optional[IO[str]]" = None) -> None:
        self.out = out or sys.stdout
        self.sent = 0

    def send(self, e: "Dict[str, Any]") -> None:
        doc = dict(e["fields"], MESSAGE=e["message"], MESSAGE_ID=e["message_id"], PRIORITY=str(e["priority"]))
        self.out.write(json.dumps(doc, sort_keys=True, ensure_ascii=True) + "\n")
        self.out.flush()
        self.sent += 1

    def close(self) -> None:
        try:
            self.out.flush()
        except (OSError, ValueError):
            pass


def open_sink(kind: str = "auto", journal: str = JOURNAL_SOCKET, syslog: str = SYSLOG_SOCKET) -> "Any":
    """*kind*: journal, syslog, json, or auto (the journal when its socket answers, else
    syslog, else JSON lines on stdout). An asked-for sink that cannot be opened is an error."""
    from coredoctor.errors import UsageError
    if kind == "json":
        return JsonLines()
    for name, cls, path in (("journal", Journal, journal), ("syslog", Syslog, syslog)):
        if kind not in ("auto", name):
            continue
        try:
            return cls(path)
        except OSError as e:
            if kind == name:
                raise UsageError(f"--log {name}: cannot connect to {path}: {e.strerror or e}")
    if kind == "auto":
        return JsonLines()
    raise UsageError(f"--log {kind}: not a sink (journal, syslog, json, auto)")


def notify(state: str) -> bool:
    """sd_notify(3): *state* (``READY=1``, ``RELOADING=1``, ``STOPPING=1``) to $NOTIFY_SOCKET,
    when systemd gave one (Type=notify); False when there is none."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or path[0] not in "/@":
        return False
    addr = "\0" + path[1:] if path[0] == "@" else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.send(state.encode())
        return True
    except OSError:
        return False
