"""Conformance of the one model: the gate table is the kernel's order, every gate id any module
emits is a gate, every remedy record is one fix can apply (or report) and roll back, and for every
recorded state check's remedies are exactly fix's plan."""
import ast
import copy
import glob
import json
import os
import resource
import subprocess
import sys

import pytest

from coredoctor.fix import actions, journal, plan as fplan
from coredoctor.history import daemonlog, kmsg
from coredoctor.kernel import gates, reasons, remedies as R, table

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src", "coredoctor")
FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(HERE), "fixtures", "*.json")))


# --------------------------------------------------------------------------- the table


def test_gates_in_kernel_order_with_branch_blocking_and_source():
    orders = [g.order for g in gates.GATES]
    assert orders == sorted(orders) and len(set(orders)) == len(orders), orders
    assert len(set(gates.GATE_IDS)) == len(gates.GATE_IDS)
    for g in gates.GATES:
        assert g.branch in table.BRANCHES, g
        assert isinstance(g.blocking, bool), g
        assert g.kernel_ref and g.title and callable(g.predicate), g
    # what the kernel stops at vs what only damages the core
    assert [g.id for g in gates.GATES if not g.blocking] == ["rlimit-fsize", "coredump-filter"]


def test_evaluator_reads_branch_from_the_table(monkeypatch):
    """A gate off its branch is not evaluated at all: move core-dir to the pipe branch and it
    disappears from a file-mode verdict."""
    snap = json.load(open(os.path.join(os.path.dirname(HERE), "fixtures", "dropped-suid0.json")))
    for p in snap["processes"]:
        p["dumpable"] = {"value": 1, "candidates": [1], "source": "pidfd", "evidence": "test"}
    assert "core-dir" in [g["id"] for g in _evaluate_all(snap, 1)[0]["gates"]]
    core_dir = next(g for g in gates.GATES if g.id == "core-dir")
    monkeypatch.setattr(core_dir, "branch", "pipe")
    assert "core-dir" not in [g["id"] for g in _evaluate_all(snap, 1)[0]["gates"]]


def test_evaluator_reads_blocking_from_the_table(monkeypatch):
    """dumpable blocks: the gates after it are not reached. Made non-blocking, they are."""
    snap = json.load(open(os.path.join(os.path.dirname(HERE), "fixtures", "dropped-suid0.json")))
    ids = [g["id"] for g in _targets(snap)[0]["gates"]]
    assert ids[-1] == "dumpable"
    monkeypatch.setattr(next(g for g in gates.GATES if g.id == "dumpable"), "blocking", False)
    ids = [g["id"] for g in _targets(snap)[0]["gates"]]
    assert ids.index("dumpable") < len(ids) - 1


# --------------------------------------------------------------------------- gate ids emitted


def _literal_gate_ids():
    """(file, value) for every string literal given to a key or keyword named gate/blocking_gate
    anywhere in src/ -- the gate ids modules emit by hand."""
    out = []
    for path in glob.glob(os.path.join(SRC, "**", "*.py"), recursive=True):
        tree = ast.parse(open(path).read(), path)
        for node in ast.walk(tree):
            pairs = []
            if isinstance(node, ast.Dict):
                pairs = zip(node.keys, node.values)
            elif isinstance(node, ast.Call):
                pairs = ((ast.Constant(kw.arg), kw.value) for kw in node.keywords if kw.arg)
            elif isinstance(node, ast.Assign):  # e["gate"] = "space"
                pairs = ((t.slice, node.value) for t in node.targets if isinstance(t, ast.Subscript))
            elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Subscript):  # e["gate"] == "..."
                pairs = ((node.left.slice, c) for c in node.comparators)
            for k, v in pairs:
                if isinstance(k, ast.Constant) and k.value in ("gate", "blocking_gate", "undecided_by") \
                        and isinstance(v, ast.Constant) and isinstance(v.value, str):
                    out.append((os.path.relpath(path, SRC), v.value))
    return out


def test_every_emitted_gate_id_is_a_gate():
    found = _literal_gate_ids()
    files = {f for f, _ in found}
    # the scan sees the emitters: the kernel-log and daemon-log tables, the report, the reclassification
    assert {"history/kmsg.py", "history/report.py", "history/daemonlog.py"} <= files, files
    assert ("history/daemonlog.py", "space") in found
    bad = [(f, v) for f, v in found if v not in gates.GATE_IDS]
    assert not bad, bad
    for p in list(kmsg.PATTERNS) + list(daemonlog.PATTERNS):  # the log tables, row by row
        assert p.gate is None or p.gate in gates.GATE_IDS, (p.event, p.gate)
    assert {p.gate for p in kmsg.PATTERNS if p.gate} >= {"suid-path", "rlimit-core", "pipe-handler", "core-file"}


def test_reason_records_name_gates_and_known_clauses():
    for snap in _states():
        for t in _targets(snap):
            for r in t["reasons"]:
                assert r["gate"] in gates.GATE_IDS and r["clause"] in reasons.CLAUSES, r
            assert t["verdict"] == reasons.verdict(t)
            json.dumps(t)  # records are plain data


# --------------------------------------------------------------------------- check == fix


def _evaluate_all(snap, n=None):
    return gates.evaluate_targets(snap, snap["targets"][:n] if n else snap["targets"])


def _targets(snap):
    return _evaluate_all(snap)


def _states():
    """Every recorded snapshot, and each in the states the crash lab puts processes in."""
    for f in FIXTURES:
        base = json.load(open(f))
        yield base
        for pat in ("core", "core.%p", "/var/crash/core.%e.%p", "/nope/core", "|/nonexist %p", "|/bin/false"):
            s = copy.deepcopy(base)
            s["sysctl"]["kernel.core_pattern"] = pat
            yield s
        for sd in (1, 2):
            s = copy.deepcopy(base)
            s["sysctl"]["fs.suid_dumpable"] = sd
            yield s
        for change in ({"limits": {"core": [0, None], "fsize": [0, None]}}, {"umask": 0o277},
                       {"coredump_filter": "0x0"}, {"limits": {"core": [4096, None]}, "unit": "x.service"},
                       {"dumpable": {"value": None, "candidates": [0, 2], "source": "proc-owner", "evidence": "?"}}):
            s = copy.deepcopy(base)
            for p in s["processes"]:
                p.update(copy.deepcopy(change))
            yield s


def _key(a):
    return json.dumps(a, sort_keys=True)


def test_check_remedies_are_fix_plan_records():
    """For every state: the records fix plans are check's records -- the same dicts, merged
    (one per identity) and nothing else; the sysctl.d file is the one record merged from several."""
    n = 0
    for snap in _states():
        for t in _targets(snap):
            records = [a for f in t["fixes"] for a in f["actions"]]
            for f in t["fixes"]:
                assert f["commands"] == [c for a in f["actions"] for c in R.commands(a)]
                for a in f["actions"]:
                    assert a["kind"] in R.KINDS and {"why", "risk", "needs_restart"} <= set(a), a
            p = fplan.plan(snap, t)
            planned = p["actions"] + p["reported"]
            assert [a for a in planned if a["kind"] not in R.KINDS] == []
            check_keys = {_key(a) for a in records}
            for a in planned:
                if a["kind"] == "file" and a["path"] == R.SYSCTL_FILE:
                    wanted = {}
                    for b in records:
                        if b["kind"] == "file" and b["path"] == R.SYSCTL_FILE:
                            wanted.update(R.persisted(b["content"]))
                    assert R.persisted(a["content"]) == wanted
                else:
                    assert _key(a) in check_keys, (a, records)
            # nothing of check's is lost, except the refused combination
            planned_ids = {R.identity(a) for a in planned}
            for a in records:
                refused = a["kind"] == "sysctl" and a["key"] == "fs.suid_dumpable" and p["refused"]
                assert R.identity(a) in planned_ids or refused, (a, planned)
            assert [a["kind"] for a in planned] == [a["kind"] for a in sorted(planned, key=R.order_key)]
            n += 1
    assert n >= 14 * len(FIXTURES)


def test_multi_target_plan_merges_and_keeps_every_restart():
    snap = json.load(open(os.path.join(os.path.dirname(HERE), "fixtures", "dropped-suid0.json")))
    p0 = next(p for p in snap["processes"] if p["pid"] == snap["targets"][0])
    twin = dict(copy.deepcopy(p0), pid=p0["pid"] + 100000, comm="twin")
    snap["processes"].append(twin)
    snap["targets"] = [p0["pid"], twin["pid"]]
    ts = _targets(snap)
    p = fplan.plan_targets(snap, ts)
    assert [r["pid"] for r in p["needs_restart"]] == [p0["pid"], twin["pid"]]
    assert len([a for a in p["actions"] if a["kind"] == "sysctl"]) == 1
    assert len({R.identity(a) for a in p["actions"]}) == len(p["actions"])


def test_plan_leaves_out_what_is_in_place():
    snap = json.load(open(os.path.join(os.path.dirname(HERE), "fixtures", "dropped-suid0.json")))
    t = _targets(snap)[0]
    p = fplan.plan(snap, t)
    content = next(a["content"] for a in p["actions"] if a["kind"] == "file")
    snap["sysctl"]["fs.suid_dumpable"] = 2
    snap["own_files"] = {R.SYSCTL_FILE: content}
    snap["own_dirs"] = {"/var/crash": True}
    t2 = _targets(snap)[0]
    assert fplan.plan(snap, t2)["actions"] == []
    # the check of the same state shows only what is left: the restart
    assert [a["kind"] for f in t2["fixes"] for a in f["actions"]] == ["restart"]


# --------------------------------------------------------------------------- apply and roll back


@pytest.fixture
def private_journal(tmp_path, monkeypatch):
    monkeypatch.setattr(journal, "JOURNAL_DIR", str(tmp_path / "journal"))
    return tmp_path


def test_every_kind_is_applied_or_reported_and_rolled_back(private_journal, monkeypatch):
    """A real apply and rollback of each kind fix knows, in a temporary tree and on a child
    process of the test (the sysctl kind on the real host: tests/crashlab/test_fix_kinds.py)."""
    monkeypatch.setattr(actions, "_systemd_running", lambda: False)  # no daemon-reload from a unit test
    root = private_journal / "root"
    root.mkdir()
    kept = root / "kept.conf"
    kept.write_bytes(b"old bytes\n")
    kept.chmod(0o640)
    own = root / "daemon.cfg"   # a daemon's own config file: one line added, then the old bytes back
    own.write_bytes(b"global\n\tuser x\n# \xff not utf-8\n")
    own.chmod(0o600)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        before = resource.prlimit(child.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(child.pid, resource.RLIMIT_FSIZE, (4096, before[1]))
        proc = {"pid": child.pid, "comm": "sleeper", "unit": None}
        recs = [R.mkdir(str(root / "cores"), "1777", "t"),
                R.file(str(root / "new" / "f.conf"), "a = 1\n", "t"),
                R.file(str(kept), "b = 2\n", "t"),
                dict(R.dropin("cd-test.service", "core", ["[Service]", "LimitCORE=infinity"], "t"),
                     path=str(root / "sd" / "cd-test.service.d" / "90-coredoctor-core.conf")),
                R.prlimit(child.pid, "fsize", "t", [before[0] if before[0] != resource.RLIM_INFINITY else None,
                                                    before[1] if before[1] != resource.RLIM_INFINITY else None]),
                R.restart(proc, "t"), R.manual("do it", "t", ["# x"]), R.daemon_option("d", "opt", "t"),
                R.config_line("d", str(own), "set-dumpable", "t", section="global")]
        covered = {a["kind"] for a in recs}
        assert covered == set(R.KINDS) - {"sysctl"}
        plan = {"actions": [a for a in recs if a["kind"] in R.APPLIED_KINDS + R.DAEMON_KINDS],
                "reported": [a for a in recs if a["kind"] in R.REPORTED_KINDS],
                "needs_restart": [], "security": [], "warnings": [], "manual": []}
        entry = actions.apply("t-1", [{"pid": child.pid, "comm": "a", "exe": None, "unit": None},
                                      {"pid": os.getpid(), "comm": "b", "exe": None, "unit": None}], plan)
        assert [t["pid"] for t in entry["targets"]] == [child.pid, os.getpid()]
        assert entry["target"]["pid"] == child.pid  # the field older readers know
        assert (root / "cores").is_dir() and oct((root / "cores").stat().st_mode & 0o7777) == "0o1777"
        assert (root / "new" / "f.conf").read_text() == "a = 1\n" and kept.read_text() == "b = 2\n"
        assert (root / "sd" / "cd-test.service.d" / "90-coredoctor-core.conf").read_text() == \
            "[Service]\nLimitCORE=infinity\n"
        assert resource.prlimit(child.pid, resource.RLIMIT_FSIZE) == before
        assert own.read_bytes() == b"global\n\tset-dumpable\n\tuser x\n# \xff not utf-8\n"
        assert oct(own.stat().st_mode & 0o777) == "0o600"
        done = {r["action"]["kind"]: r for r in entry["actions"]}
        assert all(done[k]["done"] for k in R.APPLIED_KINDS + R.DAEMON_KINDS if k != "sysctl")
        assert all(done[k].get("reported") and not done[k]["done"] for k in R.REPORTED_KINDS)
        stored = journal.load("t-1")
        assert len(stored["actions"]) == len(recs) and len(stored["targets"]) == 2

        notes = actions.rollback_entry(journal.load("t-1"))
        assert notes == []
        assert not (root / "cores").exists() and not (root / "new").exists() and not (root / "sd").exists()
        assert kept.read_bytes() == b"old bytes\n" and oct(kept.stat().st_mode & 0o777) == "0o640"
        assert own.read_bytes() == b"global\n\tuser x\n# \xff not utf-8\n" and own.stat().st_mode & 0o777 == 0o600
        assert resource.prlimit(child.pid, resource.RLIMIT_FSIZE) == (4096, before[1])
        for a in recs:
            assert actions.describe(a) != a["kind"]
    finally:
        child.kill()
        child.wait()


def test_old_journal_entries_still_roll_back(private_journal):
    """An entry written before drop-ins were their own kind: a file record with an 'after'."""
    path = private_journal / "x.d" / "90-coredoctor-core.conf"
    entry = {"id": "old-1", "state": "applied", "target": {"pid": 1, "comm": "x"},
             "actions": [{"action": {"kind": "file", "path": str(path), "content": "x\n", "mode": "0644",
                                     "why": "w"}, "prior": {"existed": False, "created_dirs": [str(path.parent)]},
                          "done": True}]}
    path.parent.mkdir()
    path.write_text("x\n")
    journal.save(entry)
    assert actions.entry_targets(journal.load("old-1")) == [{"pid": 1, "comm": "x"}]
    assert actions.rollback_entry(journal.load("old-1")) == []
    assert not path.parent.exists()


def test_sysctl_file_of_an_earlier_version_is_in_place_as_it_is():
    facts = {"sysctl": {"fs.suid_dumpable": 2}, "files": {
        R.SYSCTL_FILE: R.SYSCTL_HEADER + "\nfs.suid_dumpable = 2\n"}}
    a = R.sysctl_persist({"fs.suid_dumpable": "2"}, facts)
    assert R.settled(a, facts)
    fresh = R.sysctl_persist({"fs.suid_dumpable": "2"}, {"sysctl": {}, "files": {}})
    assert fresh["content"] == "fs.suid_dumpable = 2\n"
    assert R.commands(fresh) == ["printf '%s\\n' 'fs.suid_dumpable = 2' > /etc/sysctl.d/90-coredoctor.conf"]
