"""Snapshot validation: every recorded fixture passes; every kind of corruption is one
SnapshotError naming the first bad field (never an exception from the model)."""
import copy
import glob
import json
import os

import pytest

from coredoctor.errors import SnapshotError
from coredoctor.snapshot import validate as V

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
FIXTURES = sorted(glob.glob(os.path.join(FIX, "*.json")))


def fixture(name="dropped-suid0.json"):
    with open(os.path.join(FIX, name)) as f:
        return json.load(f)


def write(tmp_path, snap_or_text):
    p = tmp_path / "host.json"
    p.write_text(snap_or_text if isinstance(snap_or_text, str) else json.dumps(snap_or_text))
    return str(p)


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_recorded_fixtures_pass(path):
    assert V.load(path)["schema"] == V.SCHEMA


def _target_index(snap):
    return next(i for i, p in enumerate(snap["processes"]) if p["pid"] == snap["targets"][0])


def _set(snap, path, value):
    o = snap
    for k in path[:-1]:
        o = o[k]
    if value is KeyError:
        del o[path[-1]]
    else:
        o[path[-1]] = value


# (what to change, the field the error must name first, words of the reason)
CASES = [
    (("processes", "T", "creds", "uid", 0), "x", "processes[T].creds.uid[0]",
     'expected an integer 0..4294967295, got "x"'),
    (("processes", "T", "creds", "uid"), [0, 0], "processes[T].creds.uid", "expected 4..4 entries, got 2"),
    (("processes", "T", "pid"), -5, "processes[T].pid", "expected an integer 1..4194304, got -5"),
    (("processes", "T", "pid"), 2 ** 64 - 1, "processes[T].pid", "got 18446744073709551615"),
    (("processes", "T", "mem"), "x", "processes[T].mem", "expected an object or null"),
    (("processes", "T", "exe_stat"), "x", "processes[T].exe_stat", "expected an object or null"),
    (("processes", "T", "exe"), 1, "processes[T].exe", "expected a string or null, got 1"),
    (("processes", "T", "comm"), ["x"], "processes[T].comm", "got a list"),
    (("processes", "T", "sig", "blocked"), "zz", "processes[T].sig.blocked", "expected a hex string"),
    (("processes", "T", "dumpable", "candidates"), [], "processes[T].dumpable.candidates", "got 0"),
    (("processes", "T", "dumpable", "value"), 7, "processes[T].dumpable.value", "0..2"),
    (("processes", "T", "limits"), KeyError, "processes[T].limits", "missing"),
    (("processes", "T", "dest"), "x", "processes[T].dest", "expected an object"),
    (("processes", "T", "dest", "2", "key"), "nowhere", "processes[T].dest.2.key", "not a key of paths"),
    (("paths",), "x", "paths", "expected an object or null"),
    (("paths", "init:/var/crash"), "x", 'paths["init:/var/crash"]', "expected an object"),
    (("paths", "init:/var/crash", "fs"), {"a": 1}, 'paths["init:/var/crash"].fs.bfree', "missing"),
    (("handler",), "x", "handler", "expected an object or null"),
    (("kernel", "hostname"), 1, "kernel.hostname", "expected a string or null"),
    (("kernel", "release"), KeyError, "kernel.release", "missing"),
    (("kernel", "signals", "SIGSEGV"), 10 ** 19, "kernel.signals.SIGSEGV", "1..128"),
    (("sysctl", "kernel.core_pattern"), 5, 'sysctl["kernel.core_pattern"]', "expected a string"),
    (("sysctl", "fs.suid_dumpable"), 3, 'sysctl["fs.suid_dumpable"]', "0..2"),
    (("targets",), [999999], "targets[0]", "has no process entry"),
]


@pytest.mark.parametrize("path,value,where,why", CASES, ids=[c[2] + ":" + str(c[1])[:12] for c in CASES])
def test_first_bad_field_named(tmp_path, path, value, where, why):
    snap = fixture()
    t = _target_index(snap)
    path = tuple(t if k == "T" else k for k in path)
    _set(snap, path, copy.deepcopy(value))
    with pytest.raises(SnapshotError) as e:
        V.load(write(tmp_path, snap))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{tmp_path}/host.json: {where.replace('[T]', f'[{t}]')}: "), msg
    assert why in msg and msg.endswith("(corrupt snapshot)"), msg


def test_depth_bounded_in_unknown_fields_too():
    """A field this version does not read is kept, but bounded (the parser's depth check
    aside: validate() is also called on objects built in memory)."""
    snap = fixture()
    deep = 1
    for _ in range(40):
        deep = [deep]
    snap["processes"][0]["some_new_field"] = deep
    with pytest.raises(V.Bad) as e:
        V.validate(snap)
    assert e.value.where.startswith("processes[0].some_new_field[0][0]")
    assert "nested deeper than 32 levels" in str(e.value)
    snap["processes"][0]["some_new_field"] = {"kept": [1, "x", None]}
    V.validate(snap)


def test_duplicate_pid(tmp_path):
    snap = fixture()
    snap["processes"].append(copy.deepcopy(snap["processes"][0]))
    with pytest.raises(SnapshotError, match=r"processes\[7\]\.pid: pid 1 appears twice"):
        V.load(write(tmp_path, snap))


def test_super_options_ids(tmp_path):
    snap = fixture()
    snap["paths"]["init:/var/crash"]["fs"] = {"bfree": 1, "bavail": 1, "super_options": "rw,resuid=" + "9" * 40}
    with pytest.raises(SnapshotError, match=r"super_options: resuid= must be a decimal id"):
        V.load(write(tmp_path, snap))


@pytest.mark.parametrize("text,why", [
    ("[1, 2]", "not a coredoctor snapshot"),
    ("{not json", "not valid JSON"),
    ('{"schema": "coredoctor.snapshot/1", "x": ' + "[" * 100000 + "]" * 100000 + "}", "nested deeper than 32"),
    ('{"schema": "coredoctor.snapshot/1", "x": ' + "9" * 4400 + "}", "an integer of 4400 digits"),
    ('{"schema": "coredoctor.snapshot/1", "x": NaN}', "NaN is not JSON"),
    ('{"schema": "coredoctor.snapshot/1", "x": 1e999}', "not a finite number"),
    ('{"schema": "coredoctor.snapshot/2"}', "not a coredoctor snapshot"),
    ('{"schema": "coredoctor.snapshot/1"}', "kernel: missing"),
])
def test_unparseable(tmp_path, text, why):
    with pytest.raises(SnapshotError) as e:
        V.load(write(tmp_path, text))
    assert why in str(e.value) and "\n" not in str(e.value)


def test_brackets_inside_strings_are_not_nesting():
    assert V.nesting_depth('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"[[[[[", "b": [[1]]}') == 3


def test_not_utf8(tmp_path):
    p = tmp_path / "s.json"
    p.write_bytes(b'{"schema": "\xff"}')
    with pytest.raises(SnapshotError, match="not UTF-8 at byte 12"):
        V.load(str(p))


def test_too_big_is_refused_before_reading(tmp_path):
    p = tmp_path / "big.json"
    with open(p, "wb") as f:
        f.truncate(100 << 20)  # 100 MB, sparse: refused from its size
    with pytest.raises(SnapshotError, match=r"104857600 bytes, larger than a snapshot can be \(67108864"):
        V.load(str(p))


def test_too_big_on_a_pipe(tmp_path, monkeypatch):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a writer that would go on for ever: the read stops at the limit
        os.close(r)
        try:
            while True:
                os.write(w, b" " * 65536)
        except OSError:
            os._exit(0)
    os.close(w)
    try:
        saved = os.dup(0)
        os.dup2(r, 0)
        try:
            with pytest.raises(SnapshotError, match="larger than a snapshot can be"):
                V.load("-")
        finally:
            os.dup2(saved, 0)
            os.close(saved)
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def test_lone_surrogate_in_comm_is_a_valid_snapshot(tmp_path):
    """Undecodable bytes in a name are data (surrogateescape), not corruption: the text
    renderer escapes them."""
    snap = fixture()
    snap["processes"][_target_index(snap)]["comm"] = "py\udcff\x1b[2J"
    assert V.load(write(tmp_path, snap))["processes"][_target_index(snap)]["comm"] == "py\udcff\x1b[2J"


def test_every_row_is_reachable():
    """Each row's parent is a row (an object, map or list), so no row is dead text."""
    for path in V.FIELDS:
        if not path:
            continue
        if path.endswith("[]"):
            parent = path[:-2]
            assert "list" in V.FIELDS[parent].kind, path
        else:
            parents = [p for p in V.FIELDS if p and path.startswith(p + ".") or p == "" and "." not in path]
            assert parents, path
