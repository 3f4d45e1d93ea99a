"""The metrics layer's pure parts: exposition text, label escaping, crash counting across runs,
container names from cgroup paths, the state file and the atomic textfile."""

import json
import os
import re

import pytest

from coredoctor import metrics as M

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]\w*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? -?[0-9.e+]+$')


def _fams(targets=(), units=None, state=None):
    return M.families(list(targets), units or {}, state or {}, "9.9", "6.18.0", 100.0, 100.25)


def test_every_family_has_help_and_type_and_no_timestamps():
    t = [{"pid": 10, "dumps": False, "blocking_gate": "rlimit-core"},
         {"pid": 11, "dumps": True, "blocking_gate": None},
         {"pid": 12, "dumps": None, "blocking_gate": "dumpable"}]
    text = M.render(_fams(t, {10: ("a.service", ""), 11: ("a.service", ""), 12: ("", "0123456789ab")}))
    names = [f[0] for f in M.FAMILIES]
    for n in names:
        assert text.count(f"# HELP {n} ") == 1 and text.count(f"# TYPE {n} ") == 1
    for line in text.splitlines():
        if not line.startswith("#"):
            assert SAMPLE.match(line), line
    assert 'coredoctor_processes{gate="rlimit-core",verdict="no_core"} 1' in text
    assert 'coredoctor_processes{gate="none",verdict="core"} 1' in text
    assert 'coredoctor_processes{gate="dumpable",verdict="undecided"} 1' in text
    # a unit is 1 only when every one of its processes would dump
    assert 'coredoctor_target_would_dump{container="",unit="a.service"} 0' in text
    assert 'coredoctor_target_would_dump{container="0123456789ab",unit=""} 0' in text
    assert "coredoctor_run_duration_seconds 0.25" in text
    assert 'coredoctor_info{kernel="6.18.0",version="9.9"} 1' in text
    assert "pid" not in text.replace("dumpability", "")


def test_hostile_label_values_stay_one_valid_line():
    evil = 'x"} 1\ncoredoctor_info{a="b\\' + "\udcff" + "é" * 300
    text = M.render(_fams([{"pid": 1, "dumps": False, "blocking_gate": "rlimit-core"}], {1: (evil, "")}))
    lines = [ln for ln in text.splitlines() if ln.startswith("coredoctor_target_would_dump")]
    assert len(lines) == 1 and SAMPLE.match(lines[0]), lines
    text.encode("utf-8")  # valid UTF-8: the undecodable byte is text now
    assert "\\\\xff" in lines[0] or "\\\\udcff" in lines[0]
    assert len(lines[0]) < M.MAX_LABEL + 100


def _crash(t, pid, core="missing", gate="rlimit-core", comm="d"):
    return {"time": t, "pid": pid, "comm": comm, "signo": 11, "core": {"status": core},
            "likely_reason": {"gate": gate} if gate else None}


def test_crashes_are_counted_once_across_runs_with_jittering_times():
    st = M.count_crashes({}, [_crash(1000.0, 5), _crash(1000.0, 6, "present", None)])
    assert st["crashes"] == {"missing|rlimit-core": 1, "present|unknown": 1}
    # the next run reads the same crashes, their times a little off (kernel log), and a new one
    st2 = M.count_crashes(json.loads(json.dumps(st)),
                          [_crash(1000.9, 5), _crash(999.2, 6, "present", None), _crash(2000.0, 5)])
    assert st2["crashes"] == {"missing|rlimit-core": 2, "present|unknown": 1}
    # an unknown core status is 'unknown', never a new label value
    st3 = M.count_crashes(st2, [_crash(3000.0, 7, core="bogus\n", gate=None)])
    assert st3["crashes"]["unknown|unknown"] == 1
    text = M.render(_fams(state=st3))
    assert 'coredoctor_crashes_total{core="missing",reason="rlimit-core"} 2' in text


def test_seen_is_bounded(monkeypatch):
    monkeypatch.setattr(M, "MAX_SEEN", 10)
    st = M.count_crashes({}, [_crash(float(i * 100), i) for i in range(50)])
    assert sum(len(v) for v in st["seen"].values()) == 10
    assert st["crashes"]["missing|rlimit-core"] == 50


@pytest.mark.parametrize("cg,want", [
    ("/system.slice/docker-" + "a" * 64 + ".scope", "a" * 12),
    ("/docker/" + "b" * 64, "b" * 12),
    ("/machine.slice/libpod-" + "c" * 64 + ".scope/container", "c" * 12),
    ("/machine.slice/libpod-conmon-" + "c" * 64 + ".scope", ""),
    ("/lxc.payload.web1/init.scope", "web1"),
    # podman's cgroupfs manager: no .scope (the one table of formats knows it)
    ("/libpod_parent/libpod-" + "d" * 64, "d" * 12),
    ("/machine.slice/machine-web.scope/payload", "web"),
    ("/system.slice/nginx.service", ""),
    (None, ""),
])
def test_container_of(cg, want):
    assert M.container_of(cg) == want


def test_state_file_corrupt_or_hostile_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("COREDOCTOR_STATE_DIR", str(tmp_path))
    p = tmp_path / M.STATE_FILE
    p.write_text("{not json")
    assert M.load_state() == {}
    p.write_text(json.dumps({"crashes": {"a|b": 3, "c|d": "x", "e|f": True, "g|h": -1, "i|j": 1e300},
                             "losses": [1], "seen": {"k": [1.0, "x"], "m": 5}}))
    assert M.load_state() == {"crashes": {"a|b": 3}, "seen": {"k": [1.0]}}
    M.add_loss("nginx.service")
    M.add_loss("nginx.service")
    st = M.load_state()
    assert st["losses"] == {"nginx.service": 2} and st["crashes"] == {"a|b": 3}
    assert oct(os.stat(p).st_mode & 0o777) == "0o600"


def test_textfile_is_replaced_never_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep")
    d = tmp_path / "tf"
    d.mkdir()
    os.symlink(outside, d / M.TEXTFILE_NAME)
    path = M.write_textfile(str(d), "coredoctor_info 1\n")
    assert outside.read_text() == "keep"
    assert not os.path.islink(path) and open(path).read() == "coredoctor_info 1\n"
    assert sorted(os.listdir(d)) == [M.TEXTFILE_NAME]
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
