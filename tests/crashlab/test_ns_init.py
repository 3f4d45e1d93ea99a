"""The init of a pid namespace (SIGNAL_UNKILLABLE): a kill-sent SIGSEGV with the default action
is dropped, a real fault clears the flag and dumps (kernel/signal.c: sig_task_ignored(),
get_signal())."""
import json
import os
import signal
import subprocess
import sys
import time

import lab as L


def _start(cores):
    spec = {"rlimit_core": [None, None]}
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--", sys.executable, L.VICTIM, json.dumps(spec)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "READY 1"  # pid 1 of its namespace
    with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
        host_pid = int(f.read().split()[0])
    return p, host_pid


def test_pid_namespace_init(labdir):
    lab, _ = labdir
    cores = L.make_cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%P", "fs.suid_dumpable": 0})
    p, pid = _start(cores)
    try:
        # kill-sent: dropped
        r = json.loads(L.coredoctor("check", "--pid", str(pid), "--how", "kill", "--json").stdout)["targets"][0]
        assert (r["dumps"], r["blocking_gate"]) == (False, "signal") and "namespace" in r["verdict"]
        os.kill(pid, signal.SIGSEGV)
        time.sleep(0.5)
        assert os.path.exists(f"/proc/{pid}") and p.poll() is None, "the kernel delivered a dropped signal"
        # a fault: dumps
        r = json.loads(L.coredoctor("check", "--pid", str(pid), "--json").stdout)["targets"][0]
        assert (r["dumps"], r["blocking_gate"]) == (True, None), r["verdict"]
        assert r["core_destination"]["path"] == f"{cores}/core.{pid}"
        p.stdin.write("fault\n")
        p.stdin.flush()
        p.wait(30)
        path, size = L.wait_stable(f"{cores}/core.{pid}", timeout=5)
        assert path and size > 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
