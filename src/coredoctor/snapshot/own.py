"""
coredoctor's own files
----------------------
What an earlier ``coredoctor fix`` left in place: the text of the files it writes (the sysctl.d
file, the targets' systemd drop-ins) and whether the default core directory exists. The
remedies compare their records with these facts, so that check shows and fix plans only what is
still to do (``own_files`` and ``own_dirs`` of coredoctor.snapshot/1).
"""

import os
import stat
from typing import Dict, Iterable, Optional, Tuple

from coredoctor.kernel import remedies as R

__all__ = ["read"]

_DROPINS = ("core", "umask")
_MAX = 1 << 16


def _text(path: str) -> Optional[str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _MAX)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


def read(units: Iterable[Optional[str]]) -> Tuple[Dict[str, Optional[str]], Dict[str, bool]]:
    """``(own_files, own_dirs)``: path -> text (None when absent) and path -> is a directory."""
    paths = [R.SYSCTL_FILE]
    for u in sorted({u for u in units if u}):
        if "/" in u or u.startswith(".") or "\n" in u:
            continue  # not a unit name a drop-in directory can carry
        paths += [f"/etc/systemd/system/{u}.d/90-coredoctor-{n}.conf" for n in _DROPINS]
    files = {p: _text(p) for p in paths}
    try:
        is_dir = stat.S_ISDIR(os.lstat(R.DEFAULT_DIR).st_mode)
    except OSError:
        is_dir = False
    return files, {R.DEFAULT_DIR: is_dir}
