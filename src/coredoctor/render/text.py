"""
Text output
-----------
The verdict in one sentence first, then the gates with their evidence, then the exact
commands to fix.
"""

import shutil
import textwrap

from typing import Any, Dict, List, Optional, Sequence, overload

from coredoctor.kernel import reasons

__all__ = ["target_report", "summary_table", "explain_flags", "canary_report", "fix_plan", "fix_list",
           "fix_rollback", "crashes_report"]

_MARK = {"pass": "ok", "fail": "FAIL", "warn": "warn", "unknown": "??"}


def _width() -> int:
    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))


def _in_container(t: Dict[str, Any]) -> str:
    """", in podman container web (3f2a1b9c0d4e)" for a target or crash in a container, else ""."""
    from coredoctor.snapshot.containers import label
    lab = label(t.get("container"))
    return f", in {lab}" if lab else ""


def _verdict(t: Dict[str, Any]) -> str:
    """The verdict sentence, naming the container in its subject (``comm (pid N, in ...)``)."""
    v = t["verdict"]
    where = _in_container(t)
    if not where:
        return v
    head = f"(pid {t.get('pid')})"
    return v.replace(head, f"(pid {t.get('pid')}{where})", 1) if head in v else f"{v} ({where[2:]})"


def target_report(t: Dict[str, Any]) -> str:
    w = _width()
    out = [textwrap.fill(_verdict(t), w, subsequent_indent="  ")]
    out.append("")
    d = t["dumpable"]
    dv = "unknown" if d["value"] is None else str(d["value"])
    if d["value"] is None and len(d.get("candidates") or []) > 1:
        dv += f" (one of {', '.join(map(str, d['candidates']))})"
    out.append(f"  exe: {t['exe']}   unit: {t['unit'] or '-'}   dumpable: {dv} via {d['source']}"
               + (f", cause {d['cause']}" if d.get("cause") else ""))
    dest = t["core_destination"]
    out.append(f"  core destination: {dest['kind']} {dest['path']}" +
               (f" (handler {dest['handler']})" if dest.get("handler") else ""))
    if dest.get("landing") not in (None, "host"):
        out.extend(textwrap.wrap(_landing_line(dest), w, subsequent_indent="      ", break_on_hyphens=False))
    out.append("")
    out.append("  Gates, in the kernel's order:")
    for g in t["gates"]:
        head = f"  {_MARK[g['status']]:>4}  {g['id']:<16}"
        body = textwrap.wrap(g["evidence"], w - len(head) - 1) or [""]
        out.append(head + body[0])
        out.extend(" " * len(head) + line for line in body[1:])
        if g.get("origin"):
            out.extend(_origin_lines(g["origin"], " " * len(head), w))
    if t["dumpable"].get("origin"):
        out.append("  Why the process is not dumpable:")
        out.extend(_origin_lines(t["dumpable"]["origin"], "        ", w))
    if t["fixes"]:
        out.append("")
        out.append("  To fix:")
        for i, f in enumerate(t["fixes"], 1):
            tag = "  [restart needed]" if f["needs_restart"] else ""
            out.extend(textwrap.wrap(f"{i}. {f['summary']}{tag}", w - 4, initial_indent="  ",
                                     subsequent_indent="     "))
            for c in f["commands"]:
                out.append(f"       {c}")
    return "\n".join(out)


def _landing_line(dest: Dict[str, Any]) -> str:
    """One line: where the file core is on the host (kernel/landing.py), and whether it stays."""
    where = dest.get("host_path") or "no host path"
    how = {"overlay-upper": "the container's upper layer", "bind": "a bind mount / volume",
           "memory": "in memory (tmpfs)"}.get(str(dest.get("landing")), "unknown")
    keep = {True: "kept", False: "NOT kept: gone with the container", None: "kept: unknown"}[dest.get("survives")]
    return f"  on the host: {where} ({how}; {keep})"


def _origin_lines(o: Dict[str, Any], indent: str, w: int) -> List[str]:
    """An origin (coredoctor.origin): its summary, where it is written, then the chain that fed it."""
    out = []
    for depth, x in enumerate([o] + list(o.get("via") or [])):
        where = f"{x['file']}:{x['line']}" if x.get("file") and x.get("line") else (x.get("file") or "")
        words = " ".join(x["argv"]) if x.get("argv") else (x.get("text") or "")
        lead = "from: " if depth == 0 else "  via: "
        text = x["summary"] + (f" [{where}]" if where else "") + (f": {words}" if words else "")
        out.extend(textwrap.wrap(text, w - len(indent) - 2, initial_indent=indent + lead,
                                 subsequent_indent=indent + " " * (len(lead) + 2)))
    return out


def _cut(line: str, w: int) -> str:
    return line if len(line) <= w else line[:w - 3] + "..."


def summary_table(targets: Sequence[Dict[str, Any]], skipped: Optional[Dict[str, Any]] = None) -> str:
    yes = [t for t in targets if t["dumps"] is True]
    no = [t for t in targets if t["dumps"] is False]
    unk = [t for t in targets if t["dumps"] is None]
    w = _width()
    out = [f"{len(targets)} processes: {len(yes)} would leave a core, {len(no)} would not, "
           f"{len(unk)} undecided (signal {targets[0]['signal'] if targets else 'SIGSEGV'})."]
    if skipped and skipped.get("gone"):
        out.append(f"({skipped['gone']} exited while being read and were skipped)")
    by_gate: Dict[Optional[str], List[Dict[str, Any]]] = {}
    for t in no:
        by_gate.setdefault(t["blocking_gate"], []).append(t)
    def rows(title: str, ts: List[Dict[str, Any]]) -> None:
        out.extend(["", title])
        for t in ts:
            reason = reasons.reason_text(t) if "reasons" in t else t["verdict"]
            out.append(_cut(f"  {t['pid']:>7} {t['comm']:<16} {reason}", w))

    groups = _by_container(targets)
    if groups and (len(groups) > 1 or groups[0][0]):
        # grouped by container, host processes first: one block per container
        for lab, ts in groups:
            n_no = sum(1 for t in ts if t["dumps"] is False)
            n_unk = sum(1 for t in ts if t["dumps"] is None)
            out.extend(["", _cut(f"== {lab or 'host'}: {len(ts)} processes ({len(ts) - n_no - n_unk} core, "
                                 f"{n_no} no core, {n_unk} undecided)", w)])
            for t in ts:
                if t["dumps"] is True:
                    what = "core -> " + t["core_destination"]["kind"] + " " + t["core_destination"]["path"]
                else:
                    what = ("NO CORE " if t["dumps"] is False else "UNDECIDED ") + (
                        reasons.reason_text(t) if "reasons" in t else t["verdict"])
                out.append(_cut(f"  {t['pid']:>7} {t['comm']:<16} {what}", w))
        out.append("")
        out.append("Details and fixes: coredoctor check --pid PID")
        return "\n".join(out)
    for gate, ts in sorted(by_gate.items(), key=lambda kv: -len(kv[1])):
        rows(f"NO CORE -- blocked at '{gate}' ({len(ts)}):", ts)
    if unk:
        rows(f"UNDECIDED ({len(unk)}):", unk)
    if yes:
        out.append("")
        dests = sorted({t["core_destination"]["kind"] + " " + t["core_destination"]["path"].rsplit("/", 1)[0]
                        for t in yes})
        out.append(f"CORE ({len(yes)}): " + textwrap.shorten(
            ", ".join(f"{t['comm']}({t['pid']})" for t in yes), w * 2))
        out.append("  to: " + ", ".join(dests[:5]) + (" ..." if len(dests) > 5 else ""))
    out.append("")
    out.append("Details and fixes: coredoctor check --pid PID")
    return "\n".join(out)


def _by_container(targets: Sequence[Dict[str, Any]]) -> List[Any]:
    """[(label, targets)]: the host's processes first (label ""), then each container's in the
    order of its first process."""
    from coredoctor.snapshot.containers import label
    groups: Dict[str, List[Dict[str, Any]]] = {"": []}
    for t in targets:
        groups.setdefault(label(t.get("container")), []).append(t)
    return [(k, v) for k, v in groups.items() if v]


def explain_flags(d: Dict[str, Any]) -> str:
    lines = [f"mm->flags {d['value']} ({d['hex']}):",
             f"  dumpable bits 0-1 = {d['dumpable_raw']:02b}: dumpable={d['dumpable']} ({d['dumpable_name']})",
             f"  coredump_filter bits 2-10 = {d['coredump_filter']}: {', '.join(d['coredump_filter_bits']) or 'none'}"]
    if d["upper_bits"] != "0x0":
        lines.append(f"  bits 16+ = {d['upper_bits']} (version-specific MMF_* flags, not decoded)")
    if d["dumpable"] == 0:
        lines.append("  => vfs_coredump() returns at the dumpable check: no core, nothing logged.")
    elif d["dumpable"] == 2:
        lines.append("  => dumps as root, only to an absolute path or a pipe/socket.")
    else:
        lines.append("  => dumpable: the core-dump path continues to RLIMIT_CORE and core_pattern.")
    return "\n".join(lines)


def canary_report(r: Dict[str, Any]) -> str:
    c = r["credentials"]
    who = f"canary pid {r['pid']} (uid {c['uid'][1]}, gid {c['gid'][1]})"
    if r.get("like"):
        who += f", made like pid {r['like']}"
    p = r["predicted"]
    core = r.get("core") or {}
    if r["dumped"]:
        what = f"left a core: {core['path']} ({core['size']} bytes, owner {core['uid']}:{core['gid']}, mode {core['mode']}"
        if core.get("elf") is not None:
            what += ", ELF core of that pid" if core.get("verified") else ", NOT a core of that pid"
        what += ")" + ("; removed (--keep keeps it)" if core.get("removed") else "")
    elif r["dumped"] is None:
        what = (f"died by signal {r['signal']} with WCOREDUMP={int(r['wcoredump'])}; the {p['core_destination']['kind']} "
                f"handler {p['core_destination'].get('handler')} keeps cores where coredoctor cannot check")
    else:
        what = f"left no core (died by signal {r['signal']}, WCOREDUMP={int(r['wcoredump'])})"
    lines = [f"{who}: a real SIGSEGV {what}.", f"  check predicted: {p.get('outcome') or p['verdict']}"]
    if r["agrees"] is False:
        lines.insert(0, "MODEL MISMATCH: the kernel did not do what check predicted. This is a bug in "
                        "coredoctor's model: please report it with the output of 'coredoctor snapshot --all'.")
    elif r["agrees"]:
        lines.append("  the kernel agrees with the prediction.")
    return "\n".join(lines)


def _action_cmd(a: Dict[str, Any]) -> str:
    from coredoctor.fix.actions import describe
    return describe(a)


def fix_plan(doc: Dict[str, Any]) -> str:
    out = []
    for t in doc["targets"]:
        out.append(t["verdict"])
    out.append("")
    if doc["refused"]:
        out.append("REFUSED: " + "; ".join(doc["refused"]))
    if not doc["actions"]:
        out.append("Nothing to change automatically" + (" (already applied)." if not doc["manual"] else "."))
    else:
        head = f"Applied as fix {doc['id']}:" if doc.get("applied") else "Plan (run again with --apply to make it):"
        out.append(head)
        for i, a in enumerate(doc["actions"], 1):
            out.append(f"  {i}. {_action_cmd(a)}")
            out.append(f"     why: {a['why']}")
        for e in doc.get("errors") or []:
            out.append(f"  note: {e}")
    for r in doc["needs_restart"]:
        out.append(f"RESTART NEEDED: {r['comm']} (pid {r['pid']}): {r['why']}")
        out.append(f"  {r['command']}")
    for m in doc["manual"]:
        out.append(f"By hand: {m}")
    for s in doc["security"]:
        out.append(f"Security: {s}")
    for w in doc["warnings"]:
        out.append(f"Warning: {w}")
    if doc.get("applied"):
        out.append(f"Undo: coredoctor fix --rollback {doc['id']}")
    return "\n".join(out)


def fix_list(fixes: Sequence[Dict[str, Any]]) -> str:
    if not fixes:
        return "No fixes have been applied on this host."
    import time
    out = []
    for f in fixes:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.get("created") or 0))
        ts = f.get("targets") or [f.get("target") or {}]
        t = ts[0]
        more = f" and {len(ts) - 1} more" if len(ts) > 1 else ""
        out.append(f"{f['id']}  {when}  {f.get('state'):<12} {t.get('comm')} (pid {t.get('pid')}){more}: "
                   + ", ".join(_action_cmd(a) for a in f["actions"]))
    return "\n".join(out)


def fix_rollback(doc: Dict[str, Any]) -> str:
    out = [f"Fix {doc['id']} rolled back. Restored:"] + [f"  - {r}" for r in doc["restored"]]
    out += [f"  note: {n}" for n in doc["notes"]]
    return "\n".join(out)


def crashes_report(doc: Dict[str, Any]) -> str:
    """Verdict first (how many crashes kept their core), then a table newest first, then why
    for each core that did not survive, with the fix."""
    import time
    doc = _no_controls(doc)  # names, paths and log lines are anyone's: none may start a line of its own
    recs = doc["crashes"]
    absent = [f"{k} ({v.split(': ', 1)[1]})" for k, v in doc.get("read", {}).items() if not v.startswith("read")]
    sk = doc.get("skipped") or {}
    skipped = ("Skipped as unreadable or untrusted: " + ", ".join(f"{k} {n}" for k, n in sorted(sk.items()))
               + " record" + ("s" if sum(sk.values()) != 1 else "") + " (" + "; ".join(
                   w for ws in (doc.get("skipped_why") or {}).values() for w in ws[:1]) + ")") if sk else None
    kl = doc.get("kernel_log") or {}
    # one line: the kernel log is no witness here, and the switches that make it one
    blind = (f"Kernel log: no faults (debug.exception-trace={kl['exception_trace']}): "
             + "; ".join(sw["command"] for sw in kl.get("switches") or [])) if kl.get("faults_logged") is False \
        else None
    if kl.get("overwritten"):  # the kernel log's ring buffer wrapped: older crashes left no line there
        blind = (blind + "\n" if blind else "") + _wrap("", f"Kernel log: {kl['overwritten']['records']} oldest "
                                                      "records overwritten (ring buffer full): "
                                                      + "; ".join(sw["command"] for sw in kl.get("switches") or []))
    if not recs:
        return "No crashes found in " + ", ".join(k for k, v in doc.get("read", {}).items() if v.startswith("read")) \
            + "." + (("\n  not read: " + "; ".join(absent)) if absent else "") + \
            (("\n" + _wrap("  ", skipped)) if skipped else "") + (("\n" + blind) if blind else "")
    by: Dict[str, List[Dict[str, Any]]] = {}
    for r in recs:
        by.setdefault(r["core"]["status"], []).append(r)
    kept = len(by.get("present", []))
    lost = [r for r in recs if r["core"]["status"] in ("missing", "empty", "truncated")]
    gates: Dict[str, int] = {}
    for r in lost:
        g = (r.get("likely_reason") or {}).get("gate") or "unknown reason"
        gates[g] = gates.get(g, 0) + 1
    head = f"{len(recs)} crash{'es' if len(recs) != 1 else ''}: {kept} left a core"
    if lost:
        head += f", {len(lost)} did not or only in part (" + ", ".join(f"{g} {n}" for g, n in gates.items()) + ")"
    if by.get("unknown"):
        head += f", {len(by['unknown'])} unknown"
    out = [head + ".", "", f"  {'TIME':19}  {'PID':>7}  {'COMM':15}  {'SIGNAL':7}  {'CORE':9}  SOURCES"]
    for r in recs:
        try:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"])) if r["time"] else "?"
        except (OverflowError, OSError, ValueError):  # no time this platform can show
            when = "?"
        srcs = ",".join(sorted({s.split(":", 1)[0] for s in r["sources"]}))
        out.append(f"  {when:19}  {r['pid'] if r['pid'] is not None else '?':>7}  {(r['comm'] or '?')[:15]:15}  "
                   f"{(r['signal'] or str(r['signo'] or '?'))[:7]:7}  {r['core']['status']:9}  {srcs}")
        if r.get("container"):
            out.append(_cut(f"  {'':19}  {'':>7}  {_in_container(r)[2:]}", 100))
    details = [r for r in recs if r["core"]["status"] != "unknown"]
    if details:
        out.append("")
    for r in details:
        core = r["core"]
        who = f"{r['comm'] or '?'}[{r['pid'] if r['pid'] is not None else '?'}]"
        size = f" ({core['size']} bytes)" if core.get("size") is not None else ""
        if core["status"] in ("present", "truncated", "empty"):
            out.append(f"{who}: core {core['status']}: {core.get('path')}{size}")
        else:
            out.append(f"{who}: core {core['status']}" + (f", expected at {core['path']}" if core.get("path") else ""))
        lr = r.get("likely_reason")
        if core.get("why") and core["status"] != "present" and not (lr and lr.get("gate") and core["why"] in lr["evidence"]):
            out.append(_wrap("  ", core["why"]))
        if core.get("pattern_note"):
            out.append(_wrap("  ", core["pattern_note"]))
        if lr:
            out.append(_wrap("  why: ", f"{lr['gate'] or 'unknown'} -- {lr['evidence']}"))
            for c in lr.get("fix") or []:
                out.append(f"    {c}")
            if lr.get("fixed_by"):
                out.append(f"    already changed since by fix {lr['fixed_by']} (coredoctor fix --list)")
            elif lr.get("instance") and lr.get("gate"):
                out.append(f"    coredoctor fix --pid {lr['instance']}     # plan the fix for the running instance")
    unknown: Dict[str, List[Dict[str, Any]]] = {}
    for r in recs:
        if r["core"]["status"] == "unknown":
            unknown.setdefault(r["core"].get("why") or "?", []).append(r)
    for why, rs in unknown.items():
        out.append("")
        names = ", ".join("%s[%s]" % (r["comm"], r["pid"]) for r in rs[:4]) + (", ..." if len(rs) > 4 else "")
        out.append(_wrap("", f"core unknown for {len(rs)} ({names}): {why}"))
    if absent:
        out += ["", _wrap("", "Not read: " + "; ".join(absent))]
    forged = [r for r in recs if r.get("untrusted")]
    if forged:
        out += ["", _wrap("", f"Not the kernel's word ({len(forged)}): " + ", ".join(
            "%s[%s]" % (r["comm"], r["pid"]) for r in forged[:4]) + (", ..." if len(forged) > 4 else "")
            + " -- " + forged[0]["untrusted"])]
    if skipped:
        out += ["", _wrap("", skipped)]
    if blind:
        out += ["", blind]
    return "\n".join(out)


@overload
def _no_controls(v: Dict[str, Any]) -> Dict[str, Any]: ...
@overload
def _no_controls(v: object) -> object: ...


def _no_controls(v: object) -> object:
    """*v* with every control character in its strings (C0, DEL, C1: a newline or an escape
    sequence in a process name) written as ``\\xNN``."""
    import re
    if isinstance(v, str):
        return re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", v)
    if isinstance(v, dict):
        return {k: _no_controls(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_no_controls(x) for x in v]
    return v


def _wrap(prefix: str, text: str, width: int = 100) -> str:
    import textwrap
    return textwrap.fill(text, width=width, initial_indent=prefix, subsequent_indent=" " * len(prefix) + "  ")
