"""Helpers for the trace tests: run coredoctor trace, read its JSON lines, check tracefs."""
import json
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src")
ACTOR = os.path.join(HERE, "actor.py")
PY = sys.executable


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def tracefs_root():
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[2] == "tracefs":
                return fields[1]
    return None


def instances():
    """Names of coredoctor-* tracefs instances (through any mount of tracefs)."""
    root = tracefs_root()
    if root is None:
        return []
    return sorted(n for n in os.listdir(os.path.join(root, "instances")) if n.startswith("coredoctor-"))


def trace(args, cmd=None, out=None, timeout=120, stdin=None):
    """Run ``coredoctor trace --json -o OUT ARGS [-- CMD]``; returns (rc, records, stderr, stdout)."""
    out = out or os.path.join("/tmp", f"cdtrace-{os.getpid()}.jsonl")
    argv = [PY, "-m", "coredoctor", "trace", "--json", "-o", out, *args]
    if cmd:
        argv += ["--", *cmd]
    # its own session, so that on a timeout the tracer *and* the traced command (which holds the
    # output pipes) are ended: subprocess.run would kill only the tracer and then wait forever
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                         start_new_session=True)
    try:
        so, se = p.communicate(input=stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the group we made: the tracer and what it runs
        so, se = p.communicate(timeout=30)
        got = open(out).read()[-3000:] if os.path.exists(out) else ""
        if os.path.exists(out):
            os.unlink(out)
        raise AssertionError(f"coredoctor trace {args} {cmd} did not end within {timeout} s; "
                             f"stderr: {se[-2000:]!r}; records so far: {got}")
    r = subprocess.CompletedProcess(argv, p.returncode, so, se)
    try:
        with open(out) as f:
            recs = [json.loads(line) for line in f if line.strip()]
    finally:
        if os.path.exists(out):
            os.unlink(out)
    return r.returncode, recs, r.stderr, r.stdout


def actor(*steps):
    return [PY, ACTOR, *steps]


def of(recs, event, **match):
    return [r for r in recs if r.get("event") == event and all(r.get(k) == v for k, v in match.items())]
