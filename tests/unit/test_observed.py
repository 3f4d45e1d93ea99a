"""The evaluator's ``observed`` input, gate by gate (pure): a recorded snapshot, changed into the
state under test, evaluated without and with what was seen of a real crash or delivery. Each
settled gate says ``observed:``; where the snapshot's model disagrees, the result keeps both."""
import copy
import json
import os

from coredoctor.history import report
from coredoctor.kernel import evaluator, observed as O
from coredoctor.kernel.table import GATE_IDS

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAP = json.load(open(os.path.join(HERE, "fixtures", "dropped-suid0.json")))
PID = SNAP["targets"][0]
DUMPABLE_1 = {"value": 1, "candidates": [1], "source": "pidfd", "evidence": "test: dumpable 1"}


def _state(sysctl=None, **change):
    """The recorded snapshot with /var/crash present (sticky, world-writable, 10 GB free) as the
    host root and the process's root see it, and *change* applied to the process."""
    s = copy.deepcopy(SNAP)
    s["sysctl"].update(sysctl or {})
    p = next(p for p in s["processes"] if p["pid"] == PID)
    walk = [{"mode": 0o40755, "uid": 0, "gid": 0, "path": "/"}, {"mode": 0o40755, "uid": 0, "gid": 0, "path": "/var"},
            {"mode": 0o41777, "uid": 0, "gid": 0, "path": "/var/crash"}]
    fs = {"bfree": 10 << 30, "bavail": 10 << 30, "readonly": False, "super_options": ""}
    for key in ("init:/var/crash", f"root:{p['root_id']}:/var/crash"):
        s["paths"][key] = {"dir": "/var/crash", "walk": walk, "exists": True, "fs": fs}
    p.update(copy.deepcopy(change))
    return s, p


def _eval(snap, proc, signal="SIGSEGV", observed=None):
    procs = {p["pid"]: p for p in snap["processes"]}
    return evaluator.evaluate(snap, proc, procs.get(proc.get("ppid")), signal, None, procs, observed=observed)


def _gate(t, gid):
    return next(g for g in t["gates"] if g["id"] == gid)


def test_the_delivered_signal_settles_the_signal_gate_without_editing_the_snapshot():
    # SIGSEGV caught by a handler, and the process traced: the snapshot alone cannot tell
    snap, p = _state(dumpable=DUMPABLE_1, tracer_pid=4242,
                     sig={"blocked": "0000000000000400", "ignored": "0", "caught": "0000000000000400"})
    before = copy.deepcopy(p)
    t = _eval(snap, p)
    assert _gate(t, "signal")["status"] == "unknown" and t["dumps"] is not True
    t = _eval(snap, p, observed=O.Observed(signal="SIGSEGV"))
    g = _gate(t, "signal")
    assert g["status"] == "pass" and g["evidence"].startswith("observed: the kernel delivered SIGSEGV")
    assert g["model_status"] == "unknown" and "traced by pid 4242" in g["evidence"]  # both answers kept
    assert p == before  # the snapshot is not edited
    assert t["observed"]["signal"] == "SIGSEGV"
    # a signal whose default action never dumps stays failed, delivered or not
    t = _eval(snap, p, "SIGTERM", observed=O.Observed(signal="SIGTERM"))
    assert _gate(t, "signal")["status"] == "fail" and t["blocking_gate"] == "signal"


def test_a_core_cut_at_rlimit_core_is_the_rlimit_core_gate():
    snap, p = _state(dumpable=DUMPABLE_1, limits={"core": [262144, None], "fsize": [None, None]})
    cut = O.Observed(signal="SIGSEGV", core_status="truncated", core_size=258048, expected_size=9_000_000)
    t = _eval(snap, p, observed=cut)
    g = _gate(t, "rlimit-core")
    assert (t["dumps"], t["blocking_gate"], g["status"]) == (False, "rlimit-core", "fail")
    assert g["evidence"].startswith("observed: the core was cut at 258048 bytes of 9000000") and "262144" in g["evidence"]
    assert any("prlimit" in c for f in t["fixes"] for c in f["commands"])
    # the same core under a higher limit was not cut by RLIMIT_CORE: the model's answer stands,
    # and with no limit near the cut, space is left (ENOSPC)
    snap, p = _state(dumpable=DUMPABLE_1, limits={"core": [1 << 30, None], "fsize": [None, None]})
    t = _eval(snap, p, observed=cut)
    assert _gate(t, "rlimit-core")["status"] != "fail"
    assert (t["blocking_gate"], _gate(t, "space")["status"]) == ("space", "fail")
    assert "at neither RLIMIT_CORE nor RLIMIT_FSIZE" in _gate(t, "space")["evidence"]


def test_a_core_cut_at_rlimit_fsize_is_the_rlimit_fsize_gate():
    snap, p = _state(dumpable=DUMPABLE_1, limits={"core": [None, None], "fsize": [262144, None]})
    t = _eval(snap, p, observed=O.Observed(core_status="truncated", core_size=262144, expected_size=9_000_000))
    g = _gate(t, "rlimit-fsize")
    assert (t["dumps"], t["blocking_gate"], g["status"]) == (False, "rlimit-fsize", "fail")
    assert "at RLIMIT_FSIZE soft 262144" in g["evidence"] and g["model_status"] == "warn"


def test_an_empty_core_goes_to_the_gate_that_leaves_one():
    empty = O.Observed(core_status="empty", core_size=0, core_path="/var/crash/core.x.1")
    # the umask: core-file's mode check after the open
    snap, p = _state(dumpable=DUMPABLE_1, umask=0o277)
    t = _eval(snap, p, observed=empty)
    assert t["blocking_gate"] == "core-file" and _gate(t, "core-file")["evidence"].startswith("observed: an empty core")
    # RLIMIT_FSIZE 0: not space
    snap, p = _state(dumpable=DUMPABLE_1, limits={"core": [None, None], "fsize": [0, None]})
    t = _eval(snap, p, observed=empty)
    assert t["blocking_gate"] == "rlimit-fsize" and _gate(t, "rlimit-fsize")["evidence"].startswith("observed:")
    assert all(g["id"] != "space" or g["status"] != "fail" for g in t["gates"])
    # neither: space, whatever the free space is now
    snap, p = _state(dumpable=DUMPABLE_1)
    assert _eval(snap, p)["dumps"] is not False
    t = _eval(snap, p, observed=empty)
    g = _gate(t, "space")
    assert (t["blocking_gate"], g["status"]) == ("space", "fail") and "ENOSPC" in g["evidence"]


def test_a_refusal_line_fails_its_gate_and_the_gates_before_it_were_passed():
    # the model says dumpable 0 stops it; the kernel's own line says it went on to rlimit-core
    snap, p = _state()
    assert _eval(snap, p)["blocking_gate"] == "dumpable"
    line = "Core dump to |/x pipe failed: RLIMIT_CORE is set to 1, aborting core"
    t = _eval(snap, p, observed=O.Observed(refusal=O.Refusal("rlimit-core", "kmsg", line)))
    assert (t["dumps"], t["blocking_gate"]) == (False, "rlimit-core")
    r = _gate(t, "rlimit-core")
    assert r["evidence"].startswith(f"observed: kmsg logged: {line}; the model of the snapshot said: pass -- ")
    assert r["model_status"] == "pass"
    d = _gate(t, "dumpable")
    assert d["status"] == "pass" and d["model_status"] == "fail" and "dumpable=0" in d["evidence"]
    assert t["reasons"][0]["gate"] == "rlimit-core"
    # a refusal of a gate not on today's branch (a pipe refusal, a file pattern) is still reported
    t = _eval(snap, p, observed=O.Observed(refusal=O.Refusal("pipe-handler", "kmsg", "Core dump to |/x pipe failed")))
    assert t["blocking_gate"] == "pipe-handler" and _gate(t, "pipe-handler")["status"] == "fail"


def test_the_sysctls_of_the_crash_time_replace_the_snapshots():
    # dumpable 2 now (fs.suid_dumpable 2 at its privilege change); at the crash it was 0
    two = {"value": 2, "candidates": [2], "source": "pidfd", "evidence": "test: dumpable 2"}
    snap, p = _state({"fs.suid_dumpable": 2}, dumpable=two)
    assert _eval(snap, p)["dumps"] is True
    then = O.Observed(core_status="missing", sysctls={"fs.suid_dumpable": "0"},
                      sysctl_notes={"fs.suid_dumpable": "fix 7 changed it to 2"})
    t = _eval(snap, p, observed=then)
    g = _gate(t, "dumpable")
    assert (t["dumps"], t["blocking_gate"], g["status"], g["model_status"]) == (False, "dumpable", "fail", "pass")
    assert "fs.suid_dumpable was 0 (fix 7 changed it to 2)" in g["evidence"]
    assert snap["sysctl"]["fs.suid_dumpable"] == 2  # not edited
    # the core_pattern of then decides the destination
    t = _eval(snap, p, observed=O.Observed(sysctls={"kernel.core_pattern": "/srv/then/core.%p"}))
    assert t["core_destination"]["path"] == f"/srv/then/core.{PID}"


def test_no_core_rules_out_the_dumpable_value_that_would_have_left_one():
    both = {"value": None, "candidates": [0, 2], "source": "proc-owner", "evidence": "test: 0 or 2"}
    snap, p = _state(dumpable=both)
    assert _eval(snap, p)["dumps"] is None
    t = _eval(snap, p, observed=O.Observed(core_status="missing"))
    assert (t["dumps"], t["blocking_gate"], t["observed"]["ruled_out"]) == (False, "dumpable", [2])
    assert _gate(t, "dumpable")["evidence"].startswith("observed: no core was left, which rules out dumpable=2")
    assert t["dumpable"]["candidates"] == [0, 2]  # the facts stay what they were


def test_without_facts_an_observation_narrows_and_says_what_is_unknown():
    got = O.settled_without_facts(O.Observed(core_status="empty", core_size=0))
    assert [g["id"] for g in got] == list(O.EMPTY_GATES) and {g["status"] for g in got} == {"unknown"}
    got = O.settled_without_facts(O.Observed(core_status="truncated", core_size=5, expected_size=9))
    assert [g["id"] for g in got] == list(O.CUT_GATES)
    assert set(O.EMPTY_GATES + O.CUT_GATES) <= set(GATE_IDS)


def _crash(**kw):
    c = {"pid": 777, "comm": "cd-x", "exe": None, "signal": "SIGSEGV", "signo": 11, "time": 1.0, "refusals": [],
         "unit_result": None, "events": [], "stored": []}
    c.update(kw)
    return c


def test_likely_reason_is_the_gates_with_the_crash_observed_facts():
    snap, p = _state(dumpable=DUMPABLE_1, limits={"core": [262144, None], "fsize": [None, None]})
    core = {"status": "truncated", "path": "/var/crash/core.cd-x.777", "size": 260000, "expected_size": 9_000_000}
    env = {"instance": lambda c: {"pid": PID}, "instance_facts": lambda inst: (snap, p)}
    lr = report.likely_reason(_crash(), core, env)
    assert (lr["gate"], lr["instance"]) == ("rlimit-core", PID)
    assert "observed: the core was cut at 260000 bytes" in lr["evidence"] and lr["observed"]["core_size"] == 260000
    assert any(g["id"] == "rlimit-core" and g["status"] == "fail" for g in lr["gates"])
    assert any("prlimit" in c for c in lr["fix"])
    # no running instance: the observation narrows it, and the rest is said to be unknown
    lr = report.likely_reason(_crash(), core, {"instance": lambda c: None})
    assert lr["gate"] is None and "unknown" in lr["evidence"] and [g["id"] for g in lr["gates"]] == list(O.CUT_GATES)


def test_observed_is_an_immutable_record_with_read_only_defaults():
    """Observed and Refusal are NamedTuples (no dataclasses import at start-up): fields cannot
    be reassigned, and the shared empty sysctls of two observations cannot be written to."""
    import pytest
    a, b = O.Observed(), O.Observed(signal="SIGSEGV")
    with pytest.raises(AttributeError):
        a.signal = "SIGBUS"  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.sysctls["fs.suid_dumpable"] = "2"  # type: ignore[index]
    assert b.sysctls == {} and O.as_dict(b) == {"signal": "SIGSEGV"}
    assert O.Observed(refusal=O.Refusal("rlimit-core", "kmsg", "x")).refusal.gate == "rlimit-core"


def test_a_gate_split_by_dumpable_says_which_worlds_an_observation_settled():
    # the seed after its fix, before 6.16: the restarted instance is "0 or 2"; in world 0 the model
    # fails the gate, in world 2 what fs.suid_dumpable was at the crash does: one failing gate,
    # not "observed" as a whole, but observed in world 2 (history/report.py's fixed_by reads it)
    def r(status, ev, observed=False):
        return dict({"id": "dumpable", "status": status, "evidence": ev, "kernel_ref": "k", "fixes": []},
                    **({"observed": True, "model_status": "pass"} if observed else {}))
    merged = evaluator._merge([(0, [r("fail", "dumpable=0")]), (2, [r("fail", "observed: was 0", True)])])
    (g,) = merged
    assert (g["status"], g.get("observed"), g.get("observed_in")) == ("fail", None, [2])
    assert "model_status" not in g
    merged = evaluator._merge([(0, [r("fail", "dumpable=0", True)]), (2, [r("pass", "dumpable=2")])])
    assert (merged[0]["status"], merged[0].get("observed"), merged[0].get("observed_in")) == ("unknown", None, [0])
    same = evaluator._merge([(0, [r("fail", "x")]), (2, [r("fail", "x")])])
    assert "observed_in" not in same[0] and "observed" not in same[0]
