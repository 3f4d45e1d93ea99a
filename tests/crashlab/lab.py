"""Crash-lab harness: real processes in a state, coredoctor's prediction, then a real fault."""
import glob
import json
import os
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src")
VICTIM = os.path.join(HERE, "victim.py")

SYSCTLS = {
    "fs.suid_dumpable": "/proc/sys/fs/suid_dumpable",
    "kernel.core_pattern": "/proc/sys/kernel/core_pattern",
    "kernel.core_pipe_limit": "/proc/sys/kernel/core_pipe_limit",
    "kernel.core_uses_pid": "/proc/sys/kernel/core_uses_pid",
}


def read_sysctl(name):
    with open(SYSCTLS[name]) as f:
        return f.read().rstrip("\n")


def write_sysctl(name, value):
    with open(SYSCTLS[name], "w") as f:
        f.write(str(value))


def set_sysctls(values):
    """Apply in the safe order: pattern before suid_dumpable."""
    for name in ("kernel.core_pattern", "kernel.core_uses_pid", "kernel.core_pipe_limit", "fs.suid_dumpable"):
        if name in values:
            write_sysctl(name, values[name])


def coredoctor(*args, env_extra=None, check=False):
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "coredoctor", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=check)


class Victim:
    def __init__(self, spec, cwd=None, wrap=()):
        """*wrap*: a command prefix that ends by exec'ing the victim in the same process (e.g.
        unshare without --fork)."""
        self.p = subprocess.Popen([*wrap, sys.executable, VICTIM, json.dumps(spec)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
        line = self.p.stdout.readline()
        if not line.startswith("READY"):
            err = self.p.stderr.read()
            self.p.kill()
            raise RuntimeError(f"victim did not start: {line!r} {err}")
        self.pid = self.p.pid
        self.status = None

    def check(self, signal="SIGSEGV", how=None, env_extra=None):
        args = ["check", "--pid", str(self.pid), "--json", "--signal", signal]
        if how:
            args += ["--how", how]
        r = coredoctor(*args, env_extra=env_extra)
        assert r.returncode in (0, 1), f"check failed rc={r.returncode}: {r.stderr}"
        doc = json.loads(r.stdout)
        t = doc["targets"][0]
        assert r.returncode == (0 if t["dumps"] is True else 1)
        return t

    def send(self, cmd):
        try:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass

    def wait(self, timeout=30):
        """Reap with waitpid to keep the raw status (Popen hides WCOREDUMP)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = status
                self.p.returncode = -1
                return status
            time.sleep(0.01)
        return None

    def alive_after(self, seconds=0.5):
        time.sleep(seconds)
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == self.pid:
            self.status = status
            self.p.returncode = -1
            return False
        return True

    def survives(self, timeout=30):
        """After a signal was sent: True if the process still answers (the signal was ignored,
        handled or left pending: ``kill()`` made it pending before the ping was written, and a
        pending unblocked signal is delivered before the process can run on to answer), False
        once it died -- then its raw status is in ``self.status``. Never a guess from a timer."""
        import select
        self.send("ping")
        deadline = time.time() + timeout
        while time.time() < deadline:
            r, _, _ = select.select([self.p.stdout], [], [], max(0.0, deadline - time.time()))
            if not r:
                break
            line = self.p.stdout.readline()
            if line.strip() == "pong":
                return True
            if line == "":  # EOF: it died; its real exit status, however long the dump takes
                if self.wait(timeout) is None:
                    raise AssertionError(f"pid {self.pid} closed its stdout but did not exit in {timeout}s")
                return False
        raise AssertionError(f"pid {self.pid} neither answered nor died within {timeout}s")

    def fault(self):
        self.send("fault")
        return self.wait()

    def kill(self, sig):
        os.kill(self.pid, sig)

    def close(self):
        if self.status is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
            self.wait(10)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass


def until(cond, what, timeout=15.0, step=0.1):
    """Poll *cond()* every *step* s until it returns something true, and return that; after
    *timeout* s an AssertionError saying what was waited for (*what*: text, or a callable that
    makes it then, to show the state at the timeout): a condition that never came is a failure,
    never a pass."""
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(step)


def children(pid):
    """The pids of *pid*'s children ([] once it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def wait_stable(path_glob, timeout=10.0):
    """Wait for a file matching *path_glob* to appear and stop growing; return (path, size)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        m = sorted(glob.glob(path_glob))
        if m:
            size = os.path.getsize(m[0])
            if last is not None and size == last and size > 0:
                return m[0], size
            last = size
        time.sleep(0.15)
    m = sorted(glob.glob(path_glob))
    return (m[0], os.path.getsize(m[0])) if m else (None, 0)


class SocketSink:
    """A unix stream listener that stores what each connection sends (the @ core_pattern server)."""

    def __init__(self, path, outdir):
        self.path, self.outdir = path, outdir
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.bind(path)
        os.chmod(path, 0o666)
        self.s.listen(8)
        self.n = 0
        self.t = threading.Thread(target=self._run, daemon=True)
        self._stop = False
        self.t.start()

    def _run(self):
        self.s.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.s.accept()
            except (socket.timeout, OSError):
                continue
            self.n += 1
            with c, open(os.path.join(self.outdir, f"sock-core.{self.n}"), "wb") as f:
                while True:
                    b = c.recv(1 << 16)
                    if not b:
                        break
                    f.write(b)

    def close(self):
        self._stop = True
        self.t.join(2)
        self.s.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def end(p, timeout=10):
    """End a process we started (a subprocess.Popen), by its pid: SIGTERM, SIGKILL if it is still
    there after *timeout* seconds; reaped either way."""
    p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def make_cores(labroot, name="cores"):
    """A sticky, world-writable directory for cores (like /tmp): every victim may dump into it."""
    d = os.path.join(labroot, name)
    os.mkdir(d)
    os.chmod(d, 0o1777)
    return d


def require_installed(path, package):
    """Real components: a missing one fails in CI (run-tests installs it) and skips elsewhere."""
    import pytest
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail(f"{package} is not installed: run-tests must install it")
        pytest.skip(f"{package} is not installed (apt-get install {package})")


def kernel_log_room(needed, burst=10, window=5.0, timeout=12.0):
    """Wait until *needed* more x86 fault lines fit in the kernel's rate limit: show_signal_msg()
    prints through its own printk_ratelimited() state (10 lines per 5 s, not tunable), so a
    test that looks for its crashes' lines must not follow a burst of other crashes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = time.clock_gettime(time.CLOCK_MONOTONIC)
        recent = 0
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        try:
            while True:
                try:
                    rec = os.read(fd, 8192)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                if not rec:
                    break
                head, _, body = rec.partition(b";")
                f = head.split(b",")
                if len(f) > 2 and (b": segfault at " in body or b"]: unhandled exception: " in body) and now - int(f[2]) / 1e6 < window + 0.3:
                    recent += 1
        finally:
            os.close(fd)
        if recent + needed <= burst - 1:
            return
        time.sleep(0.25)
