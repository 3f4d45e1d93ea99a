"""A set-user-ID-root program executed by nobody: exec's commit_creds() sets dumpable to
fs.suid_dumpable (begin_new_exec(), fs/exec.c). check must say so (cause "exec"), and the kernel
must agree when the program then faults for real."""
import grp
import json
import os
import pwd
import resource
import shutil
import subprocess

import pytest

import lab as L
from coredoctor.snapshot import pidfd

PIDFD = pidfd.probe()
NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid
SRC = r'''
#include <unistd.h>
int main(void) {
    char b[16];
    if (write(1, "READY\n", 6) != 6) return 1;
    if (read(0, b, sizeof b) <= 0) return 1;
    *(volatile int *)0 = 0;   /* a real fault: SIGSEGV */
    return 0;
}
'''


def _drop():
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    os.setgroups([])
    os.setresgid(NOGROUP, NOGROUP, NOGROUP)
    os.setresuid(NOBODY, NOBODY, NOBODY)


@pytest.mark.parametrize("suid_dumpable", [0, 2])
def test_setuid_exec(labdir, suid_dumpable):
    if not shutil.which("gcc"):
        pytest.skip("needs gcc to build the set-uid test program")
    lab, _ = labdir
    cores = L.make_cores(lab)
    exe = os.path.join(lab, "suidfault")
    with open(exe + ".c", "w") as f:
        f.write(SRC)
    subprocess.run(["gcc", "-O0", "-o", exe, exe + ".c"], check=True)
    os.chmod(exe, 0o4755)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%p", "fs.suid_dumpable": suid_dumpable})
    p = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_drop)
    try:
        assert p.stdout.readline() == b"READY\n"
        with open(f"/proc/{p.pid}/status") as f:
            euid = [ln.split()[2] for ln in f if ln.startswith("Uid:")][0]
        if euid != "0":
            pytest.skip("the set-uid bit is ignored here (nosuid mount)")
        r = L.coredoctor("check", "--pid", str(p.pid), "--json")
        t = json.loads(r.stdout)["targets"][0]
        assert t["dumpable"]["cause"] == "exec", t["dumpable"]
        want = (False, "dumpable") if suid_dumpable == 0 else (True, None)
        if PIDFD:
            assert (t["dumps"], t["blocking_gate"]) == want, t["verdict"]
            assert t["dumpable"]["value"] == suid_dumpable
        else:  # 0 and 2 look alike through /proc; the absolute pattern makes it matter
            assert t["dumps"] is None and t["dumpable"]["candidates"] == [0, 2]
        p.stdin.write(b"go\n")
        p.stdin.flush()
        _, status = os.waitpid(p.pid, 0)
        p.returncode = -1
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 11
        core = os.path.join(cores, f"core.{p.pid}")
        dumped = os.path.exists(core) and os.path.getsize(core) > 0
        assert dumped == (suid_dumpable == 2) == bool(os.WCOREDUMP(status))
        if dumped:
            st = os.stat(core)
            assert (st.st_uid, st.st_gid) == (0, NOGROUP)  # dumped with fsuid 0, the task's fsgid
    finally:
        if p.returncode is None:
            p.kill()
            p.wait()
