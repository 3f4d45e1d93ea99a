"""Batched evaluation over a live `snapshot --all` of real processes in varied states
(different RLIMIT_CORE, dumpable 0 by prctl, cwd, umask, ignored signals): the batched results
equal evaluating each process alone, processes with equal facts were batched, and the CLI's
`check --from SNAP --json` is byte-identical with and without batching (kernel.disabled: batch)."""
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from coredoctor.kernel import batch, evaluator, gates
from coredoctor.kernel.world import estimate_core_size

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reads other processes' /proc: run as root")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
UNDUMPABLE = ("import ctypes, time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); print('ok', flush=True); "
              "time.sleep(300)")


def _limit(v):
    return lambda: resource.setrlimit(resource.RLIMIT_CORE, (v, resource.RLIM_INFINITY))


def _umask(m):
    return lambda: os.umask(m)


def _ignore():
    signal.signal(signal.SIGSEGV, signal.SIG_IGN)


def _settled(pids, timeout=15.0):
    """Until every sleep is in its nanosleep: one still starting (the loader, libc's start-up)
    is read with memory that changes under the reader, and its entry matches no other."""
    deadline = time.time() + timeout
    left = set(pids)
    while left and time.time() < deadline:
        for pid in list(left):
            try:
                with open(f"/proc/{pid}/wchan") as f:
                    w = f.read()
            except OSError:
                w = ""
            if "nanosleep" in w:
                left.discard(pid)
            elif w in ("", "0") and time.time() > deadline - timeout + 1.0:
                left.discard(pid)  # no wchan here (CONFIG_KALLSYMS off): a second is all we can do
        time.sleep(0.05)
    assert not left, f"sleeps not yet in nanosleep after {timeout} s: {sorted(left)}"


@pytest.fixture
def varied(tmp_path):
    kids = []
    try:
        for _ in range(4):
            kids.append(subprocess.Popen(["sleep", "300"], preexec_fn=_limit(0)))
            kids.append(subprocess.Popen(["sleep", "300"], preexec_fn=_limit(resource.RLIM_INFINITY)))
            kids.append(subprocess.Popen(["sleep", "300"], preexec_fn=_limit(1)))
            kids.append(subprocess.Popen(["sleep", "300"], cwd=str(tmp_path), preexec_fn=_limit(resource.RLIM_INFINITY)))
            kids.append(subprocess.Popen(["sleep", "300"], preexec_fn=_umask(0o277)))
            kids.append(subprocess.Popen(["sleep", "300"], preexec_fn=_ignore))
            p = subprocess.Popen([sys.executable, "-c", UNDUMPABLE], stdout=subprocess.PIPE)
            assert p.stdout.readline() == b"ok\n"
            kids.append(p)
        _settled([k.pid for i, k in enumerate(kids) if i % 7 != 6])
        yield kids
    finally:
        for k in kids:
            k.kill()
        for k in kids:
            k.wait()


def test_batched_equals_alone_over_a_live_snapshot(varied, tmp_path):
    out = subprocess.run([sys.executable, "-m", "coredoctor", "snapshot", "--all"], env=ENV,
                         capture_output=True, check=True)
    snap = json.loads(out.stdout)
    by_pid = {p["pid"]: p for p in snap["processes"]}
    mine = [k.pid for k in varied]
    assert all(pid in by_pid for pid in mine)
    pids = snap["targets"]
    got = gates.evaluate_targets(snap, pids)
    alone = [evaluator.evaluate(snap, by_pid[p], by_pid.get(by_pid[p].get("ppid"))) for p in pids]
    assert got == alone
    # the varied states gave different verdicts, and equal states were batched
    res = {t["pid"]: t for t in got}
    kinds = [res[k.pid] for k in varied]
    assert {t["blocking_gate"] for t in kinds[6::7]} == {"dumpable"}   # prctl(PR_SET_DUMPABLE, 0)
    assert {t["blocking_gate"] for t in kinds[0::7]} == {"rlimit-core"}  # RLIMIT_CORE 0
    # SIGSEGV ignored: a fault still dumps (forced), a kill-sent one is dropped
    ign = [k.pid for k in varied[5::7]]
    killed = gates.evaluate_targets(snap, pids, "SIGSEGV", "kill")
    assert killed == [evaluator.evaluate(snap, by_pid[p], by_pid.get(by_pid[p].get("ppid")), "SIGSEGV", "kill")
                      for p in pids]
    assert {t["blocking_gate"] for t in killed if t["pid"] in ign} == {"signal"}
    sleeps = [k.pid for i, k in enumerate(varied) if i % 7 != 6]
    groups, _ = batch.group([by_pid[p] for p in sleeps])
    # 6 states of sleep, each as many times over as the one memory figure the gates read differs
    # (the core size estimate: anonymous + shmem pages; a process's own start-up makes it vary)
    states = {(i % 7, estimate_core_size(by_pid[k.pid])) for i, k in enumerate(varied) if i % 7 != 6}
    assert len(groups) <= len(states) < len(sleeps), (len(groups), sorted(states))
    # the CLI end to end: the same document with and without batching
    docs = []
    for disabled in ([], ["batch"]):  # kernel.disabled: as COREDOCTOR_DISABLE=batch records it
        path = tmp_path / f"snap{len(docs)}.json"
        path.write_text(json.dumps(dict(snap, kernel=dict(snap["kernel"], disabled=disabled))))
        docs.append(subprocess.run([sys.executable, "-m", "coredoctor", "check", "--from", str(path), "--json"],
                                   env=ENV, capture_output=True).stdout)
    assert docs[0] == docs[1] and len(json.loads(docs[0])["targets"]) == len(pids)
