"""The real auditd: with the kernel's audit enabled, every crash leaves an ANOM_ABEND record
(audit_core_dumps(), before any dump gate) -- in the kernel log while no auditd listens, in
audit.log once auditd runs. crashes reads both and ties them to the crash. The audit state,
the daemon and audit.log are put back as they were."""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

import lab as L

AUDITD, AUDITCTL = "/usr/sbin/auditd", "/usr/sbin/auditctl"
LOG = "/var/log/audit/audit.log"


def _status():
    out = subprocess.run([AUDITCTL, "-s"], capture_output=True, text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in out.strip().split("\n") if " " in line)


@pytest.fixture
def audit(saved_sysctls):
    L.require_installed(AUDITD, "auditd")
    before = _status()
    if before.get("pid", "0") != "0":
        pytest.skip(f"an auditd (pid {before['pid']}) already runs on this host: not touching it")
    logdir = os.path.dirname(LOG)
    made_dir = not os.path.isdir(logdir)
    saved = {}
    for p in [LOG] + [f"{LOG}.{i}" for i in range(1, 10)]:
        if os.path.exists(p):
            saved[p] = open(p, "rb").read()
    daemons = []

    def start():
        p = subprocess.Popen([AUDITD, "-n", "-s", "nochange"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        daemons.append(p)
        deadline = time.time() + 10
        while time.time() < deadline and _status().get("pid") != str(p.pid):
            time.sleep(0.1)
        assert _status().get("pid") == str(p.pid), "auditd did not register with the kernel"
        return p
    try:
        subprocess.run([AUDITCTL, "-e", "1"], check=True, capture_output=True)
        yield start
    finally:
        for p in daemons:
            L.end(p)
        subprocess.run([AUDITCTL, "-e", before.get("enabled", "0")], check=False, capture_output=True)
        for p in [LOG] + [f"{LOG}.{i}" for i in range(1, 10)]:
            if p in saved:
                with open(p, "wb") as f:
                    f.write(saved[p])
            elif os.path.exists(p):
                os.unlink(p)
        if made_dir:
            shutil.rmtree(logdir, ignore_errors=True)
        after = _status()
        assert (after.get("enabled"), after.get("pid")) == (before.get("enabled"), "0"), after


def _crashes():
    r = L.coredoctor("crashes", "--json", "--since", "10 minutes ago")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return json.loads(r.stdout)


def _wait_in(path, needle, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and needle in open(path, errors="replace").read():
            return True
        time.sleep(0.1)
    return False


def test_anom_abend_from_kmsg_and_audit_log(audit, labdir, loud_kernel_log):
    lab, _ = labdir
    cores = L.make_cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})

    # audit on, no auditd: the kernel prints the record itself ("audit: type=1701 ...")
    v = L.Victim({"rlimit_core": [0, None], "comm": "cdlab-audit1"})
    try:
        L.kernel_log_room(1)
        v.fault()
        time.sleep(0.3)
        c = {x["pid"]: x for x in _crashes()["crashes"]}[v.pid]
        abend = [e for e in c["evidence"] if e["event"] == "audit-abend"]
        assert len(abend) == 1 and abend[0]["sources"] == ["kmsg"], c["evidence"]
        assert re.search(rf"pid={v.pid} comm=\"cdlab-audit1\".* sig=11", abend[0]["line"])
        assert c["core"]["status"] == "missing" and c["exe"] and c["exe"].startswith("/")
    finally:
        v.close()

    # auditd runs: the record goes to audit.log instead, and is found there
    audit()
    v = L.Victim({"rlimit_core": [None, None], "comm": "cdlab-audit2"})
    try:
        L.kernel_log_room(1)
        v.fault()
        assert _wait_in(LOG, f"pid={v.pid} "), "no ANOM_ABEND in audit.log"
        doc = _crashes()
        assert doc["read"]["audit"].startswith("read")
        c = {x["pid"]: x for x in doc["crashes"]}[v.pid]
        assert f"audit:{LOG}" in c["sources"] and "kmsg" in c["sources"], c["sources"]
        abend = [e for e in c["evidence"] if e["event"] == "audit-abend"]
        assert len(abend) == 1 and abend[0]["sources"] == [f"audit:{LOG}"]
        assert (c["comm"], c["signal"], c["core"]["status"]) == ("cdlab-audit2", "SIGSEGV", "present")
        assert c["core"]["path"] == f"{cores}/core.cdlab-audit2.{v.pid}"
    finally:
        v.close()
