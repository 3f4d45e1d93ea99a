"""
Core handlers
-------------
Facts about whatever receives a core in pipe or socket mode: the helper binary (host path:
usermode helpers run as root in the initial namespaces), listening unix sockets in the
initial network namespace (``/proc/1/net/unix``), and the configuration of the handlers
coredoctor knows: systemd-coredump (``coredump.conf`` and drop-ins), apport
(``/etc/default/apport``).
"""

import glob
import os
import stat

__all__ = ["read_handler", "listening_unix_sockets", "read_coredump_conf"]

_ACCEPTCON = 0x10000  # __SO_ACCEPTCON in /proc/net/unix Flags


def listening_unix_sockets(path="/proc/1/net/unix"):
    """Paths of listening unix sockets, with their type (stream / seqpacket / dgram)."""
    out = {}
    try:
        with open(path) as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) < 8:
                    continue
                flags = int(fields[3], 16)
                typ = {"0001": "stream", "0002": "dgram", "0005": "seqpacket"}.get(fields[4], fields[4])
                if flags & _ACCEPTCON:
                    out[fields[7]] = typ
    except OSError:
        return None
    return out


def _parse_ini(path, section, into):
    try:
        with open(path) as f:
            cur = None
            for line in f:
                line = line.strip()
                if not line or line[0] in "#;":
                    continue
                if line.startswith("["):
                    cur = line.strip("[]")
                    continue
                if cur == section and "=" in line:
                    k, _, v = line.partition("=")
                    into[k.strip()] = v.strip()
                    into.setdefault("_files", []).append(path) if path not in into.get("_files", []) else None
    except OSError:
        pass


def read_coredump_conf():
    """Merged [Coredump] settings of systemd-coredump (later files win, as systemd reads them)."""
    conf = {}
    files = ["/usr/lib/systemd/coredump.conf", "/lib/systemd/coredump.conf", "/etc/systemd/coredump.conf"]
    dropins = {}
    for d in ("/usr/lib/systemd/coredump.conf.d", "/run/systemd/coredump.conf.d", "/etc/systemd/coredump.conf.d"):
        for p in glob.glob(d + "/*.conf"):
            dropins[os.path.basename(p)] = p
    for p in files + [dropins[k] for k in sorted(dropins)]:
        _parse_ini(p, "Coredump", conf)
    return conf


def _helper_facts(path):
    facts = {"path": path, "exists": False}
    try:
        st = os.stat(path)
    except OSError as e:
        facts["error"] = os.strerror(e.errno)
        return facts
    facts.update(exists=True, regular=stat.S_ISREG(st.st_mode), mode=st.st_mode,
                 executable=bool(st.st_mode & 0o111) and stat.S_ISREG(st.st_mode))
    try:
        with open(path, "rb") as f:
            head = f.read(256)
        if head.startswith(b"#!"):
            interp = head[2:].split(b"\n", 1)[0].strip().split()
            if interp:
                ip = interp[0].decode("utf-8", "replace")
                facts["interpreter"] = ip
                facts["interpreter_exists"] = os.access(ip, os.X_OK)
        elif not head.startswith(b"\x7fELF"):
            facts["format"] = "unknown"
    except OSError:
        pass
    return facts


def read_handler(parsed):
    """Facts for the handler named by a parsed core_pattern (see kernel.core_pattern.parse)."""
    kind = parsed["kind"]
    if kind == "pipe":
        facts = {"helper": _helper_facts(parsed["helper"]) if parsed["helper"] else None}
        name = os.path.basename(parsed["helper"])
        if "systemd-coredump" in name:
            socks = listening_unix_sockets()
            facts["systemd_coredump"] = {"conf": read_coredump_conf(), "socket_known": socks is not None,
                                         "socket": (socks or {}).get("/run/systemd/coredump")}
        elif name == "apport":
            enabled = None
            try:
                with open("/etc/default/apport") as f:
                    for line in f:
                        if line.strip().startswith("enabled="):
                            enabled = line.strip().split("=", 1)[1].strip() not in ("0", "false", "no")
            except OSError:
                pass
            facts["apport"] = {"enabled": enabled}
        return facts
    if kind == "socket":
        p = parsed["path"]
        facts = {"path": p}
        try:
            st = os.lstat(p)
            facts["exists"] = True
            facts["is_socket"] = stat.S_ISSOCK(st.st_mode)
        except OSError:
            facts["exists"] = False
        socks = listening_unix_sockets()
        facts["listening"] = None if socks is None else socks.get(p)
        facts["listening_known"] = socks is not None
        return facts
    return {}
