"""
Daemons' own configuration
--------------------------
For each target that matches a row of :data:`coredoctor.origin.daemons.DAEMONS` (its exe
basename or comm AND its argv), the argv and the text of the config files the row names: the
file the argv names (nginx ``-c``, haproxy/squid/chronyd ``-f``, dnsmasq ``-C``, openvpn
``--config``) or the default, and what those include (nginx/squid/chrony ``include``, dnsmasq
``conf-file``/``conf-dir``, chrony ``confdir``), at most :data:`MAX_FILES` files of at most
:data:`MAX_TEXT` bytes each; and the lines of the wrapper scripts of
:data:`~coredoctor.origin.daemons.WRAPPERS` that pass an option on.

Hostile input: argv and config files are the daemon's, possibly an attacker's. Files are opened
``O_NOFOLLOW`` when their directory is not root-owned or is group/world-writable, only regular
files are read, reads are bounded, and what cannot be read is counted (``skipped``) and named
with its errno. A process in another mount namespace is read through ``/proc/PID/root``.

Shape (``daemons`` of coredoctor.snapshot/1)::

    {"procs": {"PID": {"program", "argv": [...], "conf_argv": [...] (the master's, for nginx
               workers), "files": [{"path", "key", "how": "argv"|"default"|"include", "from", "line"}]}},
     "files": {key: {"text": str|null, "error": errno name|null, "truncated": bool}},
     "wrappers": {path: {"lines": [[n, text], ...]}},
     "skipped": n}
"""

import errno
import os
import stat
from typing import Any, Dict, Iterable, List, Optional, Tuple

from coredoctor.origin import daemons as D

__all__ = ["read", "read_argv", "split_title", "MAX_TEXT", "MAX_ARGV", "MAX_FILES", "MAX_TOTAL"]

MAX_TEXT = 60000          # below validate.MAX_STR (one string)
MAX_ARGV = 1 << 16
MAX_FILES = D.MAX_FILES
MAX_TOTAL = 256           # files in one snapshot
MAX_NAMES = 1024          # directory entries looked at for one include


def read_argv(pid: int) -> Optional[List[str]]:
    """The argv of *pid* (None when unreadable); a process title that nginx rewrote into one
    string (``nginx: master process /usr/sbin/nginx -c FILE``) is split into its words."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read(MAX_ARGV)
    except OSError:
        return None
    words = [w.decode("utf-8", "replace") for w in data.split(b"\0")]
    if words and words[-1] == "":
        words.pop()
    return split_title(words)


def split_title(words: List[str]) -> List[str]:
    """An argv that nginx's master rewrote into one title string, as words again."""
    if len(words) == 1 and words[0].startswith("nginx: master process "):
        return ["nginx"] + words[0][len("nginx: master process "):].split()[1:]
    return words


def _err(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, "EIO")


def _untrusted_dir(path: str) -> bool:
    try:
        st = os.lstat(os.path.dirname(path) or "/")
    except OSError:
        return True
    return st.st_uid != 0 or bool(st.st_mode & 0o022)


def _read_file(full: str) -> Dict[str, Any]:
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if _untrusted_dir(full):
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(full, flags)
    except OSError as e:
        return {"text": None, "error": _err(e), "truncated": False}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {"text": None, "error": "EISDIR" if stat.S_ISDIR(os.fstat(fd).st_mode) else "ENOTREG",
                    "truncated": False}
        data = os.read(fd, MAX_TEXT + 1)
    except OSError as e:
        return {"text": None, "error": _err(e), "truncated": False}
    finally:
        os.close(fd)
    return {"text": data[:MAX_TEXT].decode("utf-8", "replace"), "error": None, "truncated": len(data) > MAX_TEXT}


def _names(full_dir: str) -> List[str]:
    try:
        if _untrusted_dir(full_dir.rstrip("/") + "/x") and os.path.islink(full_dir.rstrip("/")):
            return []  # a symlinked directory in a directory others can write: not followed
        return sorted(os.listdir(full_dir))[:MAX_NAMES]
    except OSError:
        return []


def _root_of(pid: int) -> str:
    try:
        a, b = os.stat(f"/proc/{pid}/root"), os.stat("/")
    except OSError:
        return ""
    return "" if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) else f"/proc/{pid}/root"


class _Reader:
    def __init__(self) -> None:
        self.files: Dict[str, Dict[str, Any]] = {}
        self.skipped = 0

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        if key not in self.files:
            if len(self.files) >= MAX_TOTAL:
                self.skipped += 1
                return None
            rec = _read_file(key)
            if rec["error"] not in (None, "ENOENT"):
                self.skipped += 1
            self.files[key] = rec
        return self.files[key]


def _files_for(d: D.Daemon, argv: List[str], cwd: Optional[str], root: str, rd: _Reader) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    queue: List[Tuple[str, str, Optional[str], Optional[int]]] = [
        (p, how, None, None) for p, how in D.config_paths(d, argv, cwd)]
    if d.program == "dnsmasq":   # -7/--conf-dir on the command line (Debian's init script passes one)
        hit = D.argv_option(argv, ("-7", "--conf-dir"))
        if hit:
            spec = hit[2]
            dirname, names = D.dir_entries(spec, _names(root + spec.split(",", 1)[0]))
            queue += [(os.path.join(dirname, x), "argv", None, None) for x in names]
    main = queue[0][0] if queue else "/"
    seen = set()
    while queue and len(out) < MAX_FILES:
        path, how, frm, line = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        key = root + path
        rec = rd.get(key)
        if rec is None:
            break
        out.append({"path": path, "key": key, "how": how, "from": frm, "line": line})
        if rec["text"] is None:
            continue
        more: List[Tuple[str, str, Optional[str], Optional[int]]] = []
        # nginx takes a relative include from its conf prefix (the main file's directory:
        # ngx_conf_full_name()), the others from the including file's directory
        for n, kind, spec in D.includes(d, D.statements(d.syntax, rec["text"]), main if d.program == "nginx" else path):
            if kind == "dir":
                dirname, names = D.dir_entries(spec, _names(root + spec.split(",", 1)[0]))
                if d.program == "chronyd":
                    names = [x for x in names if x.endswith(".conf")]
                more += [(os.path.join(dirname, x), "include", path, n) for x in names]
            elif any(c in os.path.basename(spec) for c in "*?["):
                dirname = os.path.dirname(spec)
                more += [(os.path.join(dirname, x), "include", path, n)
                         for x in D.glob_entries(spec, _names(root + dirname))]
            else:
                more.append((spec, "include", path, n))
        queue = more + queue   # an include is read where it stands, before what follows it
    return out


def _wrappers(programs: Iterable[str]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    progs = set(programs)
    for prog, _w, _o, _m, path, _src, needle in D.WRAPPERS:
        if prog not in progs or path in out:
            continue
        rec = _read_file(path)
        lines = [[n, ln.strip()] for n, ln in enumerate((rec["text"] or "").splitlines(), 1) if needle in ln]
        out[path] = {"lines": lines[:16]}
    return out


def read(procs: Iterable[Dict[str, Any]], all_procs: Optional[Dict[int, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """The ``daemons`` section for the processes *procs* (snapshot records); *all_procs* by pid
    gives an nginx worker's master (whose argv names the config file)."""
    rd = _Reader()
    out: Dict[str, Any] = {"procs": {}, "files": rd.files, "wrappers": {}, "skipped": 0}
    for p in procs:
        pid = p["pid"]
        if not D.candidate(p.get("exe"), p.get("comm")):
            continue  # match() needs the exe or comm to name a row: no argv read for the rest
        argv = read_argv(pid)
        if not argv:
            continue
        d = D.match(p.get("exe"), p.get("comm"), argv)
        if d is None:
            continue
        conf_argv = argv
        if d.program == "nginx" and argv[0].startswith("nginx: worker process"):
            conf_argv = read_argv(p.get("ppid") or 0) or ["nginx"]
        root = _root_of(pid)
        out["procs"][str(pid)] = {"program": d.program, "argv": argv[:256], "conf_argv": conf_argv[:256],
                                  "files": _files_for(d, conf_argv, p.get("cwd"), root, rd)}
    out["wrappers"] = _wrappers(e["program"] for e in out["procs"].values())
    out["skipped"] = rd.skipped
    return out
