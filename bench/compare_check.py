#!/usr/bin/env python3
"""Same answers before and after a speed change: `check --all --json` and `snapshot --all` of
this checkout's src/ and of OTHER's, over the same process table. Run as root.

usage: sudo python3 bench/compare_check.py --against OTHER_CHECKOUT [--procs 200]

1. live: starts PROCS idle processes (a frozen set: they do nothing while both trees read them),
   runs both trees' `snapshot --all` and `check --all --json` back to back and compares them
   process by process (the snapshot's `taken_at` aside). Every process of the frozen set must
   have the same entry; a difference in another process (one that changed between the two
   reads: another user's work) is listed, not counted. A pair during which the host's
   core-dump sysctls changed (another user's test) is read again, up to five times.
2. offline: one `snapshot --all` file, evaluated by both trees with `check --from FILE --all
   --json`: the two documents must be equal, whole.

Exit 0 when both hold, 1 otherwise. Ends only the processes it started.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def run(src, *args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=src, **(env_extra or {}))
    p = subprocess.run([sys.executable, "-m", "coredoctor", *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env)
    if p.returncode not in (0, 1):
        sys.exit(f"{src}: coredoctor {' '.join(args)} failed: {p.stderr.decode()[-500:]}")
    return json.loads(p.stdout)


def _sysctls():
    out = []
    for name in ("kernel/core_pattern", "fs/suid_dumpable", "kernel/core_uses_pid", "kernel/core_pipe_limit"):
        try:
            with open(f"/proc/sys/{name}") as f:
                out.append(f.read())
        except OSError:
            out.append(None)
    return out


def by_pid(entries):
    return {e["pid"]: e for e in entries}


def compare(name, a, b, frozen):
    bad = other = 0
    for pid in sorted(set(a) & set(b)):
        if a[pid] != b[pid]:
            keys = sorted(k for k in set(a[pid]) | set(b[pid]) if a[pid].get(k) != b[pid].get(k))
            if pid in frozen:
                bad += 1
                print(f"  {name}: pid {pid} ({a[pid].get('comm')}) DIFFERS in {keys}")
            else:
                other += 1
                print(f"  {name}: pid {pid} ({a[pid].get('comm')}) differs in {keys} (not ours: changed "
                      "between the reads?)")
    print(f"{name}: {len(set(a) & set(b))} processes in both, {len(frozen & set(a) & set(b))} of the frozen "
          f"set; differing: {bad} of the frozen set, {other} others")
    return bad == 0 and frozen <= set(a) & set(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", required=True, metavar="CHECKOUT")
    ap.add_argument("--procs", type=int, default=200)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    other = os.path.join(os.path.abspath(a.against), "src")
    kids = []
    ok = True
    try:
        for _ in range(a.procs):
            kids.append(subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL))
        time.sleep(0.5)
        frozen = {k.pid for k in kids}
        for extra in ({}, {"COREDOCTOR_DISABLE": "pidfd,ptrace"}):
            tag = f" [{extra['COREDOCTOR_DISABLE']} disabled]" if extra else ""
            for attempt in range(1, 6):  # (read again when the host changed meanwhile, as below)
                before = _sysctls()
                s1, s2 = run(SRC, "snapshot", "--all", env_extra=extra), run(other, "snapshot", "--all", env_extra=extra)
                if _sysctls() == before:
                    break
                print(f"  snapshot{tag}: the host's sysctls changed during the pair; again ({attempt})")
            top = [k for k in set(s1) | set(s2) if k not in ("taken_at", "processes") and s1.get(k) != s2.get(k)]
            if top:
                print(f"snapshot{tag}: sections differ: {sorted(top)} (paths/units/mounts of other processes "
                      "may change between the reads)")
            ok &= compare(f"snapshot{tag}", by_pid(s1["processes"]), by_pid(s2["processes"]), frozen)
            for attempt in range(1, 6):
                # another user's test may change the host between the two reads (core_pattern,
                # suid_dumpable): such a pair is not a comparison; it is read again
                before = _sysctls()
                c1 = run(SRC, "check", "--all", "--json", env_extra=extra)
                c2 = run(other, "check", "--all", "--json", env_extra=extra)
                if _sysctls() == before:
                    break
                print(f"  check --all --json{tag}: the host's sysctls changed during the pair; again ({attempt})")
            ok &= compare(f"check --all --json{tag}", by_pid(c1["targets"]), by_pid(c2["targets"]), frozen)
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(s1, f)
            try:
                d1 = run(SRC, "check", "--from", f.name, "--all", "--json")
                d2 = run(other, "check", "--from", f.name, "--all", "--json")
            finally:
                os.unlink(f.name)
            same = d1 == d2
            print(f"check --from FILE --all --json{tag}: {len(d1['targets'])} targets, documents "
                  f"{'equal' if same else 'DIFFER'}")
            ok &= same
    finally:
        for k in kids:
            k.send_signal(signal.SIGKILL)
        for k in kids:
            k.wait()
    print("same answers" if ok else "ANSWERS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
