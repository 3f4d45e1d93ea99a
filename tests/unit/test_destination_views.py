"""snapshot._destination_facts with a specifier-free core_pattern works each view out once per
(dumpable value, root, cwd) (snapshot.take's *static* cache): the destination facts and the
walked directories are exactly those worked out process by process, for absolute and relative
patterns, processes in distinct roots and cwds, and core_uses_pid."""
import copy
import json
import os

import pytest

import coredoctor.snapshot as S

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(os.path.dirname(HERE), "fixtures", "dropped-suid0.json")


def _snap(pattern, uses_pid=0):
    snap = json.load(open(FIXTURE))
    snap["sysctl"]["kernel.core_pattern"] = pattern
    snap["sysctl"]["kernel.core_uses_pid"] = uses_pid
    procs = []
    base = snap["processes"][0]
    for i in range(12):  # three roots x two cwds x two copies
        p = copy.deepcopy(base)
        p["pid"] = 900001 + i  # no such process: every walk says the directory is not there
        p["nspid"] = [p["pid"]]
        p["root_id"] = f"8:{i % 3}"
        p["cwd_id"] = f"9:{i % 2}"
        p["cwd"] = f"/srv/w{i % 2}"
        procs.append(p)
    snap["processes"] = procs
    return snap


@pytest.mark.parametrize("pattern,uses_pid", [("core", 0), ("/var/crash/core", 0), ("crash/core", 0),
                                              ("core", 1)])
def test_static_views_equal_views_process_by_process(pattern, uses_pid):
    one, each = _snap(pattern, uses_pid), _snap(pattern, uses_pid)
    for s in (one, each):
        s["paths"] = {}
    static = {} if not uses_pid else None  # what take() passes: None once .PID is appended
    f1, f2 = {}, {}
    for a, b in zip(one["processes"], each["processes"]):
        S._destination_facts(one, a, 11, f1, static)
        S._destination_facts(each, b, 11, f2, None)
    assert [p["dest"] for p in one["processes"]] == [p["dest"] for p in each["processes"]]
    assert one["paths"] == each["paths"]
    keys = {e["key"] for p in each["processes"] for e in p["dest"].values()}
    assert len(keys) >= 2  # processes in different directories got different views
