"""Text rendering of ``coredoctor trace`` records: a compact timeline, one line per event
(and one indented line for the stack of a transition)."""

import textwrap
import time

from typing import Any, Dict, List, Optional

from coredoctor.trace.symbols import format_frame

__all__ = ["line", "safe"]

#: control characters (C0, DEL, C1), the line and paragraph separators, and lone surrogates:
#: escaped, so that a crafted process or file name cannot start an output line of its own
_UNSAFE = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
           for c in list(range(0x20)) + list(range(0x7F, 0xA0)) + [0x2028, 0x2029]}
_UNSAFE[ord("\\")] = "\\\\"


def safe(s: object) -> str:
    """*s* as one printable line: control characters escaped (``\\x0a``), backslashes doubled."""
    s = str(s).translate(_UNSAFE)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in s):
        s = "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)
    return s


def _t(ts: Optional[float]) -> str:
    if not ts:
        return "        -      "
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1e6):06d}"


def _ids(c: Dict[str, Any]) -> str:
    u, g = c["uid"], c["gid"]
    return f"uid {'/'.join(map(str, u))} gid {'/'.join(map(str, g))}"


def _delta(before: Dict[str, Any], after: Dict[str, Any]) -> str:
    parts = []
    for k in ("uid", "gid"):
        if before[k] != after[k]:
            parts.append(f"{k} {'/'.join(map(str, before[k]))} -> {'/'.join(map(str, after[k]))}")
    return ", ".join(parts) or "ids unchanged"


def _stack(stack: Optional[List[Any]]) -> Optional[str]:
    if not stack:
        return None
    return "at " + safe(" <- ".join(format_frame(f) if isinstance(f, dict) else str(f) for f in stack[:4]))


def _confirmed(c: Optional[Dict[str, Any]]) -> str:
    if not c:
        return ""
    if c.get("agrees") is True:
        v = c.get("value")
        return f"  [kernel agrees: {c['source']}{'' if v is None else ' ' + str(v)}]"
    if c.get("agrees") is False:
        return f"  [KERNEL DISAGREES ({c.get('source')}): {c.get('note') or c.get('value')}]"
    if (c.get("note") or "").startswith("the process changed again"):
        return "  [not confirmed: it changed again before the kernel was read]"
    return "  [not confirmed]"


def _dv(v: object, cands: Optional[List[int]] = None) -> str:
    if v is None:
        return "/".join(map(str, cands)) if cands else "?"
    return str(v)


def line(r: Dict[str, Any]) -> Optional[str]:
    """One record -> text (possibly two lines), or None for records not shown."""
    ev = r.get("event")
    comm = safe(r.get("comm"))
    who = f"{comm}[{r.get('pid')}]" if r.get("tid") in (None, r.get("pid")) else \
        f"{comm}[{r.get('pid')}/{r.get('tid')}]"
    if ev == "attach":
        c = r.get("creds")
        return (f"{_t(time.time())}  {who}  attached: {_ids(c) if c else 'credentials unknown'}, "
                f"dumpable={_dv(r.get('dumpable'), r.get('dumpable_candidates'))} ({r.get('dumpable_source')})")
    if ev in ("dumpable-change", "cred-change"):
        call = f"{r['syscall']}({', '.join(map(str, r.get('args') or []))})"
        if r["syscall"] == "execve":
            call = f"execve({safe((r.get('args') or ['?'])[0])})"
        elif r["syscall"] == "prctl":
            call = f"prctl(PR_SET_DUMPABLE, {r['after']})"
        ids = _delta(r["creds_before"], r["creds_after"]) if r.get("creds_before") and r.get("creds_after") else ""
        if ev == "cred-change":
            return f"{_t(r.get('time'))}  {who}  {call}  {ids}; dumpable stays {_dv(r.get('dumpable'))}" + \
                _confirmed(r.get("confirmed"))
        arrow = "->" if r.get("changed") is not False else "=>"
        sd = f" (fs.suid_dumpable={r['suid_dumpable']})" if r.get("suid_dumpable") is not None and \
            r["cause"] != "prctl" else ""
        head = (f"{_t(r.get('time'))}  {who}  {call}  {ids + ';  ' if ids and ids != 'ids unchanged' else ''}"
                f"dumpable {_dv(r.get('before'), r.get('before_candidates'))} {arrow} {_dv(r.get('after'))}{sd}  "
                f"{r['cause']}" + _confirmed(r.get("confirmed")))
        st = _stack(r.get("stack"))
        if st is None and r.get("stack_note"):  # why there is no stack: said, not left blank
            st = "\n".join(textwrap.wrap("stack " + safe(r["stack_note"]), 100 - 17,
                                          subsequent_indent="  ")).replace("\n", "\n" + " " * 17)
        return head + (f"\n{'':17}{st}" if st else "")
    if ev == "fatal-signal":
        pred = {True: "core", False: "NO core", None: "undecided"}[r.get("predicted")]
        gate = (r.get("prediction") or {}).get("blocking_gate")
        if r.get("predicted") is False and gate:
            pred += f" ({gate})"
        got = {True: "core written", False: "no core", None: "outcome unknown"}[r.get("dumped")]
        agree = {True: "  agrees", False: "  PREDICTION WRONG", None: ""}[r.get("agrees")]
        dest = r.get("destination") or {}
        where = f" -> {dest.get('path')}" if r.get("dumped") and dest.get("path") else ""
        return (f"{_t(r.get('time'))}  {who}  {r['signal']} ({r['how']}, "
                f"{'dumps' if r['dumps_by_default'] else 'no core'} by default)  predicted: {pred}; "
                f"kernel: {got}{where} [{r.get('outcome_source') or r.get('outcome_note') or '-'}]{agree}")
    if ev == "exit":
        return None
    if ev == "notice":
        return f"note: {safe(r['what'])}"
    if ev == "summary":
        return (f"{r['dumpable_changes']} dumpable transition(s), {r['cred_changes']} other credential "
                f"change(s), {r['fatal_signals']} fatal signal(s); {r['events']} events, {r['lost']} lost" +
                (f"\nnote: events were lost: the ring buffer was full (raise --buffer-kb, tracefs "
                 f"buffer_size_kb, now {r.get('buffer_kb')} KiB per CPU)" if r.get("lost") else ""))
    return None
