"""Every action kind fix knows, applied and rolled back on the real host in one journaled fix with
two targets: the live sysctl, a systemd drop-in with a real daemon-reload, a directory, a file, a
live limit of a running process, a line in a daemon's own config file, and the records a person
does (reported, never run)."""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile

import lab as L
from coredoctor.fix import actions, journal
from coredoctor.kernel import remedies as R

UNIT = "cd-kinds-test.service"
DROPIN_DIR = f"/etc/systemd/system/{UNIT}.d"


def test_every_kind_on_the_host(fix_env, monkeypatch):
    monkeypatch.setattr(journal, "JOURNAL_DIR", os.path.join(fix_env, "fixes"))
    assert not os.path.exists(DROPIN_DIR)
    L.set_sysctls({"kernel.core_pattern": "core", "fs.suid_dumpable": 0})
    tmp = tempfile.mkdtemp(prefix="cd-kinds-")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        resource.prlimit(child.pid, resource.RLIMIT_CORE, (0, resource.RLIM_INFINITY))
        proc = {"pid": child.pid, "comm": "sleeper", "unit": UNIT}
        own = os.path.join(tmp, "daemon.cfg")   # a daemon's own config file: a line in, then its bytes back
        with open(own, "wb") as f:
            f.write(b"global\n\tuser x\n")
        os.chmod(own, 0o640)
        recs = [R.mkdir(os.path.join(tmp, "cores"), "1777", "t"),
                R.sysctl("kernel.core_pattern", os.path.join(tmp, "cores", "core.%p"), "t"),
                R.sysctl("fs.suid_dumpable", 2, "t"),
                R.file(os.path.join(tmp, "90-test.conf"), "kernel.core_pattern = x\n", "t"),
                R.dropin(UNIT, "core", ["[Service]", "LimitCORE=infinity"], "t"),
                R.prlimit(child.pid, "core", "t"),
                R.restart(proc, "t"), R.manual("by hand", "t", ["# nothing"]), R.daemon_option("d", "opt", "t"),
                R.config_line("d", own, "set-dumpable", "t", section="global")]
        assert {a["kind"] for a in recs} == set(R.KINDS)
        plan = {"actions": sorted([a for a in recs if a["kind"] in R.APPLIED_KINDS + R.DAEMON_KINDS],
                                  key=R.order_key),
                "reported": [a for a in recs if a["kind"] in R.REPORTED_KINDS],
                "needs_restart": [], "security": [], "warnings": [], "manual": []}
        targets = [{"pid": child.pid, "comm": "sleeper", "exe": None, "unit": UNIT},
                   {"pid": os.getpid(), "comm": "pytest", "exe": None, "unit": None}]
        entry = actions.apply("kinds-1", targets, plan)
        assert entry["state"] == "applied" and [t["pid"] for t in entry["targets"]] == [child.pid, os.getpid()]
        assert L.read_sysctl("kernel.core_pattern") == os.path.join(tmp, "cores", "core.%p")
        assert L.read_sysctl("fs.suid_dumpable") == "2"
        assert open(f"{DROPIN_DIR}/90-coredoctor-core.conf").read() == "[Service]\nLimitCORE=infinity\n"
        if os.path.isdir("/run/systemd/system"):  # the daemon-reload ran: systemd sees the drop-in
            out = subprocess.run(["systemctl", "show", "-p", "DropInPaths", UNIT], capture_output=True, text=True)
            assert f"{DROPIN_DIR}/90-coredoctor-core.conf" in out.stdout, out.stdout
        assert resource.prlimit(child.pid, resource.RLIMIT_CORE) == (resource.RLIM_INFINITY,) * 2
        assert oct(os.stat(os.path.join(tmp, "cores")).st_mode & 0o7777) == "0o1777"
        assert open(own, "rb").read() == b"global\n\tset-dumpable\n\tuser x\n"
        rep = [r for r in entry["actions"] if r.get("reported")]
        assert sorted(r["action"]["kind"] for r in rep) == sorted(R.REPORTED_KINDS)

        r = L.coredoctor("fix", "--list", "--json", env_extra={"COREDOCTOR_STATE_DIR": fix_env})
        listed = json.loads(r.stdout)["fixes"]
        assert [len(f["targets"]) for f in listed] == [2], r.stdout + r.stderr
        r = L.coredoctor("fix", "--rollback", "kinds-1", "--json", env_extra={"COREDOCTOR_STATE_DIR": fix_env})
        assert r.returncode == 0, r.stderr
        back = json.loads(r.stdout)
        assert back["state"] == "rolled-back" and back["notes"] == []
        assert len(back["restored"]) == len(plan["actions"])
        assert L.read_sysctl("kernel.core_pattern") == "core" and L.read_sysctl("fs.suid_dumpable") == "0"
        assert not os.path.exists(DROPIN_DIR)
        assert not os.path.exists(os.path.join(tmp, "cores")) and not os.path.exists(os.path.join(tmp, "90-test.conf"))
        assert resource.prlimit(child.pid, resource.RLIMIT_CORE) == (0, resource.RLIM_INFINITY)
        assert open(own, "rb").read() == b"global\n\tuser x\n" and oct(os.stat(own).st_mode & 0o777) == "0o640"
        if os.path.isdir("/run/systemd/system"):
            out = subprocess.run(["systemctl", "show", "-p", "DropInPaths", UNIT], capture_output=True, text=True)
            assert DROPIN_DIR not in out.stdout
    finally:
        child.kill()
        child.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(DROPIN_DIR):
            shutil.rmtree(DROPIN_DIR)
            subprocess.run(["systemctl", "daemon-reload"], check=False)
