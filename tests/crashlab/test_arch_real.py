"""This architecture's own facts, proved on the running kernel (on the host and in the arm64 and
6.1 guests): the ptrace probe's kcmp syscall number against the C library's headers, and a real
fault's kernel line -- printed with debug.exception-trace=1 in this architecture's format and
classified with its pid, absent with 0 and then said so by crashes."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

import lab as L
from coredoctor.history.kmsg import read_kmsg
from coredoctor.snapshot.proc import ptrace

ET = "/proc/sys/debug/exception-trace"


def test_kcmp_number_is_this_architectures():
    if not shutil.which("gcc"):
        pytest.skip("needs gcc (apt-get install gcc)")
    d = tempfile.mkdtemp(prefix="cdarch-")
    try:
        with open(f"{d}/n.c", "w") as f:
            f.write('#include <stdio.h>\n#include <sys/syscall.h>\nint main(void){printf("%d\\n", SYS_kcmp);}\n')
        subprocess.run(["gcc", "-o", f"{d}/n", f"{d}/n.c"], check=True, capture_output=True)
        nr = int(subprocess.run([f"{d}/n"], check=True, capture_output=True, text=True).stdout)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert ptrace._SYS_KCMP[os.uname().machine] == nr
    # and the probe answers on this kernel: root itself is dumpable
    assert ptrace.probe_root_dumpable([os.getpid()]) == {os.getpid(): True}


def _lines_for(pid, timeout=3.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        evs = [e for e in read_kmsg() if e["pid"] == pid and e["event"] == "fault"]
        if evs:
            return evs
        time.sleep(0.1)
    return []


@pytest.fixture
def exception_trace():
    if not os.path.exists(ET):
        pytest.skip("this kernel has no debug.exception-trace")
    with open(ET) as f:
        saved = f.read().strip()
    try:
        yield
    finally:
        with open(ET, "w") as f:
            f.write(saved)
        with open(ET) as f:
            assert f.read().strip() == saved


def _set(v):
    with open(ET, "w") as f:
        f.write(v)


def test_fault_line_follows_exception_trace(saved_sysctls, exception_trace, loud_kernel_log):
    L.set_sysctls({"kernel.core_pattern": "core", "fs.suid_dumpable": 0})
    _set("1")
    L.kernel_log_room(1)
    v = L.Victim({"rlimit_core": [0, None], "comm": "cdarch-loud"})
    v.fault()
    evs = _lines_for(v.pid)
    v.close()
    assert evs, "no classified fault line with debug.exception-trace=1"
    e = evs[0]
    assert e["comm"] == "cdarch-loud" and e["signal"] == "SIGSEGV"
    if os.uname().machine == "aarch64":  # arm64_show_signal(): the ESR decoded
        assert e["esr"]["class"] == "DABT (lower EL)" and e["esr"]["fault"] in ("translation", "permission")
    _set("0")
    q = L.Victim({"rlimit_core": [0, None], "comm": "cdarch-quiet"})
    q.fault()  # returns once it is dead: the fault path prints (or not) before the signal is sent
    assert [e for e in read_kmsg() if e["pid"] == q.pid] == []
    q.close()
    r = L.coredoctor("crashes", "--json", "--source", "kmsg")
    assert r.returncode == 0, r.stderr
    kl = json.loads(r.stdout)["kernel_log"]
    assert (kl["exception_trace"], kl["faults_logged"]) == (0, False)
    assert "sysctl -w debug.exception-trace=1" in [s["command"] for s in kl["switches"]]
    r = L.coredoctor("crashes", "--source", "kmsg")
    assert "Kernel log: no faults (debug.exception-trace=0)" in r.stdout
