#!/usr/bin/env python3
"""Benchmark: a compressed week under `coredoctor watch` -- at least 10^6 credential changes and
1,000 crashes -- with watch's RSS sampled over time, nothing lost, and its CPU cost per event.

A small C program (compiled here) runs in --workers child processes as root, each toggling its
effective uid with setresuid(-1, e, -1) between 0 and 65534 (every call goes through
commit_creds() and resets the dumpable flag: one dumpable-change for watch's model) at a paced
rate; another child forks --crashes processes that each set RLIMIT_CORE 0 and fault (a real
SIGSEGV, no core written). watch runs host-wide as the service does, with
--log json (its entries on a file) and --textfile, and is ended by pid with SIGTERM.

Figures printed: credential changes generated vs the dumpable-changes watch's model counted (the
host's own activity adds a few), crashes generated vs crash entries for the bench's crash
processes (exact), the ring buffer's lost-event counters, watch's RSS over time (min, max, first
and last quarter medians), its CPU time (its own plus its textfile writers') per event and per
credential change, and whether a tracefs instance was left.

Takes the tests' machine lock (/run/lock/coredoctor-tests.lock): run it when nothing else does.

    sudo .venv/bin/python bench/watch_week.py [--changes 1000000] [--crashes 1000] [--rate 10000]
"""
import argparse
import fcntl
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
LOCK = "/run/lock/coredoctor-tests.lock"
CRASH_COMM = "cdbench-crash"

C = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec/1e9;}
static void pace(double t0, long done, double rate){
    double due = t0 + done / rate, d = due - now();
    if (d > 0) { struct timespec s = {(time_t)d, (long)((d - (time_t)d) * 1e9)}; nanosleep(&s, 0); }
}
int main(int argc, char **argv){
    double t0 = now();
    if (!strcmp(argv[1], "creds")) {            /* creds N RATE */
        long n = atol(argv[2]); double rate = atof(argv[3]);
        for (long i = 0; i < n; i++) {
            if (setresuid(-1, (i & 1) ? 0 : 65534, -1) != 0) { perror("setresuid"); return 1; }
            if ((i & 63) == 0) pace(t0, i, rate);
        }
        return 0;
    }
    if (!strcmp(argv[1], "crashes")) {          /* crashes N RATE */
        long n = atol(argv[2]); double rate = atof(argv[3]); long bad = 0;
        for (long i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) {
                struct rlimit r = {0, 0};
                setrlimit(RLIMIT_CORE, &r);
                prctl(PR_SET_NAME, "cdbench-crash", 0, 0, 0);
                *(volatile int *)0 = 1;        /* a real fault: SIGSEGV */
                _exit(0);
            }
            int st; waitpid(p, &st, 0);
            if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV) bad++;
            pace(t0, i + 1, rate);
        }
        printf("%ld\n", bad);
        return 0;
    }
    return 2;
}
"""


def build(d):
    src, exe = os.path.join(d, "gen.c"), os.path.join(d, "gen")
    with open(src, "w") as f:
        f.write(C)
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    return exe


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def cpu_s(pid):
    """utime + stime of *pid* and of its reaped children (the textfile writers), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / tck


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=1_000_000)
    ap.add_argument("--crashes", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=10000.0, help="credential changes per second, all workers")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--crash-rate", type=float, default=0.0, help="crashes per second (default: spread over the run)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    lockfd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    if os.environ.get("COREDOCTOR_LOCK_HELD") != "1":  # a caller holding it already (flock(1) around)
        sys.stderr.write("waiting for the machine lock...\n")
        fcntl.flock(lockfd, fcntl.LOCK_EX)
    d = tempfile.mkdtemp(prefix="cdbench-watch-")
    try:
        exe = build(d)
        out = open(os.path.join(d, "entries.jsonl"), "w")
        tf = os.path.join(d, "textfile")
        os.mkdir(tf)
        env = dict(os.environ, PYTHONPATH=SRC, COREDOCTOR_STATE_DIR=os.path.join(d, "state"))
        w = subprocess.Popen([sys.executable, "-m", "coredoctor", "watch", "--log", "json",
                              "--textfile", tf, "--buffer-kb", "32768", "--interval", "30"],
                             stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        t_start = time.monotonic()
        while True:
            with open(out.name) as f:
                if "watch-started" in f.read():
                    break
            if w.poll() is not None or time.monotonic() - t_start > 120:
                sys.exit(f"watch did not start: {w.stderr.read()}")
            time.sleep(0.2)
        startup = time.monotonic() - t_start
        cpu0, rss = cpu_s(w.pid), []
        stop = threading.Event()

        def sample():
            t0 = time.monotonic()
            while not stop.is_set():
                try:
                    rss.append((time.monotonic() - t0, rss_kb(w.pid)))
                except OSError:
                    break
                stop.wait(1.0)
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.monotonic()
        per = args.changes // args.workers
        duration = args.changes / args.rate
        crate = args.crash_rate or args.crashes / duration
        gens = [subprocess.Popen([exe, "creds", str(per), str(args.rate / args.workers)]) for _ in range(args.workers)]
        crasher = subprocess.Popen([exe, "crashes", str(args.crashes), str(crate)], stdout=subprocess.PIPE, text=True)
        rcs = [g.wait() for g in gens]
        bad = int(crasher.communicate()[0].strip() or -1)
        gen_wall = time.monotonic() - t0
        # let watch catch up: its counters stop moving once the buffer is read
        time.sleep(3.0)
        cpu1 = cpu_s(w.pid)
        stop.set()
        th.join()
        w.send_signal(signal.SIGTERM)
        err = w.communicate(timeout=120)[1]
        out.close()
        left = []
        with open("/proc/self/mounts") as f:
            roots = [x.split()[1] for x in f if x.split()[2] == "tracefs"]
        for r in roots:
            left += [n for n in os.listdir(os.path.join(r, "instances")) if n.startswith("coredoctor-")]
        stopped, crash_entries = None, 0
        with open(os.path.join(d, "entries.jsonl")) as f:
            for line in f:
                e = json.loads(line)
                if e.get("COREDOCTOR_EVENT") == "watch-stopped":
                    stopped = e
                # the name: the fork's ("gen") when the child died before its PR_SET_NAME was read
                elif e.get("COREDOCTOR_COMM") in (CRASH_COMM, "gen") and e.get("COREDOCTOR_SIGNAL") == "SIGSEGV":
                    crash_entries += 1
        generated = per * args.workers
        events = int(stopped["COREDOCTOR_EVENTS"])
        changes = int(stopped["COREDOCTOR_DUMPABLE_CHANGES"])
        cpu = cpu1 - cpu0
        vals = [v for _, v in rss if v]
        q = max(1, len(vals) // 4)
        print(f"watch start-up: {startup:.1f} s; generators: {gen_wall:.1f} s wall, exit codes {sorted(set(rcs))}, "
              f"{bad} crash processes did not die of SIGSEGV")
        print(f"credential changes generated: {generated}; dumpable-changes watch counted: {changes} "
              f"(+{changes - generated} from the rest of the host)")
        print(f"crashes generated: {args.crashes}; crash entries for them: {crash_entries}")
        print(f"ring buffer lost events: {stopped['COREDOCTOR_LOST']}; undecodable records: "
              f"{stopped.get('COREDOCTOR_UNDECODABLE_RECORDS')}; events read: {events}")
        print(f"watch RSS (KiB) over {len(vals)} samples: min {min(vals)}, max {max(vals)}, first-quarter median "
              f"{int(statistics.median(vals[:q]))}, last-quarter median {int(statistics.median(vals[-q:]))}")
        print(f"watch CPU: {cpu:.1f} s for {events} events = {cpu / events * 1e6:.1f} us/event, "
              f"{cpu / generated * 1e6:.1f} us per credential change; textfile writes: "
              f"{stopped.get('COREDOCTOR_TEXTFILE_WRITES')}")
        print(f"watch exit code {w.returncode}; stderr {err.strip()!r}; tracefs instances left: {left}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
        os.close(lockfd)


if __name__ == "__main__":
    main()
