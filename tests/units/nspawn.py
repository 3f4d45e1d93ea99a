"""A real systemd for unit-level tests: a Debian root booted with systemd-nspawn (its own systemd
as the machine's pid 1), seen from the host. The root is cached in /var/tmp (debootstrap once,
~40 s); each test writes its units and programs into it and removes them again."""
import os
import shutil
import signal
import subprocess
import time

import lab as L

ROOTFS = "/var/tmp/coredoctor-units/rootfs"
NSPAWN = "/usr/bin/systemd-nspawn"


def ensure_rootfs():
    if os.path.exists(os.path.join(ROOTFS, "lib/systemd/systemd")):
        return ROOTFS
    if not shutil.which("debootstrap") or not os.path.exists(NSPAWN):
        return None
    tmp = ROOTFS + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(ROOTFS), exist_ok=True)
    r = subprocess.run(["debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus,python3",
                        "bookworm", tmp], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    os.rename(tmp, ROOTFS)
    return ROOTFS


def _ns_init(pid):
    """The descendant of *pid* that is the init of a new pid namespace (the machine's systemd)."""
    todo = L.children(pid)
    while todo:
        p = todo.pop(0)
        try:
            with open(f"/proc/{p}/status") as f:
                ns = next((ln.split()[1:] for ln in f if ln.startswith("NSpid:")), [])
            with open(f"/proc/{p}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if len(ns) > 1 and ns[-1] == "1" and comm == "systemd":
            return p
        todo += L.children(p)
    return None


class Machine:
    """``with Machine(files) as m``: *files* (path inside the root -> (text, mode)) are written
    before boot and removed afterwards (with every directory the test made)."""

    def __init__(self, files, dirs=(), name=None):
        self.root = ROOTFS
        self.name = name  # -M NAME (else nspawn names the machine after the directory: "rootfs")
        self.files = files
        self.dirs = list(dirs)  # (path, mode, uid, gid), made before boot, removed after
        self.made = []
        self.proc = None
        self.init = None
        self.had_run_dir = os.path.exists("/run/systemd/nspawn")
        self.log = open(os.path.join(os.path.dirname(ROOTFS), "nspawn.log"), "w")

    def host(self, path):
        return self.root + path

    def __enter__(self):
        try:
            for path, mode, uid, gid in self.dirs:
                self._mkdirs(path)
                os.chmod(self.host(path), mode)
                os.chown(self.host(path), uid, gid)
            for path, (text, mode) in self.files.items():
                self._mkdirs(os.path.dirname(path))
                with open(self.host(path), "w") as f:
                    f.write(text)
                os.chmod(self.host(path), mode)
                self.made.append(self.host(path))
            self.proc = subprocess.Popen([NSPAWN, "-D", self.root, *(["-M", self.name] if self.name else []),
                                          "--private-network", "--register=no",
                                          "--keep-unit", "-b", "--console=passive"],
                                         stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.time() + 60

            def init():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}")
                return _ns_init(self.proc.pid)
            self.init = L.until(init, "the machine's systemd (pid 1 of a new pid namespace)", 60)
            while True:
                r = self.run("systemctl", "is-system-running", "--wait", timeout=90)
                # "offline": systemctl found no /run/systemd/system yet (sd_booted()), a machine
                # entered before its systemd made it -- seen in CI under load; ask again
                if r.stdout.strip() not in ("", "offline") or time.time() > deadline:
                    break
                time.sleep(0.2)  # its bus is not there yet
            if r.stdout.strip() not in ("running", "degraded"):
                raise RuntimeError(f"the machine did not come up: {r.stdout} {r.stderr}")
            return self
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _mkdirs(self, path):
        parts = [p for p in path.split("/") if p]
        cur = ""
        for p in parts:
            cur += "/" + p
            if not os.path.exists(self.host(cur)):
                os.mkdir(self.host(cur))
                self.made.append(self.host(cur))

    def run(self, *argv, timeout=30):
        return subprocess.run(["nsenter", "-t", str(self.init), "-m", "-u", "-i", "-n", "-p", "--", *argv],
                              capture_output=True, text=True, timeout=timeout)

    def main_pid(self, unit, timeout=20):
        """The host pid of *unit*'s main process (after it has done what it does at start)."""
        def host_main():
            inner = int(self.run("systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip() or 0)
            return self.host_pid(inner) if inner else None
        return L.until(host_main, lambda: f"{unit}'s main process: {self.run('systemctl', 'status', unit).stdout}",
                       timeout, 0.2)

    def host_pid(self, inner):
        ns = os.readlink(f"/proc/{self.init}/ns/pid")
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{d}/ns/pid") != ns:
                    continue
                with open(f"/proc/{d}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:") and int(line.split()[-1]) == inner:
                            return int(d)
            except (OSError, ValueError):
                continue
        return None

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            if self.init:
                try:
                    os.kill(self.init, signal.SIGRTMIN + 4)  # systemd: poweroff
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for p in reversed(self.made):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                os.unlink(p)
        if not self.had_run_dir:  # systemd-nspawn's locks and propagation directories
            shutil.rmtree("/run/systemd/nspawn", ignore_errors=True)
        self.log.close()
        return False
