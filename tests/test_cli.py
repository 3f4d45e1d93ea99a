"""The command line: contracts, exit codes, and one-line errors for bad input."""
import json
import os
import subprocess
import sys
import time

import pytest

import lab as L

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="reads other processes' /proc: run as root")


def run(*args, **kw):
    return L.coredoctor(*args, **kw)


def one_line_error(r, rc=2):
    assert r.returncode == rc, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coredoctor: "), r.stderr
    return lines[0]


def test_check_from_snapshot_contract():
    r = run("check", "--from", os.path.join(FIX, "dropped-suid0.json"), "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["schema"] == "coredoctor.check/1" and doc["kernel"].startswith("6.")
    t = doc["targets"][0]
    for k in ("pid", "comm", "exe", "unit", "signal", "dumps", "blocking_gate", "core_destination", "dumpable",
              "gates", "fixes"):
        assert k in t
    assert (t["dumps"], t["blocking_gate"]) == (False, "dumpable")
    assert t["dumpable"]["value"] == 0 and t["dumpable"]["source"] == "pidfd"
    assert t["dumpable"]["cause"] == "privilege-change"
    assert set(t["core_destination"]) >= {"kind", "path", "handler"}
    for g in t["gates"]:
        assert set(g) >= {"id", "status", "evidence", "kernel_ref", "fix"}
        assert g["status"] in ("pass", "fail", "warn", "unknown")
    f = t["fixes"][0]
    assert f["needs_restart"] is True and "sysctl -w fs.suid_dumpable=2" in f["commands"]


def test_check_from_snapshot_human_sentence_first():
    r = run("check", "--from", os.path.join(FIX, "dropped-suid0.json"))
    first = r.stdout.split("\n\n")[0].replace("\n  ", " ")
    assert "a SIGSEGV now would NOT leave a core -- it is not dumpable (dumpable=0) since it switched from " \
           "root to nobody:nogroup while fs.suid_dumpable was 0" in first


def test_fallback_snapshot_is_null_not_wrong():
    """Recorded without the pidfd query: 0 and 2 look alike, so the answer must not be a guess."""
    snap = json.load(open(os.path.join(FIX, "dropped-suid0-nopidfd.json")))
    snap["paths"] = {k: dict(v, exists=True, error=None, walk=[{"mode": 0o40755, "uid": 0, "gid": 0, "path": "/"}],
                             fs={"readonly": False, "bfree": 1 << 30, "bavail": 1 << 30, "frsize": 4096},
                             host_path="/") for k, v in snap["paths"].items()}
    p = "/tmp/cd-fallback-test.json"
    with open(p, "w") as f:
        json.dump(snap, f)
    try:
        t = json.loads(run("check", "--from", p, "--json").stdout)["targets"][0]
    finally:
        os.unlink(p)
    assert t["dumps"] is None and t["blocking_gate"] is None
    assert t["dumpable"]["candidates"] == [0, 2] and t["dumpable"]["source"] == "proc-owner"
    assert "0 or 2" in t["verdict"]


def test_pipe_missing_helper_snapshot():
    t = json.loads(run("check", "--from", os.path.join(FIX, "pipe-missing-helper.json"), "--json").stdout)["targets"][0]
    assert (t["dumps"], t["blocking_gate"]) == (False, "pipe-handler")
    assert t["core_destination"]["handler"] == "systemd-coredump"


def test_explain_flags():
    r = run("explain-flags", "204")
    assert r.returncode == 0 and "dumpable=0" in r.stdout and "00000033" in r.stdout
    d = json.loads(run("explain-flags", "0xce", "--json").stdout)
    assert d["dumpable"] == 2
    one_line_error(run("explain-flags", "banana"))


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a coredoctor snapshot"),
    ('{"schema": "coredoctor.snapshot/1"}', "missing"),
    ('{"schema": "coredoctor.snapshot/1", "kernel": {}, "sysctl": {}, "processes": [{"pid": 1}], "targets": [1]}',
     "corrupt"),
])
def test_corrupt_snapshot(tmp_path, content, needle):
    p = tmp_path / "s.json"
    p.write_text(content)
    assert needle in one_line_error(run("check", "--from", str(p)))


def test_corrupt_snapshot_deep_field(tmp_path):
    snap = json.load(open(os.path.join(FIX, "dropped-suid0.json")))
    snap["processes"][0]["creds"]["gid"] = "garbage"
    p = tmp_path / "s.json"
    p.write_text(json.dumps(snap))
    one_line_error(run("check", "--from", str(p)))


def test_missing_snapshot_file():
    assert "not found" in one_line_error(run("check", "--from", "/nonexistent/x.json"))


@root_only
def test_unknown_pid_and_name():
    assert "no such process" in one_line_error(run("check", "--pid", "999999999"))
    assert "no process named" in one_line_error(run("check", "no-such-program-xyz"))
    assert "no unit" in one_line_error(run("check", "no-such-unit-xyz.service"))
    one_line_error(run("check"))


@root_only
def test_zombie_target():
    p = subprocess.Popen(["/bin/true"])
    time.sleep(0.3)  # exited, not yet reaped: a zombie has no mm
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # surely exited, still not reaped
    try:
        err = one_line_error(run("check", "--pid", str(p.pid)))
        assert "kernel thread or a zombie" in err
        assert f"true (pid {p.pid})" in err and "it is a zombie" in err
    finally:
        p.wait()


@root_only
def test_kernel_thread_target():
    assert "it is a kernel thread" in one_line_error(run("check", "--pid", "2"))  # kthreadd


def test_not_root():
    code = ("import os,sys,locale,gettext,argparse,json,shutil,textwrap; sys.path.insert(0, %r); from coredoctor.cli import main; "
            "os.setgroups([]); os.setresgid(65534,65534,65534); os.setresuid(65534,65534,65534); "
            "sys.exit(main(['check','--all']))" % L.SRC)
    if os.geteuid() != 0:
        code = "import sys; sys.path.insert(0, %r); from coredoctor.cli import main; sys.exit(main(['check','--all']))" % L.SRC
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "needs root" in one_line_error(r)


@root_only
def test_all_while_processes_churn():
    churn = subprocess.Popen(["/bin/sh", "-c", "while :; do /bin/true & /bin/true & wait; done"])
    try:
        for _ in range(3):
            r = run("check", "--all", "--json")
            assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
            doc = json.loads(r.stdout)
            assert len(doc["targets"]) > 3
        r = run("check", "--all")
        assert r.returncode in (0, 1) and r.stdout.splitlines()[0].endswith("(signal SIGSEGV).")
    finally:
        churn.kill()
        churn.wait()


@root_only
def test_snapshot_round_trip_matches_live(tmp_path):
    v = L.Victim({"rlimit_core": [0, None]})
    try:
        live = json.loads(run("check", "--pid", str(v.pid), "--json").stdout)["targets"][0]
        p = tmp_path / "snap.json"
        assert run("snapshot", "--pid", str(v.pid), "-o", str(p)).returncode == 0
        offline = json.loads(run("check", "--from", str(p), "--json").stdout)["targets"][0]
        assert offline == live
        assert (live["dumps"], live["blocking_gate"]) == (False, "rlimit-core")
    finally:
        v.close()


@root_only
def test_name_and_signal_options():
    v = L.Victim({"rlimit_core": [None, None], "sig": {"SIGSEGV": "ignore"}})
    try:
        r = run("check", str(v.pid), "--signal", "segv", "--how", "kill", "--json")
        t = json.loads(r.stdout)["targets"][0]
        assert t["signal"] == "SIGSEGV" and t["how"] == "kill"
        assert (t["dumps"], t["blocking_gate"]) == (False, "signal")
        one_line_error(run("check", str(v.pid), "--signal", "SIGNOPE"))
    finally:
        v.close()


@root_only
def test_output_into_a_closed_pipe():
    env = dict(os.environ, PYTHONPATH=L.SRC)
    r = subprocess.run(f"{sys.executable} -m coredoctor check --all --json | true; "
                       "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode in (0, 1) and r.stderr == "", r.stderr
