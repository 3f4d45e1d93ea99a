#!/usr/bin/env python3
"""Benchmark: `coredoctor check --all --json` against `ps -eo pid,uid,gid,rss,comm` over the same
process table, in the same run. Starts N idle processes (default 2000) so that the table has about
that many entries, times both commands alternately, prints the figures and the median ratio
(goal <= 3). Run as root. Ends only the processes it started.

usage: sudo python3 bench/check_all.py [--procs 2000] [--rounds 7] [--against OTHER_CHECKOUT]

--against times a second source tree (another checkout's src/, e.g. the branch before a change)
in the same rounds, alternating with this one, and prints its figures too: a before/after on a
loaded machine is only fair within one run. On a machine shared with other work, compare CPU
times (user+sys, which a busy neighbour inflates less than wall time) and ratios of the same
run; the lowest CPU time of the rounds is printed too (the round least disturbed). Another
user's test that changes kernel.core_pattern during the rounds changes what check reads: the
core_pattern is printed before and after. bench/compare_check.py checks that two trees give
the same answers (the other half of a speed change).
"""
import argparse
import os
import signal
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def timed(cmd, env=None):
    """(wall seconds, CPU seconds: user + system of the command and the children it waited for)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t0
    p.stderr.close()
    if p.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} failed: {err.decode()[-500:]}")
    return dt, ru.ru_utime + ru.ru_stime


def _core_pattern():
    try:
        with open("/proc/sys/kernel/core_pattern") as f:
            return f.read().strip()
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--coredoctor", help="the coredoctor command to time (default: .venv/bin/coredoctor, "
                    "then the one beside this python, then the one on PATH, then python -m coredoctor "
                    "from src/)")
    ap.add_argument("--against", metavar="CHECKOUT", help="also time CHECKOUT/src in the same rounds")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    kids = []
    try:
        for _ in range(max(0, a.procs - sum(1 for d in os.listdir("/proc") if d.isdigit()))):
            kids.append(subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL))
        time.sleep(0.5)
        n = sum(1 for d in os.listdir("/proc") if d.isdigit())
        # byte-compile first, as pip does for an installed package (PYTHONDONTWRITEBYTECODE=1
        # would otherwise make every timed run recompile the sources)
        subprocess.run([sys.executable, "-m", "compileall", "-q", SRC], stdout=subprocess.DEVNULL, check=True)
        env = dict(os.environ, PYTHONPATH=SRC)
        exe = a.coredoctor or next((c for c in (os.path.join(os.path.dirname(HERE), ".venv", "bin", "coredoctor"),
                                                os.path.join(os.path.dirname(sys.executable), "coredoctor"),
                                                shutil.which("coredoctor")) if c and os.path.exists(c)), None)
        cd = ([exe] if exe else [sys.executable, "-m", "coredoctor"]) + ["check", "--all", "--json"]
        ps = ["ps", "-eo", "pid,uid,gid,rss,comm"]
        other = os.path.join(os.path.abspath(a.against), "src") if a.against else None
        if other:
            subprocess.run([sys.executable, "-m", "compileall", "-q", other], stdout=subprocess.DEVNULL, check=True)
            env_o = dict(os.environ, PYTHONPATH=other)
            timed(cd, env_o)
        timed(cd, env), timed(ps)  # warm caches
        pattern_before = _core_pattern()
        rows = []
        orows = []
        load = []
        for _ in range(a.rounds):
            (t_cd, c_cd), (t_ps, c_ps) = timed(cd, env), timed(ps)
            rows.append((t_cd, t_ps, t_cd / t_ps, c_cd, c_ps))
            if other:
                (t_o, c_o), (t_ps2, c_ps2) = timed(cd, env_o), timed(ps)
                orows.append((t_o, t_ps2, t_o / t_ps2, c_o, c_ps2))
            load.append(os.getloadavg()[0])
        print(f"processes in the table: {n}  (kernel {os.uname().release}, {os.cpu_count()} CPUs, "
              f"1-minute load {min(load):.2f}-{max(load):.2f} during the rounds)")
        print(f"timing: {' '.join(cd)}")
        pattern_after = _core_pattern()
        print(f"kernel.core_pattern {pattern_before!r}" + ("" if pattern_after == pattern_before else
                                                         f" -> {pattern_after!r} (changed during the rounds)"))
        print(f"{'round':>5} {'check --all --json':>20} {'ps -eo ...':>12} {'ratio':>7}   {'cpu: check':>10} {'ps':>7}")
        for i, (c, p, r, cc, cp) in enumerate(rows, 1):
            print(f"{i:>5} {c * 1000:>17.0f} ms {p * 1000:>9.0f} ms {r:>7.2f}   {cc * 1000:>7.0f} ms {cp * 1000:>4.0f} ms")
        med = statistics.median(r[2] for r in rows)
        m_cd = statistics.median(r[0] for r in rows)
        m_ps = statistics.median(r[1] for r in rows)
        print(f"median: check {m_cd * 1000:.0f} ms, ps {m_ps * 1000:.0f} ms, ratio {med:.2f} "
              f"(median of the rounds' ratios; of the medians {m_cd / m_ps:.2f}) (goal <= 3)")
        c_cd = statistics.median(r[3] for r in rows)
        c_ps = statistics.median(r[4] for r in rows)
        print(f"median CPU (user+sys): check {c_cd * 1000:.0f} ms, ps {c_ps * 1000:.0f} ms, "
              f"ratio {statistics.median(r[3] / r[4] for r in rows):.2f}")
        print(f"lowest CPU of the rounds: check {min(r[3] for r in rows) * 1000:.0f} ms, ps "
              f"{min(r[4] for r in rows) * 1000:.0f} ms, ratio {min(r[3] for r in rows) / min(r[4] for r in rows):.2f}"
              + (f"; against: check {min(r[3] for r in orows) * 1000:.0f} ms, ratio "
                 f"{min(r[3] for r in orows) / min(r[4] for r in orows):.2f}" if orows else ""))
        if orows:
            print(f"against {other} (same rounds, alternating): median check "
                  f"{statistics.median(r[0] for r in orows) * 1000:.0f} ms, ratio "
                  f"{statistics.median(r[2] for r in orows):.2f}; CPU {statistics.median(r[3] for r in orows) * 1000:.0f} ms, "
                  f"ratio {statistics.median(r[3] / r[4] for r in orows):.2f}")
    finally:
        for k in kids:
            k.send_signal(signal.SIGKILL)
        for k in kids:
            k.wait()


if __name__ == "__main__":
    main()
