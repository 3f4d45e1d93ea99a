"""A real nginx master reaps a worker that faulted: its error.log line is the witness `crashes`
reads (ngx_process_get_status(): "worker process N exited on signal 11[ (core dumped)]"), with
the kernel's WCOREDUMP verdict as the master saw it. nginx runs on 127.0.0.1 from a prefix of its
own in a temporary directory, in the foreground; it is ended by its pid."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import lab as L

NGINX = "/usr/sbin/nginx"


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _uid(pid):
    """The real uid from /proc/PID/status (the directory's owner is root once not dumpable)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("Uid:"))


class Nginx:
    def __init__(self, extra=""):
        self.dir = tempfile.mkdtemp(prefix="cdnginx-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        for d in ("logs", "tmp"):
            os.mkdir(os.path.join(self.dir, d))
        self.log = os.path.join(self.dir, "logs", "error.log")
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(f"""worker_processes 1;
error_log {self.log} notice;
pid {self.dir}/nginx.pid;
{extra.replace("{d}", self.dir)}
events {{ worker_connections 16; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/tmp; proxy_temp_path {self.dir}/tmp; fastcgi_temp_path {self.dir}/tmp;
    uwsgi_temp_path {self.dir}/tmp; scgi_temp_path {self.dir}/tmp;
    server {{ listen 127.0.0.1:{_free_port()}; return 204; }}
}}
""")
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf"),
                                      "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def worker(self, ready=None, timeout=10.0):
        """The pid of the one worker process (a child of the master), once ``ready(pid)`` holds:
        a worker exists before ngx_worker_process_init() has set its rlimit, user and working
        directory (under emulation long enough for a signal to find it half made)."""
        end = time.time() + timeout
        while time.time() < end:
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            try:
                if kids and (ready is None or ready(kids[0])):
                    return kids[0]
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited: {self.proc.stderr.read().decode()}")
            time.sleep(0.05)
        raise AssertionError("nginx started no (ready) worker")

    def wait_log(self, text, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end:
            with open(self.log) as f:
                got = f.read()
            if text in got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in {self.log}:\n{got[-2000:]}")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGQUIT)  # graceful: the master ends its workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        subprocess.run(["rm", "-rf", "--one-file-system", self.dir], check=False)


@pytest.fixture
def nginx_factory(saved_sysctls):
    L.require_installed(NGINX, "nginx")
    made = []

    def make(extra=""):
        n = Nginx(extra)
        made.append(n)
        return n
    try:
        yield make
    finally:
        for n in made:
            n.stop()


def _crashes(log):
    r = L.coredoctor("crashes", "--source", "syslog", "--log", log, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_worker_fault_without_core_is_listed_from_error_log(nginx_factory):
    # the worker drops to nobody: not dumpable under fs.suid_dumpable=0, so the kernel dumps no core
    L.set_sysctls({"kernel.core_pattern": "core", "kernel.core_uses_pid": 0, "fs.suid_dumpable": 0})
    n = nginx_factory()
    w = n.worker(ready=lambda pid: _uid(pid) == 65534)   # after its setuid(nobody)
    os.kill(w, signal.SIGSEGV)
    line = n.wait_log(f"worker process {w} exited on signal 11")
    assert f"worker process {w} exited on signal 11 (core dumped)" not in line
    doc = _crashes(n.log)
    rec = next(c for c in doc["crashes"] if c["pid"] == w)
    assert rec["signal"] == "SIGSEGV" and rec["sources"] == [f"daemon-log:{n.log}"]
    assert rec["supervisor"]["program"] == "nginx" and rec["supervisor"]["dumped"] is False
    assert rec["core"]["status"] == "missing" and rec["core"]["wcoredump"] is False
    assert "no core was dumped" in rec["core"]["why"]


def test_worker_core_dumped_is_wcoredump(nginx_factory):
    # workers as root with a core limit and a working directory: the kernel dumps, the master says so
    L.set_sysctls({"kernel.core_pattern": "core", "kernel.core_uses_pid": 0, "fs.suid_dumpable": 0})
    n = nginx_factory("user root; worker_rlimit_core 64m; working_directory {d};")
    w = n.worker(ready=lambda pid: os.readlink(f"/proc/{pid}/cwd") == n.dir)   # its chdir comes last
    os.kill(w, signal.SIGSEGV)
    n.wait_log(f"worker process {w} exited on signal 11 (core dumped)")
    doc = _crashes(n.log)
    rec = next(c for c in doc["crashes"] if c["pid"] == w)
    assert rec["supervisor"]["dumped"] is True and rec["core"]["wcoredump"] is True
    assert rec["core"]["status"] != "missing" or "the kernel wrote it" in rec["core"]["why"]
    assert os.path.exists(os.path.join(n.dir, "core"))  # the kernel's own word: the core is there
