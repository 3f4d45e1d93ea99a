"""The examples: each sets up a real state (crash-lab victims, sysctls, real crashes), runs the
real coredoctor commands and keeps what they printed and their exit status.

Used by ``examples/regenerate`` (writes ``examples/*_example.txt``) and by
``tests/test_examples.py`` (runs the same steps again and compares the stable parts, see
``stable()``). Run as root. Nothing here takes the machine-wide test lock: the caller does.
Every sysctl, file and directory a scenario changes is put back by ``Run.close()``, also when a
step fails.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SRC = os.path.join(REPO, "src")
sys.path.insert(0, os.path.join(REPO, "tests", "crashlab"))

import lab as L  # noqa: E402  (the crash-lab helpers: victims, sysctls, kernel log room)

#: the seed case: a daemon that starts as root and drops to nobody:nogroup, the way
#: ovs-vswitchd --ovs-user or nginx's workers do, with RLIMIT_CORE unlimited
DROP = {"rlimit_core": [None, None], "setresgid": [65534] * 3, "setgroups": [],
        "setresuid": [65534] * 3}
SYSCTL_FILE = "/etc/sysctl.d/90-coredoctor.conf"
#: the actor of the trace example is run with the system's interpreter, under a stable name
ACTOR_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
TMP_PREFIX = "cdexample-"

Cmd = Union[Sequence[str], Callable[["Run"], Sequence[str]]]


class Step:
    """One command of an example: what to run, how to read its output, and the prose around it.

    *kind* names the stable-part extractor (``stable()``); *focus* the process names the step
    is about (in ``check --all`` and ``crashes`` only those rows are compared, and shown)."""

    def __init__(self, cmd: Cmd, kind: str, before: str = "", after: str = "",
                 focus: Sequence[str] = (), stdout_to: Optional[str] = None,
                 prepare: Optional[Callable[["Run"], None]] = None) -> None:
        self.cmd, self.kind, self.before, self.after = cmd, kind, before, after
        self.focus, self.stdout_to, self.prepare = tuple(focus), stdout_to, prepare


class Result:
    def __init__(self, shown: str, output: str, status: int, file: Optional[str] = None) -> None:
        self.shown, self.output, self.status = shown, output, status
        self.file = file  # what a step with stdout_to wrote (not shown in the transcript)


class Run:
    """The state of one example while it runs: its temp dir, its victims, what it changed."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir="/tmp")
        os.chmod(self.tmp, 0o755)
        self.saved = {k: L.read_sysctl(k) for k in L.SYSCTLS}
        self.sysctl_file = open(SYSCTL_FILE, "rb").read() if os.path.exists(SYSCTL_FILE) else None
        self.sysctl_file_mode = os.stat(SYSCTL_FILE).st_mode & 0o7777 if self.sysctl_file is not None else None
        self.crash_dir_existed = os.path.exists("/var/crash")
        self.victims: List[L.Victim] = []
        self.named: Dict[str, L.Victim] = {}
        self.values: Dict[str, str] = {}
        self.daemons: List[subprocess.Popen] = []  # type: ignore[type-arg]
        self.daemon_pids: List[int] = []
        self.pids: Dict[str, str] = {}
        self.env = {"COREDOCTOR_STATE_DIR": os.path.join(self.tmp, "state")}
        self.started = time.time()

    def victim(self, label: str, spec: Dict[str, Any], cwd: Optional[str] = None) -> L.Victim:
        v = L.Victim(spec, cwd=cwd or self.tmp)
        self.victims.append(v)
        self.named[label] = v
        return v

    def daemon(self, monitor: str, worker: str) -> None:
        """examples/daemon.py: a monitor that drops to nobody:nogroup, then forks the worker."""
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "daemon.py"), monitor, worker],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=self.tmp)
        self.daemons.append(p)
        line = p.stdout.readline() if p.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"examples/daemon.py did not start: {line!r}")
        mpid, wpid = (int(x) for x in line.split()[1:3])
        self.daemon_pids += [wpid, mpid]
        self.pids[monitor], self.pids[worker] = str(mpid), str(wpid)

    def pid(self, label: str) -> str:
        if label in self.pids:
            return self.pids[label]
        return str(self.named[label].pid)

    def cores(self) -> str:
        d = os.path.join(self.tmp, "cores")
        if not os.path.isdir(d):
            L.make_cores(self.tmp)
        return d

    def coredoctor(self, args: Sequence[str], stdout_to: Optional[str] = None) -> Tuple[str, int]:
        env = dict(os.environ)
        env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update(self.env)
        # what a terminal would show: stdout and stderr as they come, or, when stdout goes to a
        # file (`> FILE`), stderr alone
        out = open(stdout_to, "w") if stdout_to else None
        try:
            r = subprocess.run([sys.executable, "-m", "coredoctor", *args], cwd=REPO, env=env,
                               stdout=out or subprocess.PIPE,
                               stderr=subprocess.PIPE if out else subprocess.STDOUT, text=True,
                               timeout=120)
        finally:
            if out:
                out.close()
        return (r.stderr if stdout_to else r.stdout), r.returncode

    def close(self) -> List[str]:
        """Put back everything; return what could not be put back (also said on stderr)."""
        problems = []
        for v in self.victims:
            v.close()
        for p in self.daemons:
            if p.stdin:
                p.stdin.close()  # the monitor ends its worker and exits
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                for pid in self.daemon_pids:  # the processes this run started, by pid
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                p.wait()
            if p.stdout:
                p.stdout.close()
        L.write_sysctl("fs.suid_dumpable", self.saved["fs.suid_dumpable"])
        for k in ("kernel.core_pattern", "kernel.core_uses_pid", "kernel.core_pipe_limit"):
            L.write_sysctl(k, self.saved[k])
        if {k: L.read_sysctl(k) for k in L.SYSCTLS} != self.saved:
            problems.append("sysctls not restored")
        if self.sysctl_file is None:
            if os.path.lexists(SYSCTL_FILE):
                os.unlink(SYSCTL_FILE)
        elif not os.path.exists(SYSCTL_FILE) or open(SYSCTL_FILE, "rb").read() != self.sysctl_file:
            with open(SYSCTL_FILE, "wb") as f:
                f.write(self.sysctl_file)
            os.chmod(SYSCTL_FILE, self.sysctl_file_mode or 0o644)
        if not self.crash_dir_existed and os.path.isdir("/var/crash") and not os.path.islink("/var/crash"):
            try:
                os.rmdir("/var/crash")  # never delete a core: only an empty directory goes
            except OSError:
                problems.append("/var/crash was created by an example and is not empty: left in place")
        shutil.rmtree(self.tmp, ignore_errors=True)
        for msg in problems:
            sys.stderr.write(f"examples: {msg}\n")
        return problems


class Example:
    def __init__(self, name: str, title: str, intro: str, setup: Callable[[Run], None],
                 steps: Sequence[Step]) -> None:
        self.name, self.title, self.intro, self.setup, self.steps = name, title, intro, setup, steps

    @property
    def path(self) -> str:
        return os.path.join(HERE, f"{self.name}_example.txt")


def shown_command(args: Sequence[str], stdout_to: Optional[str]) -> str:
    s = "# coredoctor " + " ".join(shlex.quote(a) for a in args)
    return s + (f" > {stdout_to}" if stdout_to else "")


def run_example(ex: Example) -> List[Result]:
    """Set the state up, run every step, put everything back (also on failure)."""
    run = Run()
    try:
        L.set_sysctls({"kernel.core_pattern": "core", "kernel.core_uses_pid": "0",
                       "kernel.core_pipe_limit": "0", "fs.suid_dumpable": "0"})
        ex.setup(run)
        results = []
        for st in ex.steps:
            if st.prepare:
                st.prepare(run)
            args = list(st.cmd(run) if callable(st.cmd) else st.cmd)
            to = st.stdout_to.format(tmp=run.tmp) if st.stdout_to else None
            out, status = run.coredoctor(args, to)
            written = open(to).read() if to and os.path.isfile(to) else None
            results.append(Result(shown_command(args, to), out, status, written))
            run.values[f"out{len(results)}"] = out
            if "--apply" in args:
                run.values["applied"] = out
    except BaseException:
        run.close()
        raise
    problems = run.close()
    if problems:
        raise RuntimeError("the example did not leave the machine as it found it: " + "; ".join(problems))
    return results


# ---------------------------------------------------------------- the transcripts' format

EXIT = re.compile(r"^\[exit status (\d+)\]$")


def render(ex: Example, results: Sequence[Result]) -> str:
    parts = [ex.title, "=" * len(ex.title), "", ex.intro.strip(), ""]
    for st, r in zip(ex.steps, results):
        if st.before:
            parts += [st.before.strip(), ""]
        parts += [r.shown]
        parts += shown_output(st, r.output).splitlines()
        parts += [f"[exit status {r.status}]", ""]
        if st.after:
            parts += [st.after.strip(), ""]
    parts += ["(Written by examples/regenerate from real runs on this repository's test machine;",
              "tests/test_examples.py runs every command again and compares the stable parts.)", ""]
    return "\n".join(parts)


def parse(text: str) -> List[Tuple[str, str, Optional[int]]]:
    """The blocks of a transcript (or of a README code block): (command, output, exit status).
    A block starts at a line ``# coredoctor ...`` and ends at ``[exit status N]`` (or the end)."""
    blocks: List[Tuple[str, str, Optional[int]]] = []
    cmd, lines = None, []  # type: Optional[str], List[str]
    for line in text.splitlines():
        if line.startswith("# coredoctor "):
            if cmd is not None:
                blocks.append((cmd, "\n".join(lines), None))
            cmd, lines = line, []
        elif cmd is not None:
            m = EXIT.match(line)
            if m:
                blocks.append((cmd, "\n".join(lines), int(m.group(1))))
                cmd, lines = None, []
            else:
                lines.append(line)
    if cmd is not None:
        blocks.append((cmd, "\n".join(lines), None))
    return blocks


def _left_out(n: int, what: str) -> str:
    """In a transcript, rows of processes the example did not start are left out of
    `check --all` and `crashes` (a host has hundreds): one line says how many."""
    return f"... ({n} other {what if n != 1 else what[:-2] if what.endswith('es') else what[:-1]} left out)"


def shown_output(st: Step, out: str) -> str:
    if st.kind == "all-text":
        return _elide_all(out, st.focus)
    if st.kind == "crashes-text":
        return _elide_crashes(out, st.focus)
    return out.rstrip("\n")


ROW = re.compile(r"^\s+(\d+) (\S.{0,15}?)\s{2,}(\S.*)$")


CORE_LINE = re.compile(r"^CORE \((\d+)\): (.*)$")
CORE_ENTRY = re.compile(r"(\S+?)\((\d+)\)")


def _core_entries(line: str, focus: Sequence[str]) -> Optional[Tuple[int, List[str]]]:
    m = CORE_LINE.match(line)
    if not m:
        return None
    return int(m.group(1)), [f"{c}({p})" for c, p in CORE_ENTRY.findall(m.group(2))
                             if any(c == f[:15] for f in focus)]


def _elide_all(out: str, focus: Sequence[str]) -> str:
    lines, res, skipped = out.rstrip("\n").splitlines(), [], 0
    for line in lines:
        m = ROW.match(line)
        if m and not any(m.group(2).strip() == f[:15] for f in focus):
            skipped += 1
            continue
        if skipped:
            res.append("    " + _left_out(skipped, "processes"))
            skipped = 0
        core = _core_entries(line, focus)
        if core and core[0] > len(core[1]):
            n, kept = core
            line = f"CORE ({n}): " + ", ".join(kept + [_left_out(n - len(kept), "processes")])
        res.append(line)
    if skipped:
        res.append("    " + _left_out(skipped, "processes"))
    return "\n".join(res)


TABLE_ROW = re.compile(r"^  (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+(\d+)  (\S+)\s")
DETAIL = re.compile(r"^(\S+)\[(\d+)\]: core ")


def _elide_crashes(out: str, focus: Sequence[str]) -> str:
    res, skipped, in_other = [], 0, False
    for line in out.rstrip("\n").splitlines():
        m = TABLE_ROW.match(line)
        d = DETAIL.match(line)
        if m:
            if m.group(3) not in focus:
                skipped += 1
                continue
        elif d:
            in_other = d.group(1) not in focus
            if in_other:
                skipped += 1
                continue
        elif in_other and line.startswith(" "):
            continue
        else:
            in_other = False
        if skipped and (m or d or not line.startswith(" ")):
            res.append("  " + _left_out(skipped, "crashes"))
            skipped = 0
        res.append(line)
    if skipped:
        res.append("  " + _left_out(skipped, "crashes"))
    return "\n".join(res)


def readme_refreshed(readme: str) -> str:
    """*readme* with every code block that starts with a ``# coredoctor ...`` line replaced by
    the first transcript block of the same (normalized) command, with its elisions."""
    recorded = []
    for ex in EXAMPLES:
        if os.path.exists(ex.path):
            recorded += parse_file(ex.path)

    def repl(m: "re.Match[str]") -> str:
        body = m.group(2)
        first = body.split("\n", 1)[0]
        if not first.startswith("# coredoctor "):
            return m.group(0)
        for cmd, out in recorded:
            if norm(cmd) == norm(first):
                return m.group(1) + cmd + "\n" + out.rstrip("\n") + "\n" + m.group(3)
        return m.group(0)

    return re.sub(r"(^```[a-z]*\n)(.*?)(^```)", repl, readme, flags=re.S | re.M)


def parse_file(path: str) -> List[Tuple[str, str]]:
    with open(path) as f:
        return [(c, o) for c, o, _ in parse(f.read())]


# ---------------------------------------------------------------- stable parts

#: the normalization rules, in order (documented in examples/README.md)
RULES: List[Tuple[str, str]] = [
    (r"/tmp/" + TMP_PREFIX + r"[A-Za-z0-9_]+", "<tmp>"),
    (r"\b\d{8}T\d{6}-[0-9a-f]{6}\b", "<fix-id>"),
    (r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?Z?", "<datetime>"),
    (r"\b\d\d:\d\d:\d\d(?:\.\d+)?\b", "<time>"),
    (r"\b0x[0-9a-f]{5,}\b", "<addr>"),
    (r"\+0x[0-9a-f]+", "+<off>"),
    (r"(?<![\w-])(-m |mode |chmod )([0-7]{3,4})\b", r"\1o\2"),  # file modes are kept (as o1777)
    (r"\b\d{3,}\b", "<n>"),
    (r"\b\d+ events\b", "<n> events"),
    (r"[ \t]+", " "),
]


def norm(s: str) -> str:
    for pat, rep in RULES:
        s = re.sub(pat, rep, s)
    return s.strip()


def paragraphs(out: str) -> List[str]:
    """Output split at blank lines, each paragraph's wrapped lines joined with single spaces."""
    return [norm(" ".join(p.split("\n"))) for p in re.split(r"\n\s*\n", out.strip("\n")) if p.strip()]


GATE = re.compile(r"^\s*(ok|FAIL|warn|\?\?|unknown|skip)\s+([a-z][a-z-]*)\s{2,}", re.M)


def _check_text(out: str) -> Dict[str, Any]:
    paras = paragraphs(out)
    info = [norm(x) for x in re.findall(r"dumpable: \S+ via \S+, cause \S+", out)]
    return {"verdict": paras[0] if paras else "", "gates": GATE.findall(out), "dumpable": info,
            "destination": [norm(x) for x in re.findall(r"core destination: (.*)", out)],
            "restart needed": "[restart needed]" in out}


def _row_reason(reason: str) -> str:
    """A row's reason; one cut at the line's width (`...`) is compared only up to its first
    number of 3+ digits (a pid's width moves the cut) and without its last, partial word."""
    r = norm(reason)
    if r.endswith("..."):
        r = r[:-3].split("<n>")[0].rsplit(" ", 1)[0]
    return r


def _all_text(out: str, focus: Sequence[str]) -> Dict[str, Any]:
    lines = out.splitlines()
    heading, rows = None, []
    for line in lines:
        if line.startswith(("NO CORE", "CORE", "UNDECIDED", "WOULD", "DUMPS")) or re.match(r"^[A-Z]", line):
            heading = norm(re.sub(r"\(\d+\)", "(<count>)", line))
        m = ROW.match(line)
        if m and any(m.group(2).strip() == f[:15] for f in focus):
            rows.append((heading, m.group(2).strip(), _row_reason(m.group(3))))
        core = _core_entries(line, focus)
        if core:
            rows += [("CORE", e.split("(")[0], "") for e in core[1]]
    first = re.sub(r"\d+", "<count>", lines[0]) if lines else ""
    return {"summary": first, "rows": sorted(rows, key=repr),
            "last": norm(lines[-1]) if lines else ""}


def _fix_text(out: str) -> Dict[str, Any]:
    paras = out.strip("\n").splitlines()
    return {"verdicts": [norm(x) for x in paras if "would NOT leave a core" in x or "would leave a core" in x],
            "actions": [norm(x) for x in paras if re.match(r"^  \d+\. ", x)],
            "headers": [norm(x.split(":")[0]) for x in paras if re.match(r"^[A-Z][A-Za-z ]+:", x)],
            "restart": [norm(x) for x in paras if x.startswith("RESTART NEEDED")]}


def _lines_text(out: str) -> List[str]:
    """Every line, normalized: for outputs that are pure functions of their input."""
    return [norm(x) for x in out.strip("\n").splitlines()]


TRACE_EVENT = re.compile(r"^<time> (\S+?)\[<n>\] (.*)$")


def _trace_text(out: str) -> Dict[str, Any]:
    events, rest = [], []
    for line in out.splitlines():
        n = norm(line)
        m = TRACE_EVENT.match(n)
        if m and m.group(2).startswith("attached:"):
            # the name at attach is the tracer's child before or after its exec: a race
            events.append(m.group(2))
        elif m:
            events.append(f"{m.group(1)}: {m.group(2)}")
        elif line.startswith("coredoctor trace:") or re.match(r"^\d+ dumpable transition", line):
            rest.append(n)
    return {"events": events, "header and summary": rest}


def _crashes_text(out: str, focus: Sequence[str]) -> Dict[str, Any]:
    rows, details = [], []
    lines = out.splitlines()
    cur = None
    for line in lines:
        m = TABLE_ROW.match(line)
        if m and m.group(3) in focus:
            cols = line.split()
            rows.append((m.group(3), cols[4], cols[5]))  # comm, signal, core status
        d = DETAIL.match(line)
        if d:
            cur = d.group(1) if d.group(1) in focus else None
            if cur:
                details.append(norm(line))
        elif cur and line.strip().startswith("why:"):
            details.append(norm(line.strip().split(" -- ")[0]))
    first = re.sub(r"\d+", "<count>", lines[0]) if lines else ""
    first = re.sub(r"\(.*\)", "(...)", first)
    return {"summary": first, "rows": sorted(rows), "details": sorted(details)}


def _common(a: Any, b: Any) -> Any:
    """What two key skeletons share (recursively)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _common(a[k], b[k]) for k in a if k in b}
    if isinstance(a, list) and isinstance(b, list):
        return [_common(a[0], b[0])] if a and b else []
    return None


def keys(doc: Any) -> Any:
    """The key skeleton of a JSON document: dicts by their keys, lists by the keys that every
    one of their (dict) elements has, recursively."""
    if isinstance(doc, dict):
        return {k: keys(v) for k, v in doc.items()}
    if isinstance(doc, list):
        common: Any = None
        for x in doc:
            s = keys(x)
            if not isinstance(s, dict):
                return []
            common = s if common is None else _common(common, s)
        return [common] if common else []
    return None


def missing_keys(old: Any, new: Any, where: str = "") -> List[str]:
    """Keys of *old*'s skeleton that *new* lacks (JSON contracts change only by addition)."""
    out = []
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [where or "."]
        for k, v in old.items():
            if k not in new:
                out.append(f"{where}.{k}")
            else:
                out += missing_keys(v, new[k], f"{where}.{k}")
    elif isinstance(old, list) and old:
        if not isinstance(new, list) or not new:
            return [where + "[]"]
        out += missing_keys(old[0], new[0], where + "[]")
    return out


def _check_json(doc: Dict[str, Any]) -> Dict[str, Any]:
    ts = []
    for t in doc.get("targets", []):
        ts.append({"dumps": t.get("dumps"), "blocking_gate": t.get("blocking_gate"),
                   "gates": [(g["id"], g["status"]) for g in t.get("gates", [])],
                   "dumpable": {k: (t.get("dumpable") or {}).get(k) for k in ("value", "source", "cause")},
                   "destination kind": (t.get("core_destination") or {}).get("kind"),
                   "fixes need restart": [f.get("needs_restart") for f in t.get("fixes", [])],
                   "verdict": norm(t.get("verdict") or "")})
    return {"schema": doc.get("schema"), "targets": ts}


def _crashes_json(doc: Dict[str, Any], focus: Sequence[str]) -> Dict[str, Any]:
    cs = sorted((c.get("comm"), c.get("signal"), (c.get("core") or {}).get("status"),
                 (c.get("likely_reason") or {}).get("gate"), bool((c.get("likely_reason") or {}).get("fix")))
                for c in doc.get("crashes", []) if c.get("comm") in focus)
    return {"schema": doc.get("schema"), "crashes": cs}


def _fix_json(doc: Dict[str, Any]) -> Dict[str, Any]:
    def action(a: Dict[str, Any]) -> Tuple[Any, ...]:
        return (a.get("kind"), a.get("key") or a.get("path"), a.get("value"), a.get("mode"))
    return {"schema": doc.get("schema"), "applied": doc.get("applied"),
            "targets": [(t.get("dumps"), t.get("blocking_gate"), norm(t.get("verdict") or ""))
                        for t in doc.get("targets", [])],
            "actions": [action(a) for a in doc.get("actions", [])],
            "needs restart": len(doc.get("needs_restart") or []), "refused": doc.get("refused")}


def _canary_json(doc: Dict[str, Any]) -> Dict[str, Any]:
    p = doc.get("predicted") or {}
    return {"schema": doc.get("schema"), "dumped": doc.get("dumped"), "agrees": doc.get("agrees"),
            "predicted": (p.get("dumps"), p.get("blocking_gate"))}


def _snapshot_json(doc: Dict[str, Any]) -> Dict[str, Any]:
    return {"schema": doc.get("schema"), "processes": len(doc.get("processes", []))}


def stable(kind: str, out: str, status: Optional[int], focus: Sequence[str] = ()) -> Dict[str, Any]:
    """What must not change between the recorded run and a new one. JSON key skeletons are
    compared separately (``missing_keys``): a new run may add keys."""
    res: Dict[str, Any] = {"exit status": status}
    if kind == "check-text":
        res.update(_check_text(out))
    elif kind == "all-text":
        res.update(_all_text(out, focus))
    elif kind == "fix-text":
        res.update(_fix_text(out))
    elif kind == "lines":
        res["lines"] = _lines_text(out)
    elif kind == "trace-text":
        res.update(_trace_text(out))
    elif kind == "crashes-text":
        res.update(_crashes_text(out, focus))
    elif kind == "check-json":
        res.update(_check_json(json.loads(out)))
    elif kind == "crashes-json":
        res.update(_crashes_json(json.loads(out), focus))
    elif kind == "fix-json":
        res.update(_fix_json(json.loads(out)))
    elif kind == "canary-json":
        res.update(_canary_json(json.loads(out)))
    elif kind == "snapshot-file":
        res["output"] = out.strip()
    else:
        raise ValueError(f"unknown kind {kind}")
    return res


# ---------------------------------------------------------------- the examples

def _seed(run: Run) -> None:
    run.victim("billing-api", dict(DROP, comm="billing-api"))


def _seed_daemon(run: Run) -> None:
    run.daemon("monitor", "billing-api")
    run.victim("report-worker", {"rlimit_core": [None, None], "comm": "report-worker"})


def _worker(run: Run) -> None:
    run.victim("billing-api", dict(DROP, comm="billing-api"))
    run.victim("report-worker", {"rlimit_core": [None, None], "comm": "report-worker"})


def _three(run: Run) -> None:
    _seed_daemon(run)
    run.victim("queue-worker", {"rlimit_core": [0, None], "comm": "queue-worker"})


CHECK = Example(
    "check", "coredoctor check: one process",
    """
The seed case. A daemon started the way Open vSwitch runs with --ovs-user (examples/daemon.py):
its monitor process starts as root with RLIMIT_CORE unlimited, drops to nobody:nogroup
(setresgid, setgroups, setresuid) while fs.suid_dumpable is 0 (the default), then forks the
worker, billing-api, that does the work. kernel.core_pattern is `core`. A second process,
report-worker (tests/crashlab/victim.py), stays root with RLIMIT_CORE unlimited in a root-owned
directory.
""",
    _seed_daemon,
    [Step(lambda r: ["check", "--pid", r.pid("billing-api")], "check-text",
          before="Would a SIGSEGV now leave a core?",
          after="""
How to read it: the first paragraph is the verdict. The gates are listed in the kernel's order up
to the first that fails (FAIL); `dumpable: 0 via pidfd` says the value was read from the kernel
(PIDFD_INFO_COREDUMP, 6.16+), not guessed. The cause names the moment the flag was lost: not in
billing-api, which never changed credentials, but in its parent: the monitor's credential change,
where commit_creds() copied fs.suid_dumpable=0; the worker inherited the flag at fork. The
fix sets an absolute
core_pattern first (mode 2 refuses relative names), then fs.suid_dumpable=2, persists both, and
says a restart is needed: the flag of a running process is not re-read. Exit status 1: it would
not dump.
"""),
     Step(["check", "report-worker"], "check-text",
          before="A process can be named instead of a pid (or a unit, NAME.service):",
          after="""
Every gate passes: the core would be written to the process's cwd (a relative pattern), and
`dumps` means the kernel would write a non-empty core there. Exit status 0.
"""),
     Step(lambda r: ["check", "--pid", r.pid("billing-api"), "--signal", "SIGABRT", "--how", "kill"],
          "check-text",
          before="Another signal, sent with kill() rather than raised by a fault:",
          after="""
The signal gate is evaluated for SIGABRT sent by kill() (a signal that is ignored, blocked or
handled would stop it there); the dumpable gate still stops it.
""")])

CHECK_ALL = Example(
    "check_all", "coredoctor check --all: every process on the host",
    """
Among the host's processes: the seed's daemon (examples/daemon.py: its monitor dropped from root
to nobody:nogroup under fs.suid_dumpable=0, then forked billing-api), and two crash-lab victims:
queue-worker runs with RLIMIT_CORE 0 (the usual `ulimit -c 0`), report-worker as root with
RLIMIT_CORE unlimited; kernel.core_pattern is `core`.
""",
    _three,
    [Step(["check", "--all"], "all-text", focus=("monitor", "billing-api", "queue-worker", "report-worker"),
          after="""
How to read it: one line of counts, then the processes grouped by the first gate that stops their
core, with the reason in a few words. The rows of the other processes of the test machine are
left out of this transcript (the line `... (N other processes left out)` stands for them); the
real output lists every process. Exit status 1: at least one process would not dump. For the
details and the fix of one process: coredoctor check --pid PID.
""")])

CHECK_JSON = Example(
    "check_json", "coredoctor check --json: for scripts (schema coredoctor.check/1)",
    "The seed case again (billing-api dropped from root to nobody:nogroup under fs.suid_dumpable=0).",
    _seed,
    [Step(lambda r: ["check", "--pid", r.pid("billing-api"), "--json"], "check-json",
          after="""
How to read it: `dumps` is true, false or null (null: it depends on something that cannot be known
now, named by `undecided_by`); `blocking_gate` is the first failing gate; every gate has its
evidence and the kernel function it models. The schema changes only by addition: scripts should
ignore keys they do not know.
""")])

SNAPSHOT = Example(
    "snapshot", "coredoctor snapshot and check --from: evaluate elsewhere",
    """
On the machine where the process runs (as root), save everything check needs; anywhere else (no
root, another kernel), evaluate it with the same code. The seed case (billing-api dropped from
root to nobody:nogroup under fs.suid_dumpable=0).
""",
    _seed,
    [Step(lambda r: ["snapshot", "--pid", r.pid("billing-api")], "snapshot-file",
          stdout_to="{tmp}/host.json",
          after="The snapshot (schema coredoctor.snapshot/1) is plain JSON: processes, sysctls, handlers, files."),
     Step(lambda r: ["check", "--from", os.path.join(r.tmp, "host.json")], "check-text",
          after="""
The same verdict as on the live host. Only what the snapshot recorded is known: the process is not
read again.
""")])

EXPLAIN = Example(
    "explain_flags", "coredoctor explain-flags: decode mm->flags",
    """
For a crash dump of the kernel or a live system read with crash or drgn: `mm->flags` holds the
dumpable value in bits 0-1 and coredump_filter in bits 2-10. No root needed, nothing is read.
""",
    lambda run: None,
    [Step(["explain-flags", "204"], "lines", after="204 is the seed's value: dumpable=0, the default filter."),
     Step(["explain-flags", "0xcd"], "lines",
          after="0xcd: the same filter, dumpable=1.")])


TRACE = Example(
    "trace", "coredoctor trace: watch the flag change, live",
    """
A command run under trace (tests/trace/actor.py: it makes each credential call, pausing 0.3 s
between them, then faults with a NULL read), with fs.suid_dumpable=0 and RLIMIT_CORE 0 inherited
from the shell. The trace goes to stderr when a command runs; the command's own output (the
actor prints `did STEP` after each step) is sent to /dev/null here so that it does not cut
through the trace's lines.
""",
    lambda run: None,
    [Step(["trace", "--", ACTOR_PYTHON, "tests/trace/actor.py", "setresgid:-1,65534,-1",
           "setresuid:-1,65534,-1", "setresuid:-1,0,-1", "prctl:1", "fault"], "trace-text",
          stdout_to="/dev/null",
          after="""
How to read it: `->` is a change of the dumpable flag, `=>` the kernel setting it again to the same
value; the value of fs.suid_dumpable at that moment is given, and the cause (privilege-change,
prctl, exec). `[kernel agrees: pidfd 0]` is the flag read back from the kernel after the call.
`at ...` is the user-space stack. For the fatal signal, check's prediction (here: no core, stopped
at rlimit-core) beside what the kernel did (the WCOREDUMP bit of the wait status). trace exits
with the command's status: 139 = 128 + SIGSEGV.
""")])


def _crashes_setup(run: Run) -> None:
    cores = run.cores()
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": "0"})
    specs: Dict[str, Dict[str, Any]] = {"billing-api": dict(DROP, comm="billing-api"),
             "queue-worker": {"rlimit_core": [0, None], "comm": "queue-worker"},
             "indexer": {"rlimit_core": [256 * 1024, None], "comm": "indexer"},
             "report-worker": {"rlimit_core": [None, None], "comm": "report-worker"}}
    time.sleep(1.1)  # --since below starts at a whole second after anything older
    run.values["since"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    L.kernel_log_room(len(specs))
    for label, spec in specs.items():
        v = run.victim(label + "-crashed", spec)
        v.fault()
    for label, spec in specs.items():  # started again, as a supervisor would
        run.victim(label, spec)


CRASHES = Example(
    "crashes", "coredoctor crashes: it crashed -- is there a core, and if not, why not?",
    """
kernel.core_pattern is <tmp>/cores/core.%e.%p (a sticky, world-writable directory). Four
crash-lab victims crashed with a real SIGSEGV: billing-api after dropping from root to
nobody:nogroup under fs.suid_dumpable=0, queue-worker with RLIMIT_CORE 0, indexer with
RLIMIT_CORE 256 KiB (less than its memory), report-worker as root with RLIMIT_CORE unlimited.
Then each was started again, as a supervisor would.
""",
    _crashes_setup,
    [Step(lambda r: ["crashes", "--since", r.values["since"]], "crashes-text",
          focus=("billing-api", "queue-worker", "indexer", "report-worker"),
          after="""
How to read it: one line of counts, a table (newest first) of every crash since then with the
state of its core and where it was seen, then for each crash without a whole core: where the core
was expected (or, for a truncated one, how much of what its program headers describe it holds),
and `why:` the gate of check that explains it, with the fix. The reason comes from
the kernel's or the handler's own refusal line when there is one; otherwise, as here, from check
on the running instance of the same program (started after the crash: same ids, limits, cwd).
Crashes of other processes in the same window, if any, are left out of this transcript. Exit
status 0: the listing worked (whatever it found).
"""),
     Step(lambda r: ["crashes", "--since", r.values["since"], "--json"], "crashes-json",
          focus=("billing-api", "queue-worker", "indexer", "report-worker"),
          before="For scripts (schema coredoctor.crashes/1):",
          after="""
`core.status` is present, truncated, empty, missing or unknown; `likely_reason` is null for a
core that landed, else a gate id of check with its evidence, the fix commands and the running
`instance` it was read from; `evidence` holds each line that reported the crash and where it was
read (`sources`). The schema changes only by addition.
""")])


def _fix_restarted(run: Run) -> None:
    run.victim("billing-api-restarted", dict(DROP, comm="billing-api"))


def _fix_id(run: Run) -> str:
    out = run.values.get("applied", "")
    m = re.search(r"\b\d{8}T\d{6}-[0-9a-f]{6}\b", out)
    if not m:
        raise RuntimeError("fix --apply printed no fix id:\n" + out)
    return m.group(0)


FIX = Example(
    "fix", "coredoctor fix: plan, apply, list, roll back",
    """
The seed case (billing-api dropped from root to nobody:nogroup under fs.suid_dumpable=0,
kernel.core_pattern `core`). For this transcript COREDOCTOR_STATE_DIR points the fix journal at
a temporary directory (the default is /var/lib/coredoctor); everything else is the host's own:
the sysctls, /etc/sysctl.d/90-coredoctor.conf and /var/crash.
""",
    _seed,
    [Step(lambda r: ["fix", "--pid", r.pid("billing-api")], "fix-text",
          before="Without --apply, fix only plans: what would change, why, and the risk.",
          after="""
The actions in the order they will be made: an absolute core_pattern before fs.suid_dumpable=2
(mode 2 refuses relative names), then the file that persists them. RESTART NEEDED: the running
process keeps the flag it got at its privilege change.
"""),
     Step(lambda r: ["fix", "--pid", r.pid("billing-api"), "--json"], "fix-json",
          before="The same plan for scripts (schema coredoctor.fix/1):",
          after="""
`actions` are the records `--apply` makes, in order, each with why; `needs_restart` names the
processes that keep their old state until restarted; `refused` says what fix will not do (for
example fs.suid_dumpable=2 with a relative core_pattern). The schema changes only by addition.
"""),
     Step(lambda r: ["fix", "--pid", r.pid("billing-api"), "--apply"], "fix-text",
          after="""
Each action was journaled (prior bytes, mode, owner, prior live values) before it was made; the
id names the journal entry.
"""),
     Step(lambda r: ["check", "--pid", r.pid("billing-api-restarted")], "check-text",
          prepare=_fix_restarted,
          before="The daemon restarted (a new victim with the same spec) drops privileges under fs.suid_dumpable=2:",
          after="dumpable=2: its core is written as root, mode 0600, to the absolute path."),
     Step(["fix", "--list"], "lines", after="The fixes applied on this host, from the journal."),
     Step(lambda r: ["fix", "--rollback", _fix_id(r)], "lines",
          after="""
The sysctls, the file and the directory are back as they were before the apply, byte for byte.
""")])


def _canary_setup(run: Run) -> None:
    _seed(run)


def _canary_suid2(run: Run) -> None:
    L.set_sysctls({"kernel.core_pattern": f"{run.cores()}/core.%e.%p", "fs.suid_dumpable": "2"})


CANARY = Example(
    "canary", "coredoctor canary: prove it with a real crash",
    """
canary forks a throwaway process that goes through the target's credential change (from root:
setgroups, setresgid, setresuid), with its limits, cwd, umask and coredump_filter, asks the model,
faults for real (a NULL read) and looks for the core. The seed case first: billing-api dropped
from root to nobody:nogroup under fs.suid_dumpable=0.
""",
    _canary_setup,
    [Step(lambda r: ["canary", "--like", r.pid("billing-api")], "lines",
          after="No core, as check predicted. Exit status 1: no core landed."),
     Step(lambda r: ["canary", "--like", r.pid("billing-api"), "--json"], "canary-json",
          before="For scripts (schema coredoctor.canary/1):",
          after="""
`dumped` is what the kernel did (the wait status's WCOREDUMP bit, and the core found and verified),
`predicted` what check said before the fault, `agrees` whether they match (false: exit status 4).
"""),
     Step(["canary", "--user", "nobody", "--group", "nogroup"], "lines", prepare=_canary_suid2,
          before="After `sysctl -w kernel.core_pattern=<tmp>/cores/core.%e.%p` and `sysctl -w fs.suid_dumpable=2`:",
          after="""
A core landed where check said, verified to be an ELF core whose NT_PRPSINFO names the canary's
pid, and was removed (--keep keeps it). Exit status 0. Exit status 4 would mean the kernel did not
do what check predicted.
""")])

EXAMPLES: List[Example] = [CHECK, CHECK_ALL, CHECK_JSON, SNAPSHOT, EXPLAIN, TRACE, CRASHES, FIX, CANARY]
BY_NAME = {e.name: e for e in EXAMPLES}
