"""
The audit log
-------------
``ANOM_ABEND`` (type 1701) records that ``audit_core_dumps()`` (kernel/auditsc.c) emits for every
process killed by a core-dumping signal -- before any dump gate, so also when no core was
written. With auditd running they land in ``/var/log/audit/audit.log`` (``log_file`` in
auditd.conf) and its rotations ``audit.log.1`` ...; without it the kernel prints them to its own
log, where :mod:`.kmsg` classifies them. ``audit(TIME:SERIAL)`` names one record in every place
it appears, so the correlation dedupes on it.
"""

import glob
import os
import re
from typing import Iterator

from typing import List

from coredoctor.history import BadRecord, MAX_LINE, OnSkip, kmsg, lines_bounded

__all__ = ["log_files", "read"]

_CONF = "etc/audit/auditd.conf"
_DEFAULT = "/var/log/audit/audit.log"


def _configured_log(root: str) -> str:
    try:
        with open(os.path.join(root, _CONF)) as f:
            for line in f:
                k, sep, v = line.partition("=")
                if sep and k.strip() == "log_file" and v.strip():
                    return v.strip()
    except OSError:
        pass
    return _DEFAULT


def _rotation(path: str) -> int:
    m = re.search(r"\.(\d+)$", path)
    return int(m.group(1)) if m else 0


def log_files(root: str = "/") -> List[str]:
    """audit.log and its numbered rotations under *root*, newest first."""
    base = os.path.join(root, _configured_log(root).lstrip("/"))
    found = [base] if os.path.isfile(base) else []
    found += sorted((p for p in glob.glob(glob.escape(base) + ".*") if re.search(r"\.\d+$", p)), key=_rotation)
    return found


def read(paths: "list[str] | None" = None, since: "float | None" = None, root: str = "/",
         skipped: "OnSkip | None" = None) -> "Iterator[kmsg.Event]":
    """ANOM_ABEND records as :class:`kmsg.Event` (``event`` ``audit-abend``, ``serial``,
    ``source`` ``audit:PATH``), in file order. Files that cannot be read are skipped: the
    caller reports them through :func:`log_files` and what came back. ``skipped``: called with
    the :class:`BadRecord` of each record left out (a line longer than any audit record, a
    number no kernel prints)."""
    for path in (log_files(root) if paths is None else paths):
        try:
            f = open(path, "rb")
        except OSError:
            continue
        source = f"audit:{path}"
        with f:
            for raw, n in lines_bounded(f, MAX_LINE):
                if raw is None:  # MAX_AUDIT_MESSAGE_LENGTH is 8970 (include/uapi/linux/audit.h)
                    if skipped is not None:
                        skipped(BadRecord(source, f"a line of {n} bytes (an audit record has at most 8970)"))
                    continue
                if b"ANOM_ABEND" not in raw and b"type=1701" not in raw:
                    continue
                line = raw.decode("utf-8", "replace").rstrip("\n").split("\x1d", 1)[0]  # ENRICHED fields
                try:
                    e = kmsg.parse_line(line, None, source)
                except BadRecord as err:
                    if skipped is not None:
                        skipped(err)
                    continue
                if e is None or e["event"] != "audit-abend":
                    continue
                if since is not None and e["time"] is not None and e["time"] < since:
                    continue
                e["source"] = f"audit:{path}"
                yield e
