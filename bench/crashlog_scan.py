#!/usr/bin/env python3
"""Benchmark: scanning a large syslog-format kernel log for crash lines, coredoctor
(`coredoctor.history.syslog.read([path])`, counting events) against `grep -c -E` given the same
anchors (the literal strings the scanner looks for, `syslog.ANCHORS`, derived from the patterns of
history/kmsg.py and history/daemonlog.py; regex-escaped and joined with `|`), in the same run.

Writes a log of --size bytes (default 1 GiB) with --records crash lines (default 100,000) among
ordinary kernel and daemon lines to a temporary file under /var/tmp (removed afterwards unless
--keep), then times both alternately for --rounds rounds, each in its own process (grep with
LC_ALL=C, its fastest mode; the scan in a child Python process, which also reports its peak RSS, VmHWM).
Prints the medians and the ratio (goal <= 3) and checks that the scan found every record.

The mix of crash records: x86 `segfault at` and `traps:` lines, print-fatal-signals lines (both
formats), audit ANOM_ABEND, core-dump refusals in the 6.12+ `coredump: PID(COMM): ...` format and the
older formats, and a few user-space lines (systemd unit results, systemd-coredump). Some ordinary
lines contain an anchor without being a crash (`code=exited` unit results, systemd-coredump's
stack-trace lines): grep counts them, the scan must not.

usage: python3 bench/crashlog_scan.py [--size 1G] [--records 100000] [--rounds 5] [--keep PATH] [--no-memmem]
"""
import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
sys.path.insert(0, SRC)

from coredoctor.history import syslog  # noqa: E402

MON = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

CRASHES = [  # (weight, template): {p} pid, {c} comm, {e} executable, {n} unit name, {u} uptime, {t} audit time
    (30, "kernel: [{u}] {c}[{p}]: segfault at 0 ip 00007f3499585ad8 sp 00007ffda54d0ab8 error 4 in "
         "libc.so.6[167ad8,7f3499444000+156000] likely on CPU 1 (core 1, socket 0)"),
    (8, "kernel: [{u}] traps: {c}[{p}] general protection fault ip:7f3a12b4c0de sp:7ffc8b2e1a40 error:0 in "
        "libfoo.so.1[7f3a12b00000+60000]"),
    (4, "kernel: [{u}] traps: {c}[{p}] trap divide error ip:55d0c3a0113e sp:7ffd1b8 error:0 in {c}[55d0c3a00000+2000]"),
    (12, "kernel: [{u}] {c}/{p}: potentially unexpected fatal signal 11."),
    (4, "kernel: [{u}] {e}: {c}: potentially unexpected fatal signal 6."),  # 6.x: %pD (basename), comm
    (12, 'kernel: [{u}] audit: type=1701 audit({t}:{p}): auid=4294967295 uid=0 gid=0 ses=4294967295 '
         'subj=unconfined pid={p} comm="{c}" exe="/usr/sbin/{c}" sig=11 res=1'),
    (5, "kernel: [{u}] coredump: {p}({c}): RLIMIT_CORE is set to 1, aborting core"),
    (4, "kernel: [{u}] coredump: {p}({c}): |/usr/share/apport/apport pipe failed"),
    (3, "kernel: [{u}] coredump: {p}({c}): this process can only dump core to a fully qualified path, "
        "skipping core dump"),
    (2, "kernel: [{u}] coredump: {p}({c}): over core_pipe_limit, skipping core dump"),
    (2, "kernel: [{u}] coredump: {p}({c}): Core dump to /var/crash/core.{p} aborted: cannot preserve file owner"),
    (3, "kernel: [{u}] Pid {p}({c}) can only dump core to fully qualified path!"),
    (2, "kernel: [{u}] Process {p}({c}) has RLIMIT_CORE set to 1"),
    (2, "kernel: [{u}] Pid {p}({c}) over core_pipe_limit"),
    (2, "kernel: [{u}] Core dump to |/usr/lib/systemd/systemd-coredump pipe failed"),
    (2, "systemd[1]: {n}.service: Main process exited, code=dumped, status=11/SEGV"),
    (1, "systemd[1]: {n}.service: Main process exited, code=killed, status=6/ABRT"),
    (2, "systemd-coredump[{h}]: Process {p} ({c}) of user 0 dumped core."),
]

NOISE = [  # ordinary lines; the first group holds no anchor
    "kernel: [{u}] EXT4-fs (vda1): re-mounted 3f1b2c4d-aaaa-bbbb-cccc-0123456789ab. Quota mode: none.",
    "kernel: [{u}] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
    "kernel: [{u}] audit: type=1400 audit({t}:{p}): apparmor=\"STATUS\" operation=\"profile_replace\" "
    "profile=\"unconfined\" name=\"/usr/sbin/ntpd\" pid={p} comm=\"apparmor_parser\"",
    "kernel: [{u}] perf: interrupt took too long (2503 > 2500), lowering kernel.perf_event_max_sample_rate to 79750",
    "kernel: [{u}] e1000: eth0 NIC Link is Up 1000 Mbps Full Duplex, Flow Control: RX",
    "kernel: [{u}] TCP: request_sock_TCP: Possible SYN flooding on port 8080. Sending cookies.",
    "kernel: [{u}] nf_conntrack: nf_conntrack: table full, dropping packet",
    "kernel: [{u}] INFO: task kworker/0:1:{p} blocked for more than 120 seconds.",
    "kernel: [{u}] {c}[{p}]: unhandled page fault notice suppressed (rate limit)",
    "sshd[{p}]: Accepted publickey for root from 127.0.0.1 port 51234 ssh2: RSA SHA256:Zx9f3kq0Lr2bX4d7YcQ",
    "sshd[{p}]: pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)",
    "CRON[{p}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
    "systemd[1]: Starting Daily apt upgrade and clean activities...",
    "systemd[1]: Started Session {p} of user root.",
    "systemd[1]: logrotate.service: Deactivated successfully.",
    "dhclient[{p}]: DHCPACK of 127.0.0.2 from 127.0.0.1",
    "rsyslogd: [origin software=\"rsyslogd\" swVersion=\"8.2302.0\"] rsyslogd was HUPed",
    "ntpd[{p}]: Soliciting pool server 127.0.0.1",
    "postfix/qmgr[{p}]: 4F2A81C0D2: removed",
]
NEAR = [  # contain an anchor, are no crash
    "systemd[1]: {n}.service: Main process exited, code=exited, status=0/SUCCESS",
    "systemd-coredump[{h}]: Stack trace of thread {p}:",
    "systemd-coredump[{h}]: #0  0x00007f3499585ad8 raise (libc.so.6 + 0x3cad8)",
]
COMMS = ("python3", "nginx", "ovs-vswitchd", "postgres", "java", "a.out", "redis-server", "node", "my prog")


def generate(path, size, records, seed=1):
    rnd = random.Random(seed)
    cw = [w for w, _ in CRASHES]
    ctpl = [t for _, t in CRASHES]
    for t in NOISE:
        for a in syslog.ANCHORS:
            assert a.decode() not in t, (a, t)
    t0 = time.mktime((2026, 11, 20, 0, 0, 0, 0, 0, -1))
    approx_line = 115
    lines_total = size // approx_line
    every = max(1, lines_total // records)
    written, n_crash, n_near, i = 0, 0, 0, 0
    chosen = rnd.choices(range(len(ctpl)), cw, k=records)
    with open(path, "w", buffering=8 << 20) as f:
        while written < size or n_crash < records:
            now = t0 + i * 0.05
            tm = time.localtime(now)
            head = f"{MON[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} bench "
            block = []
            for j in range(200):
                k = i * 200 + j
                p = 1000 + k % 4000000
                c = COMMS[k % len(COMMS)]
                kw = dict(p=p, c=c, e=c.replace(" ", "_"), n=c.replace(" ", "-"), u=f"{(now - t0) + 1234.5:12.6f}",
                          t=f"{now:.3f}", h=p + 1)
                if n_crash < records and k % every == every // 2:
                    block.append(head + ctpl[chosen[n_crash]].format(**kw))
                    n_crash += 1
                elif k % 5003 == 17:
                    block.append(head + NEAR[k % len(NEAR)].format(**kw))
                    n_near += 1
                else:
                    block.append(head + NOISE[k % len(NOISE)].format(**kw))
            s = "\n".join(block) + "\n"
            f.write(s)
            written += len(s)
            i += 1
    return n_crash, n_near


def scan_child(path, chunk):
    t0 = time.perf_counter()
    n = sum(1 for _ in syslog.read([path], chunk_size=chunk))
    dt = time.perf_counter() - t0
    # VmHWM: the peak RSS of this process's memory since exec (getrusage's ru_maxrss would also count
    # the parent's memory from before the exec)
    with open("/proc/self/status") as f:
        hwm = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    print(json.dumps({"events": n, "seconds": dt, "maxrss_kib": hwm}))


def timed(cmd, env=None):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)
    dt = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} failed: {r.stderr.decode()[-500:]}")
    return dt, r.stdout.decode()


def parse_size(s):
    m = re.fullmatch(r"(\d+)([KMG]?)", s.upper())
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G")
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=syslog.CHUNK)
    ap.add_argument("--keep", help="write the log here and keep it (reused when it exists)")
    ap.add_argument("--no-memmem", action="store_true", help="scan with bytes.find (COREDOCTOR_DISABLE=memmem)")
    ap.add_argument("--scan-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.scan_child:
        return scan_child(a.scan_child, a.chunk)
    size = parse_size(a.size)
    if a.keep:
        path, keep = a.keep, True
    else:
        fd, path = tempfile.mkstemp(prefix="coredoctor-crashlog-", suffix=".log", dir="/var/tmp")
        os.close(fd)
        keep = False
    try:
        if not (keep and os.path.exists(path) and os.path.getsize(path) >= size):
            t = time.perf_counter()
            n_crash, n_near = generate(path, size, a.records)
            print(f"generated {path}: {os.path.getsize(path) / 2**30:.2f} GiB, {n_crash} crash lines, "
                  f"{n_near} near misses, in {time.perf_counter() - t:.0f} s", flush=True)
        regex = "|".join(re.escape(x.decode()) for x in syslog.ANCHORS)
        grep = [shutil.which("grep") or "grep", "-c", "-E", regex, path]
        scan = [sys.executable, os.path.abspath(__file__), "--scan-child", path, "--chunk", str(a.chunk)]
        genv = dict(os.environ, LC_ALL="C")
        senv = dict(os.environ, COREDOCTOR_DISABLE="memmem") if a.no_memmem else None
        print(f"grep gets ({len(syslog.ANCHORS)} anchors): grep -c -E '{regex}'")
        timed(["cat", path])  # warm the page cache
        rows = []
        for r in range(a.rounds):
            order = [("grep", grep), ("scan", scan)] if r % 2 == 0 else [("scan", scan), ("grep", grep)]
            res = {}
            for name, cmd in order:
                res[name] = timed(cmd, genv if name == "grep" else senv)
            child = json.loads(res["scan"][1])
            rows.append((res["grep"][0], res["scan"][0], child["seconds"], child["maxrss_kib"], child["events"],
                         int(res["grep"][1].strip())))
            print(f"round {r + 1}: grep {rows[-1][0]:.2f} s ({rows[-1][5]} lines), scan {rows[-1][1]:.2f} s "
                  f"(in-process {rows[-1][2]:.2f} s, {rows[-1][4]} events, peak RSS {rows[-1][3] / 1024:.0f} MiB)",
                  flush=True)
        g = statistics.median(x[0] for x in rows)
        s = statistics.median(x[1] for x in rows)
        print(f"file {os.path.getsize(path) / 2**30:.2f} GiB, kernel {os.uname().release}, {os.cpu_count()} CPUs, "
              f"chunk {a.chunk >> 20} MiB")
        print(f"search: {'bytes.find' if a.no_memmem else 'memmem' if syslog._MEMMEM else 'bytes.find'}; median of "
              f"the per-round ratios {statistics.median(x[1] / x[0] for x in rows):.2f}")
        print(f"median: grep -c -E {g:.2f} s, coredoctor scan {s:.2f} s, ratio {s / g:.2f} (goal <= 3); "
              f"peak RSS {max(x[3] for x in rows) / 1024:.0f} MiB; events {rows[-1][4]} of {a.records}")
        if any(x[4] != a.records for x in rows):
            sys.exit("the scan did not find every crash record")
    finally:
        if not keep:
            os.unlink(path)


if __name__ == "__main__":
    main()
