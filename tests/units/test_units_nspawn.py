"""A real systemd (a Debian root booted with systemd-nspawn, its own systemd as the machine's
pid 1): check, run on the host and looking at the machine's processes, names the unit file,
the drop-in and the environment file line that decided; then a real fault (a NULL read in the
program, triggered by SIGUSR1) agrees -- systemd's own record of the exit (ExecMainCode 3 =
CLD_DUMPED, 2 = CLD_KILLED) and the core file (or its absence) where check said.

(a) cd-ovs-vswitchd.service laid out like RHEL's ovs-vswitchd.service (openvswitch
    rhel/usr_lib_systemd_system_ovs-vswitchd.service.in, the --ovs-user=${OVS_USER_ID} form):
    EnvironmentFile=/etc/openvswitch/default.conf (root:root), EnvironmentFile=-/etc/sysconfig/
    openvswitch (openvswitch:hugetlbfs), EnvironmentFile=-/run/openvswitch/useropts (missing);
    ExecStart= runs a wrapper that turns --ovs-user into the --user of a program that drops
    privileges as ovs-vswitchd does (setgroups, setresgid, setresuid: capng_change_id()).
(b) units with User=, LimitCORE=, WorkingDirectory= and drop-ins.
"""
import json
import os
import signal
import time

import pytest

import lab as L
import nspawn

DROPPER = r'''#!/usr/bin/python3
import ctypes, grp, os, pwd, signal, sys
args = sys.argv[1:]
if "--user" in args:
    user, _, group = args[args.index("--user") + 1].partition(":")
    pw = pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    os.setgroups([gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
signal.signal(signal.SIGUSR1, lambda *a: ctypes.string_at(0))
open("/run/cd-ready-%d" % os.getpid(), "w").close() if os.geteuid() == 0 else None
while True:
    signal.pause()
'''
WRAPPER = r'''#!/bin/sh
# like ovs-ctl: --ovs-user=U:G becomes the daemon's --user U:G
for a in "$@"; do
    case "$a" in --ovs-user=*) user="${a#--ovs-user=}" ;; esac
done
exec /usr/local/bin/cd-dropper ${user:+--user "$user"}
'''
OVS_UNIT = """[Unit]
Description=Open vSwitch Forwarding Unit (coredoctor test)

[Service]
Type=simple
Restart=no
Environment=XDG_RUNTIME_DIR=/var/run/openvswitch
EnvironmentFile=/etc/openvswitch/default.conf
EnvironmentFile=-/etc/sysconfig/openvswitch
EnvironmentFile=-/run/openvswitch/useropts
ExecStart=/usr/local/bin/cd-ovs-ctl \\
          --no-ovsdb-server --no-monitor --system-id=random \\
          --ovs-user=${OVS_USER_ID} \\
          start $OPTIONS
"""
OVS = "cd-ovs-vswitchd.service"
SD = "/etc/systemd/system"


def _svc(body):
    return (f"[Service]\nType=simple\nRestart=no\nExecStart=/usr/local/bin/cd-dropper\n{body}", 0o644)


FILES = {
    "/usr/local/bin/cd-dropper": (DROPPER, 0o755),
    "/usr/local/bin/cd-ovs-ctl": (WRAPPER, 0o755),
    f"{SD}/{OVS}": (OVS_UNIT, 0o644),
    "/etc/openvswitch/default.conf": ('OVS_USER_ID="root:root"\n', 0o644),
    "/etc/sysconfig/openvswitch": ('# set by the admin\nOPTIONS=""\nOVS_USER_ID="openvswitch:hugetlbfs"\n', 0o644),
    # LimitCORE= in the unit, overridden by a drop-in
    f"{SD}/cd-limit.service": _svc("User=nobody\nLimitCORE=infinity\nWorkingDirectory=/srv/cdw\n"),
    f"{SD}/cd-limit.service.d/50-nocore.conf": ("[Service]\nLimitCORE=0\n", 0o644),
    # WorkingDirectory= in the unit, overridden by a drop-in (a directory nobody cannot write)
    f"{SD}/cd-cwd.service": _svc("User=nobody\nLimitCORE=infinity\nWorkingDirectory=/srv/cdw\n"),
    f"{SD}/cd-cwd.service.d/50-cwd.conf": ("[Service]\nWorkingDirectory=/srv/ro\n", 0o644),
    # the control: everything allows a core
    f"{SD}/cd-ok.service": _svc("User=nobody\nLimitCORE=infinity\nWorkingDirectory=/srv/cdw\n"),
}
DIRS = [("/srv/cdw", 0o755, 65534, 65534), ("/srv/ro", 0o755, 0, 0)]
IDS = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


@pytest.fixture(scope="module")
def machine():
    if os.geteuid() != 0:
        pytest.skip("boots a machine: run as root")
    if nspawn.ensure_rootfs() is None:
        pytest.skip("systemd-nspawn/debootstrap not available (apt-get install systemd-container debootstrap)")
    saved = {p: open(nspawn.ROOTFS + p, "rb").read() for p in IDS}
    try:
        with nspawn.Machine(FILES, DIRS) as m:
            for cmd in (["groupadd", "-r", "hugetlbfs"],
                        ["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", "-G", "hugetlbfs", "openvswitch"],
                        ["systemctl", "daemon-reload"]):
                r = m.run(*cmd)
                assert r.returncode == 0, (cmd, r.stderr)
            yield m
    finally:
        for p, data in saved.items():
            with open(nspawn.ROOTFS + p, "wb") as f:
                f.write(data)


@pytest.fixture
def sysctls(saved_sysctls):
    L.set_sysctls({"kernel.core_pattern": "core", "kernel.core_uses_pid": "0", "fs.suid_dumpable": "0"})
    return saved_sysctls


def _start(m, unit):
    r = m.run("systemctl", "start", unit)
    assert r.returncode == 0, r.stderr
    pid = m.main_pid(unit)
    deadline = time.time() + 10  # the program has set its SIGUSR1 handler when it sleeps in pause()
    while time.time() < deadline:
        with open(f"/proc/{pid}/status") as f:
            st = f.read()
        if "State:\tS" in st and int(st.split("SigCgt:")[1].split()[0], 16) & (1 << (signal.SIGUSR1 - 1)):
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{unit}: pid {pid} never got ready")


def _check(pid):
    r = L.coredoctor("check", str(pid), "--json")
    assert r.returncode in (0, 1), r.stderr
    [t] = json.loads(r.stdout)["targets"]
    text = L.coredoctor("check", str(pid)).stdout
    return t, text


def _fault(m, unit, pid):
    """SIGUSR1 -> the program reads address 0 (a real SIGSEGV); systemd's record of the exit."""
    os.kill(pid, signal.SIGUSR1)
    deadline = time.time() + 20
    while time.time() < deadline:
        r = m.run("systemctl", "show", "-p", "ExecMainCode,ExecMainStatus,ActiveState", unit)
        props = dict(ln.split("=", 1) for ln in r.stdout.split("\n") if "=" in ln)
        if props.get("ActiveState") in ("failed", "inactive") and props.get("ExecMainStatus") == "11":
            return props
        time.sleep(0.1)
    raise AssertionError(f"{unit} did not die of SIGSEGV: {r.stdout}")


def _gate(t, gid):
    return next(g for g in t["gates"] if g["id"] == gid)


def test_ovs_layout_names_execstart_and_the_environment_file_line(machine, sysctls):
    pid = _start(machine, OVS)
    t, text = _check(pid)
    assert t["unit"] == OVS and t["dumps"] is False and _gate(t, "dumpable")["status"] == "fail"
    o = t["dumpable"]["origin"]
    assert (o["kind"], o["file"], o["line"]) == ("unit", f"{SD}/{OVS}", 11), o
    assert o["argv"] == ["--ovs-user=openvswitch:hugetlbfs"]
    env = o["via"][0]
    assert (env["file"], env["line"], env["text"]) == \
        ("/etc/sysconfig/openvswitch", 3, 'OVS_USER_ID="openvswitch:hugetlbfs"'), o["via"]
    assert "overriding 'root:root' from /etc/openvswitch/default.conf:1" in env["summary"]
    summaries = " | ".join(x["summary"] for x in o["via"])
    assert "/run/openvswitch/useropts is missing (allowed by '-')" in summaries
    assert f"in the root of pid {machine.init}" in o["summary"]
    assert "/etc/sysconfig/openvswitch:3" in "".join(text.split())  # (the report wraps long paths)
    props = _fault(machine, OVS, pid)
    assert props["ExecMainCode"] == "2"  # CLD_KILLED: no core
    assert not os.path.exists(machine.host("/core"))


def test_limitcore_from_the_dropin(machine, sysctls):
    pid = _start(machine, "cd-limit.service")
    t, text = _check(pid)
    assert t["dumps"] is False and t["blocking_gate"] == "rlimit-core"
    o = _gate(t, "rlimit-core")["origin"]
    assert (o["file"], o["line"], o["text"]) == (f"{SD}/cd-limit.service.d/50-nocore.conf", 2, "LimitCORE=0")
    assert "50-nocore.conf:2" in "".join(text.split())
    props = _fault(machine, "cd-limit.service", pid)
    assert props["ExecMainCode"] == "2"
    assert os.listdir(machine.host("/srv/cdw")) == []


def test_workingdirectory_from_the_dropin(machine, sysctls):
    pid = _start(machine, "cd-cwd.service")
    t, text = _check(pid)
    assert t["dumps"] is False and t["blocking_gate"] == "core-dir", t["gates"]
    o = _gate(t, "core-dir")["origin"]
    assert (o["file"], o["line"], o["text"]) == (f"{SD}/cd-cwd.service.d/50-cwd.conf", 2, "WorkingDirectory=/srv/ro")
    # a machine's unit: its WorkingDirectory= drop-in is written inside the machine, not on the host
    cwd = [c for f in t["fixes"] for c in f["commands"] if "90-coredoctor-cwd" in c]
    assert cwd and all(c.startswith(f"nsenter -t {machine.init} -m -p -- ") for c in cwd), t["fixes"]
    assert not os.path.exists(f"{SD}/cd-cwd.service.d")
    props = _fault(machine, "cd-cwd.service", pid)
    assert props["ExecMainCode"] == "2"
    assert os.listdir(machine.host("/srv/ro")) == [] and os.listdir(machine.host("/srv/cdw")) == []


def test_control_unit_dumps_where_check_says(machine, sysctls):
    pid = _start(machine, "cd-ok.service")
    t, _ = _check(pid)
    assert t["dumps"] is True, t["gates"]
    core = machine.host("/srv/cdw/core")
    try:
        props = _fault(machine, "cd-ok.service", pid)
        assert props["ExecMainCode"] == "3"  # CLD_DUMPED
        L.wait_stable(core)
        st = os.stat(core)
        assert st.st_uid == 65534 and st.st_size > 0
    finally:
        if os.path.exists(core):
            os.unlink(core)
