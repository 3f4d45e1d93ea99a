"""The real Open vSwitch (Debian openvswitch-switch), started relocated in its own network
namespace as ../shared/reference/real-components.md describes, with --ovs-user."""
import os
import re
import shutil
import subprocess
import tempfile
import time

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


class OVS:
    def __init__(self):
        self.w = tempfile.mkdtemp(prefix="cd-ovs-", dir="/tmp")
        os.chmod(self.w, 0o755)
        self.cores = os.path.join(self.w, "cores")
        os.mkdir(self.cores)
        os.chmod(self.cores, 0o1777)
        os.makedirs(os.path.join(self.w, "etc", "openvswitch"))
        os.mkdir(os.path.join(self.w, "cwd"))
        self.env = dict(os.environ, OVS_RUNDIR=f"{self.w}/run", OVS_LOGDIR=f"{self.w}/log",
                        OVS_DBDIR=f"{self.w}/db", OVS_SYSCONFDIR=f"{self.w}/etc")
        self.created = []
        if subprocess.run(["getent", "group", "hugetlbfs"], capture_output=True).returncode != 0:
            subprocess.run(["groupadd", "-r", "hugetlbfs"], check=True)
            self.created.append(("group", "hugetlbfs"))
        if subprocess.run(["id", "openvswitch"], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", "-G", "hugetlbfs", "openvswitch"],
                           check=True)
            self.created.append(("user", "openvswitch"))

    def start(self):
        r = subprocess.run(["unshare", "--net", "--fork", "--", OVS_CTL, "--system-id=random",
                            "--no-record-hostname", f"--daemon-cwd={self.w}/cwd",
                            "--ovs-user=openvswitch:hugetlbfs", "start"],
                           env=self.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return self.wait_worker()

    def stop(self):
        subprocess.run([OVS_CTL, "stop"], env=self.env, capture_output=True, timeout=120)

    def pidfile(self, name="ovs-vswitchd"):
        try:
            with open(f"{self.w}/run/{name}.pid") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def wait_worker(self, other_than=None, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid = self.pidfile()
            if pid and pid != other_than and os.path.exists(f"/proc/{pid}"):
                with open(f"/proc/{pid}/status") as f:
                    if re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1) != "0":
                        return pid
            time.sleep(0.1)
        raise AssertionError("ovs-vswitchd did not come up")

    def log(self):
        try:
            with open(f"{self.w}/log/ovs-vswitchd.log") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the ovs-vswitchd log:\n{self.log()[-2000:]}")

    def cleanup(self):
        self.stop()
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pid = self.pidfile(name)
            if pid:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        for kind, name in reversed(self.created):
            subprocess.run(["userdel" if kind == "user" else "groupdel", name], capture_output=True)
        if ("user", "openvswitch") in self.created:
            subprocess.run(["groupdel", "openvswitch"], capture_output=True)
        shutil.rmtree(self.w, ignore_errors=True)
