"""The tracer's instance lifetime: removed on normal exit, SIGTERM and SIGINT; one left by a
SIGKILLed tracer is removed by the next run; tracefs mounted by coredoctor when nowhere mounted
(in a private mount namespace, so the host's mount is untouched) and unmounted again."""
import os
import signal
import subprocess
import time

import pytest

import tracelab as T


def _default_sigint():
    # a shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN:
    # the tracer must get SIGINT as a terminal's Ctrl-C gives it, whatever started this pytest
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args):
    p = subprocess.Popen([T.PY, "-m", "coredoctor", "trace", "--json", *args], env=T.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    name = f"coredoctor-{p.pid}"
    deadline = time.time() + 20
    while time.time() < deadline and name not in T.instances():
        time.sleep(0.05)
    assert name in T.instances(), p.stderr.read() if p.poll() is not None else "no instance"
    time.sleep(0.3)
    return p, name


@pytest.fixture
def sleeper():
    p = subprocess.Popen(["sleep", "60"])
    yield p
    p.kill()
    p.wait()


@pytest.mark.parametrize("sig,rc", [(signal.SIGTERM, 130), (signal.SIGINT, 130)])
def test_instance_removed_on_signal(sleeper, sig, rc):
    p, name = _start(["--pid", str(sleeper.pid)])
    p.send_signal(sig)
    out, err = p.communicate(timeout=20)
    assert p.returncode == rc, err
    assert name not in T.instances()
    assert "Traceback" not in err


def test_sigkill_leftover_removed_by_next_run(sleeper):
    p, name = _start(["--pid", str(sleeper.pid)])
    p.kill()
    p.wait(10)
    assert name in T.instances()  # nobody could clean up after SIGKILL
    q, name2 = _start(["--pid", str(sleeper.pid)])
    try:
        assert name not in T.instances()  # gone once the new run started
        assert name2 in T.instances()
    finally:
        q.send_signal(signal.SIGTERM)
        out, err = q.communicate(timeout=20)
    assert q.returncode == 130, err
    assert T.instances() == []
    notices = [line for line in out.splitlines() if '"notice"' in line]
    assert any(name in line for line in notices), out


def test_mounts_tracefs_when_not_mounted(tmp_path):
    """In a private mount namespace with no tracefs anywhere: coredoctor mounts it, traces, and
    leaves the namespace's mounts as it found them. The host's own mount is not touched."""
    host_root = T.tracefs_root()
    script = tmp_path / "inner.sh"
    out = tmp_path / "trace.jsonl"
    script.write_text(f"""set -e
for m in $(awk '$3=="tracefs"{{print $2}}' /proc/self/mounts | sort -r); do umount "$m"; done
awk '$3=="debugfs"{{print $2}}' /proc/self/mounts | while read m; do umount -l "$m"; done
before=$(awk '$3=="tracefs"||$3=="debugfs"' /proc/self/mounts | wc -l)
{T.PY} -m coredoctor trace --json -o {out} -- {T.PY} {T.ACTOR} prctl:0 exit
after=$(awk '$3=="tracefs"||$3=="debugfs"' /proc/self/mounts | wc -l)
echo "mounts $before $after"
""")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", str(script)], env=T.env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mounts 0 0" in r.stdout, r.stdout + r.stderr
    import json
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    ch = T.of(recs, "dumpable-change", syscall="prctl")
    assert [(c["before"], c["after"]) for c in ch] == [(1, 0)], recs
    assert T.tracefs_root() == host_root  # the host's mount is still there


def test_bad_usage_is_one_line():
    for args in (["--pid", "999999999"], [], ["--duration", "-1", "--pid", "1"], ["--unit", "nope-x.service"]):
        r = subprocess.run([T.PY, "-m", "coredoctor", "trace", *args], env=T.env(), capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("coredoctor: "), r.stderr


def test_command_passes_through_and_exit_code():
    r = subprocess.run([T.PY, "-m", "coredoctor", "trace", "--", "sh", "-c", "read x; echo got:$x; exit 7"],
                       env=T.env(), capture_output=True, text=True, timeout=60, input="hello\n")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "got:hello\n"
    assert r.stderr.startswith("coredoctor trace: watching")
    r = subprocess.run([T.PY, "-m", "coredoctor", "trace", "--", "/nonexistent/cmd"], env=T.env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 127 and "cannot run /nonexistent/cmd" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_during_start_up_still_stops_and_removes_the_instance(sleeper, sig):
    """The signal comes the moment the instance exists (while its options and events are being
    set up): the handler only records it, start-up goes on to a check point, and the instance is
    removed. At least one try must land before the tracer attached (no attach record)."""
    early = 0
    for attempt in range(4):
        p = subprocess.Popen([T.PY, "-m", "coredoctor", "trace", "--json", "--pid", str(sleeper.pid)], env=T.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=_default_sigint)
        name = f"coredoctor-{p.pid}"
        root = T.tracefs_root()
        deadline = time.time() + 20
        while time.time() < deadline and p.poll() is None:
            if root is None:
                root = T.tracefs_root()
            elif os.path.isdir(os.path.join(root, "instances", name)):
                break
            time.sleep(0.001)
        p.send_signal(sig)
        out, err = p.communicate(timeout=20)
        assert p.returncode == 130, (attempt, p.returncode, err)
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert name not in T.instances()
        if '"attach"' not in out:
            early += 1
    assert early >= 1, "no signal came during start-up"
