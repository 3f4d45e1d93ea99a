"""A systemd-nspawn machine as a container, for real (issue 11): a Debian root booted with
systemd-nspawn -M NAME (its own systemd as the machine's pid 1), no machined on this host
(--register=no --keep-unit: no machine-NAME.scope, the payload in nspawn's 'payload' subcgroup).
check, on the host, names a unit's process `container: {runtime: systemd-nspawn, name, ...}`
from the nspawn leader (its argv, the init's container_uuid) and says where its core lands on
the host (under the machine's directory); a real SIGSEGV (a NULL read) leaves the core exactly
there; crashes lists the crash with the machine and the core at that host path, found."""
import json
import os
import signal
import time

import pytest

import lab as L
import nspawn

NAME = "cdt-mach"
FAULTER = r'''#!/usr/bin/python3
import ctypes, signal
signal.signal(signal.SIGUSR1, lambda *a: ctypes.string_at(0))
while True:
    signal.pause()
'''
UNIT = """[Service]
Type=simple
User=nobody
LimitCORE=infinity
WorkingDirectory=/
Restart=always
RestartSec=1
ExecStart=/usr/local/bin/cd-faulter
"""
FILES = {"/usr/local/bin/cd-faulter": (FAULTER, 0o755),
         "/etc/systemd/system/cd-fault.service": (UNIT, 0o644),
         "/etc/systemd/system/cd-nocore.service": (UNIT.replace("LimitCORE=infinity", "LimitCORE=0")
                                                   .replace("Restart=always", "Restart=no"), 0o644)}
CORES = "/srv/cdcores"
DIRS = [(CORES, 0o1777, 0, 0)]
PATTERN = CORES + "/core.%e.%p"


@pytest.fixture(scope="module")
def machine():
    if os.geteuid() != 0:
        pytest.skip("boots a machine: run as root")
    if nspawn.ensure_rootfs() is None:
        pytest.skip("systemd-nspawn/debootstrap not available (apt-get install systemd-container debootstrap)")
    with nspawn.Machine(FILES, DIRS, name=NAME) as m:
        r = m.run("systemctl", "daemon-reload")
        assert r.returncode == 0, r.stderr
        yield m


def _ready(pid, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/status") as f:
                st = f.read()
        except OSError:
            st = ""
        if "State:\tS" in st and int(st.split("SigCgt:")[1].split()[0], 16) & (1 << (signal.SIGUSR1 - 1)):
            return pid
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} never got ready")


def _nspid(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(x for x in f if x.startswith("NSpid:")).split()[-1])


def _init_uuid(m):
    with open(f"/proc/{m.init}/environ", "rb") as f:
        env = f.read().split(b"\0")
    assert b"container=systemd-nspawn" in env
    return next(e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"container_uuid="))


def test_a_unit_in_the_machine_is_named_and_its_core_lands_where_check_said(machine, saved_sysctls,
                                                                             loud_kernel_log):
    m = machine
    L.set_sysctls({"kernel.core_pattern": PATTERN, "kernel.core_uses_pid": "0", "fs.suid_dumpable": "0"})
    r = m.run("systemctl", "start", "cd-fault.service")
    assert r.returncode == 0, r.stderr
    pid = _ready(m.main_pid("cd-fault.service"))
    nspid = _nspid(pid)
    assert nspid != pid
    with open(f"/proc/{pid}/cgroup") as f:
        cg = f.read()
    assert "machine-" not in cg and "/payload/" in cg        # no machined: nothing but nspawn's payload
    r = L.coredoctor("check", "--json", str(pid))
    assert r.returncode in (0, 1), r.stderr
    [t] = json.loads(r.stdout)["targets"]
    c = t["container"]
    assert (c["runtime"], c["id"], c["name"], c["image"]) == ("systemd-nspawn", NAME, NAME, nspawn.ROOTFS), c
    assert (c["pod"], c["namespace"]) == (None, None)
    assert c["uuid"] == _init_uuid(m).replace("-", "") and c["leader"] == m.proc.pid
    assert t["unit"] == "cd-fault.service" and t["dumps"] is True, t["verdict"]
    d = t["core_destination"]
    expected = f"{nspawn.ROOTFS}{CORES}/core.cd-faulter.{nspid}"
    assert d["container_path"] == f"{CORES}/core.cd-faulter.{nspid}"
    assert (d["host_path"], d["landing"], d["survives"]) == (expected, "bind", True), d
    text = L.coredoctor("check", str(pid)).stdout
    assert f"(pid {pid}, in machine {NAME})" in text.split("\n")[0]
    sel = L.coredoctor("check", "--json", "--container", NAME)
    assert sel.returncode in (0, 1), sel.stderr
    assert pid in {x["pid"] for x in json.loads(sel.stdout)["targets"]}
    try:
        L.kernel_log_room(1)
        t0 = time.time()
        os.kill(pid, signal.SIGUSR1)                     # a real fault: NULL read in ctypes
        L.wait_stable(expected)
        st = os.stat(expected)
        assert st.st_uid == 65534 and st.st_size > 0     # User=nobody, LimitCORE=infinity
        again = None
        deadline = time.time() + 20
        while time.time() < deadline and again is None:  # Restart=always: the instance crashes reads
            got = m.run("systemctl", "show", "-p", "MainPID", "--value", "cd-fault.service").stdout.strip()
            hp = m.host_pid(int(got or 0)) if got and got != "0" else None
            again = hp if hp and hp != pid else None
            time.sleep(0.2)
        assert again, "the unit did not restart"
        r = L.coredoctor("crashes", "--json", "--source", "kmsg", "--container", NAME)
        assert r.returncode == 0, r.stderr
        mine = [x for x in json.loads(r.stdout)["crashes"] if x["pid"] == pid]
        assert len(mine) == 1, r.stdout[:3000]
        rec = mine[0]
        assert rec["signal"] == "SIGSEGV" and rec["time"] >= t0 - 2
        assert (rec["container"]["runtime"], rec["container"]["name"]) == ("systemd-nspawn", NAME)
        core = rec["core"]
        assert core["found"] is True and core["host_path"] == expected == core["path"], core
        assert core["status"] == "present" and core["size"] == os.path.getsize(expected)
    finally:
        m.run("systemctl", "stop", "cd-fault.service")
        for n in os.listdir(nspawn.ROOTFS + CORES):
            if n.startswith("core.cd-faulter."):
                os.unlink(os.path.join(nspawn.ROOTFS + CORES, n))   # this test's own cores


def test_limitcore_fix_is_inside_the_machine_only(machine, saved_sysctls):
    m = machine
    L.set_sysctls({"kernel.core_pattern": PATTERN, "kernel.core_uses_pid": "0", "fs.suid_dumpable": "0"})
    r = m.run("systemctl", "start", "cd-nocore.service")
    assert r.returncode == 0, r.stderr
    pid = _ready(m.main_pid("cd-nocore.service"))
    nspid = _nspid(pid)
    try:
        r = L.coredoctor("check", "--json", str(pid))
        assert r.returncode in (0, 1), r.stderr
        [t] = json.loads(r.stdout)["targets"]
        assert t["container"]["name"] == NAME and t["blocking_gate"] == "rlimit-core"
        cmds = [c for f in t["fixes"] for c in f["commands"]]
        inside = [c for c in cmds if "90-coredoctor-core" in c]
        assert inside and all(c.startswith(f"nsenter -t {m.init} -m -p -- ") for c in inside), cmds
        # no drop-in on the host: the host's systemd does not run the machine's units
        assert not any("cd-nocore.service.d" in c and not c.startswith("nsenter ") for c in cmds), cmds
        assert any(c.startswith("prlimit ") and str(pid) in c for c in cmds), cmds
        os.kill(pid, signal.SIGUSR1)                 # the kernel agrees: no core (RLIMIT_CORE 0)
        deadline = time.time() + 20
        while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"{nspawn.ROOTFS}{CORES}/core.cd-faulter.{nspid}")
    finally:
        m.run("systemctl", "stop", "cd-nocore.service")
