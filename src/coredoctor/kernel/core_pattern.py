"""
core_pattern
------------
Parse ``kernel.core_pattern`` and expand it the way ``format_corename()`` (fs/coredump.c) does.

- ``|helper args`` -- pipe mode. Since 5.3 (commit 315c69261dd3, "coredump: split pipe command
  whitespace before expanding template") the pattern is split on white space *before*
  expansion, so each token is one argv entry. Leading white space after ``|`` is skipped; a
  bare ``|`` fails (``format_corename failed``).
- ``@/path`` / ``@@/path`` -- socket mode (6.16+ / 6.17+), only where ``kernel.core_modes``
  lists ``socket``; on older kernels ``@/x`` is just a relative file name.
- anything else -- a file name, relative to the crashing process's cwd unless absolute.
  ``kernel.core_uses_pid`` appends ``.PID`` when the pattern has no ``%p`` (file mode only).

Values unknown before the crash (time, CPU, pidfd, a thread id) expand to ``None`` parts; the
rendered form shows them as ``*``.
"""

import functools
from typing import Any, Dict, List, Mapping, Optional, Tuple

#: one pattern part: text, or None for a value not known before the crash
Parts = List[Optional[str]]

__all__ = ["parse", "expand", "SPECIFIERS", "render", "split_dir"]

#: format_corename() specifiers (6.19); the value each needs from the crashing process.
SPECIFIERS = {
    "%": "a literal %",
    "p": "PID in its own pid namespace (task_tgid_vnr)",
    "P": "PID in the initial pid namespace (task_tgid_nr)",
    "i": "TID in its own pid namespace (task_pid_vnr)",
    "I": "TID in the initial pid namespace (task_pid_nr)",
    "u": "real UID (init_user_ns)",
    "g": "real GID (init_user_ns)",
    "d": "dump mode (__get_dumpable())",
    "s": "signal number",
    "t": "time of the dump (seconds since the epoch)",
    "h": "hostname (uts namespace nodename, '/' -> '!')",
    "e": "comm ('/' -> '!')",
    "E": "executable path ('/' -> '!')",
    "f": "executable file name",
    "c": "RLIMIT_CORE soft limit",
    "C": "CPU the task ran on",
    "F": "pidfd of the process (pipe mode, 6.16+)",
}


@functools.lru_cache(maxsize=64)
def parse(pattern: str, socket_supported: bool = False) -> Dict[str, Any]:
    """Classify a pattern: ``{"kind": "file"|"pipe"|"socket", ...}`` (cached: do not mutate).

    TypeError for anything but a string (a snapshot's value must be validated first)."""
    if not isinstance(pattern, str):
        raise TypeError(f"core_pattern must be a string, not {type(pattern).__name__}")
    p = pattern.rstrip("\n")
    if p.startswith("|"):
        tokens = p[1:].split()
        return {"kind": "pipe", "pattern": p, "tokens": tokens,
                "helper": tokens[0] if tokens else "", "valid": bool(tokens)}
    if socket_supported and p.startswith("@"):
        request = p.startswith("@@")
        path = p[2:] if request else p[1:]
        valid = path.startswith("/") and ".." not in path and len(path) < 108 and " " not in path
        return {"kind": "socket", "pattern": p, "path": path, "protocol": "request" if request else "plain",
                "valid": valid}
    return {"kind": "file", "pattern": p, "absolute": p.startswith("/"), "valid": True,
            "has_pid": "%p" in p.replace("%%", "")}


def _esc(s: object) -> Optional[str]:
    return None if s is None else str(s).replace("/", "!")


def _value(spec: str, ctx: Mapping[str, Any]) -> Optional[str]:
    """Value of one specifier from *ctx* (dict of known facts), or None if unknown."""
    g = ctx.get
    if spec == "p":
        return _s(g("pid_ns"))
    if spec == "P":
        return _s(g("pid"))
    if spec == "i":
        return _s(g("tid_ns"))
    if spec == "I":
        return _s(g("tid"))
    if spec == "u":
        return _s(g("uid"))
    if spec == "g":
        return _s(g("gid"))
    if spec == "d":
        return _s(g("dumpable"))
    if spec == "s":
        return _s(g("signo"))
    if spec == "t":
        return _s(g("time"))
    if spec == "h":
        return _esc(g("hostname"))
    if spec == "e":
        return _esc(g("comm"))
    if spec == "E":
        return _esc(g("exe"))
    if spec == "f":
        exe = g("exe")
        return None if exe is None else str(exe).rsplit("/", 1)[-1]
    if spec == "c":
        return _s(g("rlimit_core"))
    if spec == "C":
        return _s(g("cpu"))
    if spec == "F":
        return _s(g("pidfd")) if g("mode") == "pipe" else ""  # a pidfd exists only for pipe helpers
    return ""  # unknown specifiers expand to nothing (format_corename's default: break)


def _s(v: object) -> Optional[str]:
    return None if v is None else str(v)


def _expand_text(text: str, ctx: Mapping[str, Any]) -> Parts:
    """Expand one piece of pattern text into a list of parts (str or None for unknown)."""
    if "%" not in text:  # most patterns ("core", "/var/crash/core"): nothing to expand
        return [text] if text else []
    parts: Parts = []
    i = 0
    n = len(text)
    buf = ""
    while i < n:
        j = text.find("%", i)
        if j < 0:
            buf += text[i:]
            break
        buf += text[i:j]
        i = j + 1
        if i >= n:  # single % at the end: dropped
            break
        spec = text[i]
        i += 1
        if spec == "%":
            buf += "%"
            continue
        v = _value(spec, ctx)
        if v is None:
            if buf:
                parts.append(buf)
                buf = ""
            parts.append(None)
        else:
            buf += v
    if buf:
        parts.append(buf)
    return parts


def expand(parsed: Mapping[str, Any], ctx: Mapping[str, Any], core_uses_pid: int = 0) -> Dict[str, Any]:
    """Expand a parsed pattern for a process described by *ctx*.

    Returns for file mode ``{"kind": "file", "parts": [...], "absolute": bool}``; for pipe mode
    ``{"kind": "pipe", "argv": [[parts], ...]}``; for socket mode the path verbatim.
    """
    kind = parsed["kind"]
    if kind == "pipe":
        ctx = dict(ctx, mode="pipe")
        return {"kind": "pipe", "argv": [_expand_text(t, ctx) for t in parsed["tokens"]]}
    if kind == "socket":
        return {"kind": "socket", "parts": [parsed["path"]]}
    parts = _expand_text(parsed["pattern"], ctx)
    if core_uses_pid and not parsed.get("has_pid"):
        parts.append("." + (_s(ctx.get("pid_ns")) or ""))
    first = next((p for p in parts if p != ""), "")
    return {"kind": "file", "parts": parts, "absolute": isinstance(first, str) and first.startswith("/")}


def render(parts: Parts) -> str:
    """Join parts, unknown ones as ``*``."""
    return "".join("*" if p is None else p for p in parts)


def split_dir(parts: Parts) -> Tuple[Optional[str], Parts]:
    """Split a file-mode name into (directory, basename parts).

    Returns ``(dir_string_or_None, base_parts)``; the directory is None when an unknown value
    sits inside it. A name without '/' has directory '.' (the cwd).
    """
    text_idx = None
    text = ""
    for idx in range(len(parts) - 1, -1, -1):
        p = parts[idx]
        if p is not None and "/" in p:
            text_idx = idx
            text = p
            break
    if text_idx is None:
        return ".", list(parts)
    head = parts[:text_idx]
    cut = text.rfind("/")
    dir_tail = text[:cut + 1]
    base_first = text[cut + 1:]
    if any(p is None for p in head):
        return None, ([base_first] if base_first else []) + parts[text_idx + 1:]
    d = "".join(p for p in head if p is not None) + dir_tail  # (no None in head here)
    if len(d) > 1:
        d = d.rstrip("/") or "/"
    return d, ([base_first] if base_first else []) + parts[text_idx + 1:]
