"""
The fix journal
---------------
One JSON file per fix under ``/var/lib/coredoctor/fixes``: every action with the exact prior
bytes (base64), mode and owner of each file, and each prior live value, written *before* the
action runs, so that a rollback restores the machine even when apply was killed midway.
"""

import json
import os
import secrets
import time
from typing import Any, Dict, List, Optional

from coredoctor.errors import UsageError

__all__ = ["JOURNAL_DIR", "new_id", "save", "load", "list_all", "atomic_write"]

JOURNAL_DIR = os.environ.get("COREDOCTOR_STATE_DIR", "/var/lib/coredoctor") + "/fixes"


def new_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def atomic_write(path: str, data: bytes, mode: int = 0o644, uid: Optional[int] = None,
                 gid: Optional[int] = None) -> None:
    """Write *data* (bytes) to *path* through a temporary file in the same directory and a
    rename: readers see the old bytes or the new ones, never a torn file."""
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".{os.path.basename(path)}.coredoctor-tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        if uid is not None:
            os.fchown(fd, uid, gid if gid is not None else -1)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    try:
        dfd = os.open(d, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:
        pass


def save(entry: Dict[str, Any]) -> None:
    os.makedirs(JOURNAL_DIR, mode=0o700, exist_ok=True)
    atomic_write(os.path.join(JOURNAL_DIR, entry["id"] + ".json"),
                 json.dumps(entry, indent=1).encode(), mode=0o600)


def load(fix_id: str) -> Dict[str, Any]:
    if not fix_id or "/" in fix_id or fix_id.startswith("."):
        raise UsageError(f"not a fix id: {fix_id!r}")
    path = os.path.join(JOURNAL_DIR, fix_id + ".json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UsageError(f"no fix {fix_id} (see coredoctor fix --list)")
    except ValueError as e:
        raise UsageError(f"the journal of fix {fix_id} is corrupt: {e}")


def list_all() -> List[Dict[str, Any]]:
    try:
        names = sorted(n for n in os.listdir(JOURNAL_DIR) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        try:
            with open(os.path.join(JOURNAL_DIR, n)) as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            continue
    return out
