"""A login session's RLIMIT_CORE from a limits.d line (real pam_limits: runuser -l reads
/etc/pam.d/runuser-l -> pam_limits.so): check names the parent the limit was inherited from
(runuser, where pam_limits set it) and the limits.d file and line; then a real fault agrees
(no core in the session's working directory)."""
import json
import os
import pwd
import shutil
import signal
import subprocess
import time

import pytest

import lab as L

USER = "cdunits"
HOME = "/tmp/cdunits-home"
LIMITS = "/etc/security/limits.d/90-cdtest-units.conf"
VICTIM = r'''import ctypes, signal
signal.signal(signal.SIGUSR1, lambda *a: ctypes.string_at(0))
while True:
    signal.pause()
'''


@pytest.fixture
def session_user(saved_sysctls):
    if os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("needs root and runuser")
    if os.path.exists(LIMITS):
        pytest.skip(f"{LIMITS} exists already")
    try:
        pwd.getpwnam(USER)
        pytest.skip(f"user {USER} exists already")
    except KeyError:
        pass
    r = subprocess.run(["useradd", "-M", "-d", HOME, "-s", "/bin/sh", USER], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    try:
        os.mkdir(HOME, 0o755)
        pw = pwd.getpwnam(USER)
        os.chown(HOME, pw.pw_uid, pw.pw_gid)
        with open(f"{HOME}/victim.py", "w") as f:
            f.write(VICTIM)
        with open(LIMITS, "w") as f:
            f.write(f"# coredoctor test\n{USER}  soft  core  1\n")
        yield pw
    finally:
        if os.path.exists(LIMITS):
            os.unlink(LIMITS)
        subprocess.run(["userdel", USER], capture_output=True)
        shutil.rmtree(HOME, ignore_errors=True)


def test_limit_inherited_from_the_pam_session(session_user):
    L.set_sysctls({"kernel.core_pattern": "core", "kernel.core_uses_pid": "0"})
    p = subprocess.Popen(["runuser", "-l", USER, "-c", f"exec /usr/bin/python3 {HOME}/victim.py"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    try:
        deadline = time.time() + 15
        while time.time() < deadline and victim is None:
            for c in L.children(p.pid):
                try:
                    st = open(f"/proc/{c}/status").read()
                except OSError:
                    continue
                if "python3" in st.split("\n")[0] and int(st.split("SigCgt:")[1].split()[0], 16) & (1 << 9):
                    victim = c
            time.sleep(0.05)
        assert victim, "the session's program did not start"
        r = L.coredoctor("check", str(victim), "--json")
        assert r.returncode == 1, r.stderr
        [t] = json.loads(r.stdout)["targets"]
        assert t["blocking_gate"] == "rlimit-core" and t["dumps"] is False
        o = next(g for g in t["gates"] if g["id"] == "rlimit-core")["origin"]
        assert (o["kind"], o["program"]) == ("inherited", "runuser") and f"pid {p.pid}" in o["summary"], o
        [ln] = o["via"]
        assert (ln["kind"], ln["file"], ln["line"]) == ("limits", LIMITS, 2), ln
        assert f"{LIMITS}:2" in "".join(L.coredoctor("check", str(victim)).stdout.split())  # (wrapped)
        os.kill(victim, signal.SIGUSR1)
        rc = p.wait(20)
        err = p.stderr.read()
        # su-common.c: a child killed by a signal -> 128 + signo, and " (core dumped)" only when it dumped
        assert rc == 128 + signal.SIGSEGV and "core dumped" not in err, (rc, err)
        assert not os.path.exists(f"{HOME}/core")
    finally:
        if victim and os.path.exists(f"/proc/{victim}"):
            os.kill(victim, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
            p.wait(10)
