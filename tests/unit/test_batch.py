"""Evaluating once per set of identical facts (kernel/batch.py) gives exactly what evaluating
each process alone gives: over the recorded fixtures, and over fixtures multiplied into many
processes with varied facts (limits, dumpable values, cwd, umask, memory, an existing core
file, signal dispositions, the pattern with %p)."""
import copy
import glob
import json
import os

import pytest

from coredoctor.kernel import batch, evaluator, gates

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(HERE), "fixtures", "*.json")))


def _alone(snap, pids, signal="SIGSEGV", how=None):
    procs = {p["pid"]: p for p in snap["processes"]}
    return [evaluator.evaluate(snap, procs[p], procs.get(procs[p].get("ppid")), signal, how) for p in pids]


def _multiply(snap, copies=6):
    """Each process of *snap* copied *copies* times under new pids (same parent), every second
    copy with one fact changed, so that some copies share all facts and some do not."""
    snap = copy.deepcopy(snap)
    new = []
    pid = 30000
    variants = [
        lambda p: None,
        lambda p: p.__setitem__("limits", dict(p.get("limits") or {}, core=[0, None])),
        lambda p: None,
        lambda p: p.__setitem__("umask", 0o277),
        lambda p: None,
        lambda p: p.__setitem__("cwd", "/elsewhere"),
        lambda p: p.__setitem__("mem", {"rss": 10 ** 9, "anon": 10 ** 9, "shmem": 0}),
        lambda p: p.__setitem__("dumpable", {"value": 0, "candidates": [0], "source": "pidfd", "evidence": "x"}),
        lambda p: p.__setitem__("dumpable", {"value": None, "candidates": [0, 2], "source": "status",
                                             "evidence": "y"}),
        lambda p: p.__setitem__("sig", dict(p.get("sig") or {}, caught="0000000000000800")),
        lambda p: p.__setitem__("dest", {k: dict(v, file={"exists": True, "mode": 0o100600, "uid": 0,
                                                          "gid": 0, "nlink": 1})
                                         for k, v in (p.get("dest") or {"1": {}, "2": {}}).items()}),
        lambda p: p.__setitem__("unit", "svc.service"),
    ]
    for p in snap["processes"]:
        for i in range(copies):
            for v in variants:
                q = copy.deepcopy(p)
                v(q)
                pid += 1
                q["pid"], q["nspid"] = pid, [pid] + list((p.get("nspid") or [p["pid"]])[1:])
                new.append(q)
    snap["processes"] += new
    return snap


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
@pytest.mark.parametrize("pattern", [None, "/var/crash/core.%e.%p.%P.%i", "core", "|/bin/false %p %P"])
@pytest.mark.parametrize("signal,how", [("SIGSEGV", None), ("SIGABRT", "kill")])
def test_batched_equals_alone(path, pattern, signal, how):
    with open(path) as f:
        snap = _multiply(json.load(f))
    if pattern:
        snap["sysctl"]["kernel.core_pattern"] = pattern
    pids = [p["pid"] for p in snap["processes"]]
    got = gates.evaluate_targets(snap, pids, signal, how)
    assert got == _alone(snap, pids, signal, how)
    # and it did batch: far fewer sets of facts than processes
    groups, alone = batch.group(snap["processes"])
    assert len(groups) + len(alone) < len(pids) / 3, (len(groups), len(pids))
    # the pid is bound where it shows: in the destination of a %p pattern
    if pattern and "%p" in pattern:
        for t in got:
            assert str(t["pid"]) in t["core_destination"]["path"], t["core_destination"]


def test_results_are_separate_where_the_pid_shows():
    with open(FIXTURES[0]) as f:
        snap = _multiply(json.load(f))
    pids = [p["pid"] for p in snap["processes"]]
    got = gates.evaluate_targets(snap, pids)
    a, b = got[-1], got[-3]
    assert a["pid"] != b["pid"] and a is not b
    a["core_destination"]["path"] = "changed"
    assert b["core_destination"]["path"] != "changed"


def test_a_fingerprint_that_leaves_out_a_fact_is_caught(monkeypatch):
    """The oracle above can fail: leave the umask out of the fingerprint and the batched
    results differ from evaluating alone."""
    with open(FIXTURES[0]) as f:
        snap = _multiply(json.load(f))
    real = batch.fingerprint

    def careless(proc):
        return real({k: v for k, v in proc.items() if k != "umask"})

    monkeypatch.setattr(batch, "fingerprint", careless)
    pids = [p["pid"] for p in snap["processes"]]
    assert gates.evaluate_targets(snap, pids) != _alone(snap, pids)


def test_sentinel_digits_in_hostile_facts(monkeypatch):
    """A sentinel pid that occurs in the facts (a comm or cwd made of its digits) is not used;
    with every sentinel taken, each process is evaluated alone -- same results either way."""
    with open(FIXTURES[0]) as f:
        base = json.load(f)
    first = batch.pick_sentinels("")[0]
    for taken in ([first], None):
        snap = _multiply(base, copies=2)
        if taken is None:
            monkeypatch.setattr(batch, "pick_sentinels", lambda text, n=1: (_ for _ in ()).throw(ValueError()))
        for p in snap["processes"]:
            p["comm"] = f"x{first}"
            p["cwd"] = f"/tmp/{first}"
        pids = [p["pid"] for p in snap["processes"]]
        assert gates.evaluate_targets(snap, pids) == _alone(snap, pids)


def test_pid_one_and_malformed_entries_alone():
    assert batch.fingerprint({"pid": 1, "comm": "init"}) is None
    assert batch.fingerprint({"pid": True}) is None
    assert batch.fingerprint({"pid": 5, "x": object()}) is None  # not a snapshot value
    a = batch.fingerprint({"pid": 5, "nspid": [5], "mem": {"rss": 1, "anon": 4, "shmem": 0}})
    b = batch.fingerprint({"pid": 6, "nspid": [6], "mem": {"rss": 2, "anon": 4, "shmem": 0}})
    c = batch.fingerprint({"pid": 6, "nspid": [6, 1], "mem": {"rss": 2, "anon": 4, "shmem": 0}})
    assert a == b and a != c
    assert batch.fingerprint({"pid": 5, "umask": 18}) != batch.fingerprint({"pid": 5, "umask": 63})


def test_disable_batch(monkeypatch):
    with open(FIXTURES[0]) as f:
        snap = _multiply(json.load(f), copies=1)
    pids = [p["pid"] for p in snap["processes"]]
    calls = []
    real = evaluator.evaluate
    monkeypatch.setattr(evaluator, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    gates.evaluate_targets(snap, pids)
    batched = len(calls)
    snap["kernel"]["disabled"] = ["batch"]  # what a snapshot taken with COREDOCTOR_DISABLE=batch records
    calls.clear()
    gates.evaluate_targets(snap, pids)
    assert len(calls) == len(pids) > batched
