"""Where a containerized process's core really lands: real podman (runc, cgroupfs), a Debian
rootfs made by mmdebstrap used both as --rootfs (a bind of a host directory) and imported as an
image (the overlay storage driver). For each container: `check` first, then a real SIGSEGV from
the host; the kernel agrees, the core is at the host path check gave, and it is gone when check
said it would not survive. Every container and image made here is removed, sysctls restored."""

import json
import os
import resource
import shutil
import subprocess
import time
import uuid

import pytest

import lab as L

ROOTFS_CACHE = "/var/tmp/coredoctor-ctland/rootfs"
IMAGE = "localhost/cd-landing-test"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]


def _podman(*args, check=True, timeout=120):
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def rootfs():
    if os.geteuid() != 0:
        pytest.skip("runs real containers: run as root")
    for tool in ("podman", "runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install podman runc mmdebstrap uidmap)")
    if not os.path.isdir(os.path.join(ROOTFS_CACHE, "usr/bin")):
        tmp = ROOTFS_CACHE + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.dirname(ROOTFS_CACHE), exist_ok=True)
        subprocess.run(["mmdebstrap", "--variant=minbase", "bookworm", tmp], check=True,
                       capture_output=True, timeout=600)
        os.rename(tmp, ROOTFS_CACHE)
    return ROOTFS_CACHE


@pytest.fixture(scope="module")
def image(rootfs):
    made = subprocess.run([*PODMAN, "image", "exists", IMAGE]).returncode != 0
    if made:
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([*PODMAN, "import", "-", IMAGE], stdin=tar.stdout, check=True, capture_output=True,
                       timeout=300)
        tar.wait()
    try:
        yield IMAGE
    finally:
        if made:
            _podman("image", "rm", "-f", IMAGE, check=False)


class Container:
    """A detached container whose pid 1 (sh) runs `sleep` as its pid 2 -- the process that
    crashes (a pid-namespace init ignores a SIGSEGV sent from inside) -- and then waits for
    /release to exist before it exits."""

    def __init__(self, *opts, rootfs=None, image=None):
        self.name = f"cd-landing-{uuid.uuid4().hex[:10]}"
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        script = "sleep 1000 & wait; while [ ! -e /release ]; do sleep 0.1; done"
        where = ["--rootfs", rootfs] if rootfs else [image]
        _podman("run", "-d", "--name", self.name, "--ulimit", f"nofile=1024:{hard}",
                "--ulimit", "nproc=4096:4096", *opts, *where, "sh", "-c", script)
        self.init = int(_podman("inspect", "-f", "{{.State.Pid}}", self.name).stdout)
        self.pid = self._child()
        with open(f"/proc/{self.pid}/status") as f:   # its pid in the container's namespace (%p)
            self.nspid = int(next(x for x in f if x.startswith("NSpid:")).split()[-1])

    def _child(self):
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with open(f"/proc/{self.init}/task/{self.init}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            for k in kids:
                try:
                    with open(f"/proc/{k}/comm") as f:
                        if f.read().strip() == "sleep":
                            return k
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no sleep under pid {self.init}")

    def inspect(self, fmt):
        return _podman("inspect", "-f", fmt, self.name).stdout.strip()

    def crash(self):
        """SIGSEGV from the host; returns when the process is gone (the core, if any, is written
        before the process can be reaped)."""
        os.kill(self.pid, 11)
        deadline = time.time() + 20
        while os.path.exists(f"/proc/{self.pid}") and time.time() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{self.pid}"), "the crashed process did not go away"

    def release(self):
        _podman("exec", self.name, "touch", "/release", check=False)

    def exists(self):
        return subprocess.run([*PODMAN, "container", "exists", self.name]).returncode == 0

    def remove(self):
        _podman("rm", "-f", "-t", "0", self.name, check=False)


@pytest.fixture
def containers():
    made = []
    try:
        yield lambda *a, **kw: made.append(Container(*a, **kw)) or made[-1]
    finally:
        for c in made:
            c.remove()


def _check(pid):
    r = L.coredoctor("check", "--json", str(pid))
    assert r.returncode in (0, 1, 2), r.stderr
    return json.loads(r.stdout)["targets"][0]


def _wait_file(path, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return True
        time.sleep(0.05)
    return False


def test_rootfs_core_lands_in_the_host_directory(rootfs, containers, saved_sysctls):
    L.set_sysctls({"kernel.core_pattern": "/tmp/cdland.%e.%p", "kernel.core_uses_pid": "0"})
    c = containers("--ulimit", "core=-1:-1", rootfs=rootfs)
    t = _check(c.pid)
    d = t["core_destination"]
    assert t["dumps"] is True
    assert c.nspid != c.pid
    assert d["container_path"] == f"/tmp/cdland.sleep.{c.nspid}"   # %p: the pid in its own namespace
    assert d["host_path"] == f"{rootfs}/tmp/cdland.sleep.{c.nspid}"
    assert (d["landing"], d["survives"]) == ("bind", True)
    try:
        c.crash()
        assert _wait_file(d["host_path"]), f"no core at {d['host_path']}"
        assert os.stat(d["host_path"]).st_uid == d["owner"]["uid"] == 0
    finally:
        if os.path.exists(d["host_path"]):
            os.unlink(d["host_path"])  # this test's own core in the cached rootfs


def test_overlay_upper_layer_kept_until_rm(image, containers, saved_sysctls):
    L.set_sysctls({"kernel.core_pattern": "/tmp/cdland.%e.%p", "kernel.core_uses_pid": "0"})
    c = containers("--ulimit", "core=-1:-1", image=image)
    upper = c.inspect("{{.GraphDriver.Data.UpperDir}}")
    t = _check(c.pid)
    d = t["core_destination"]
    assert t["dumps"] is True and d["landing"] == "overlay-upper"
    assert d["host_path"] == f"{upper}/tmp/cdland.sleep.{c.nspid}"
    assert d["warning"] and upper in d["warning"]
    c.crash()
    assert _wait_file(d["host_path"]), f"no core at {d['host_path']}"
    c.remove()
    assert not os.path.exists(d["host_path"]), "the upper layer outlived `podman rm`"


def test_no_core_ulimit_is_refused(image, containers, saved_sysctls):
    L.set_sysctls({"kernel.core_pattern": "/tmp/cdland.%e.%p", "kernel.core_uses_pid": "0"})
    c = containers("--ulimit", "core=0:0", image=image)
    t = _check(c.pid)
    assert t["dumps"] is False and t["blocking_gate"] == "rlimit-core"
    gate = next(g for g in t["gates"] if g["id"] == "rlimit-core")
    assert gate["origin"]["kind"] == "container" and "RLIMIT_CORE soft 0 hard 0" in gate["origin"]["summary"]
    assert gate["origin"]["file"].endswith("/userdata/config.json")
    assert any("--ulimit core=-1:-1" in c for f in t["fixes"] for c in f["commands"])
    c.crash()
    assert not _wait_file(t["core_destination"]["host_path"], timeout=1.0)


def test_tmpfs_core_is_not_on_a_host_disk(image, containers, saved_sysctls):
    L.set_sysctls({"kernel.core_pattern": "/scratch/cdland.%e.%p", "kernel.core_uses_pid": "0"})
    c = containers("--ulimit", "core=-1:-1", "--tmpfs", "/scratch:mode=1777", image=image)
    t = _check(c.pid)
    d = t["core_destination"]
    assert t["dumps"] is True
    assert (d["landing"], d["host_path"], d["survives"]) == ("memory", None, False)
    via_proc = f"/proc/{c.init}/root/scratch/cdland.sleep.{c.nspid}"
    c.crash()
    assert _wait_file(via_proc), "the core is not in the container's tmpfs"
    c.release()
    deadline = time.time() + 20
    while os.path.exists(f"/proc/{c.init}") and time.time() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(via_proc)


def _gone(c, timeout=30.0):
    deadline = time.time() + timeout
    while c.exists() and time.time() < deadline:
        time.sleep(0.1)
    return not c.exists()


def test_rm_core_is_gone_with_the_container(image, containers, saved_sysctls):
    L.set_sysctls({"kernel.core_pattern": "/tmp/cdland.%e.%p", "kernel.core_uses_pid": "0"})
    c = containers("--rm", "--ulimit", "core=-1:-1", image=image)
    t = _check(c.pid)
    d = t["core_destination"]
    assert t["dumps"] is True and d["landing"] == "overlay-upper"
    assert d["survives"] is False and "--rm" in d["warning"]
    c.crash()
    assert _wait_file(d["host_path"]), f"no core at {d['host_path']}"
    c.release()
    assert _gone(c), "podman did not remove the --rm container"
    assert not os.path.exists(d["host_path"]), "check said the core would not survive the container"


def test_uidmap_owner_and_mapped_root_refused(rootfs, containers, saved_sysctls):
    ids = ("--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536", "--ulimit", "core=-1:-1")
    L.set_sysctls({"kernel.core_pattern": "/tmp/cdland.%e.%p", "kernel.core_uses_pid": "0"})
    c = containers(*ids, rootfs=rootfs)
    t = _check(c.pid)
    d = t["core_destination"]
    assert t["dumps"] is True and d["host_path"] == f"{rootfs}/tmp/cdland.sleep.{c.nspid}"
    assert d["owner"] == {"uid": 200000, "gid": 200000, "uid_in_container": 0, "gid_in_container": 0}
    try:
        c.crash()
        assert _wait_file(d["host_path"]), f"no core at {d['host_path']}"
        st = os.stat(d["host_path"])
        assert (st.st_uid, st.st_gid) == (200000, 200000)
    finally:
        if os.path.exists(d["host_path"]):
            os.unlink(d["host_path"])
    # the container's root is host uid 200000: the rootfs's / (host root's, 0755) is not its to write,
    # CAP_DAC_OVERRIDE in its namespace does not count for an unmapped owner
    L.set_sysctls({"kernel.core_pattern": "cdland-rel"})
    c2 = containers(*ids, rootfs=rootfs)
    t = _check(c2.pid)
    assert t["dumps"] is False and t["blocking_gate"] == "core-dir"
    gate = next(g for g in t["gates"] if g["id"] == "core-dir")
    assert "uid 0 in the container's user namespace" in gate["evidence"]
    c2.crash()
    assert not _wait_file(f"{rootfs}/cdland-rel", timeout=1.0)


HELPER = """#!/bin/sh
echo "$@" > {out}.tmp
cat > /dev/null
mv {out}.tmp {out}
"""


def test_pipe_helper_runs_on_the_host(rootfs, containers, saved_sysctls, tmp_path):
    out = str(tmp_path / "args")
    helper = tmp_path / "helper"
    helper.write_text(HELPER.format(out=out))
    helper.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    L.set_sysctls({"kernel.core_pattern": f"|{helper} %p %P %u %h"})
    c = containers("--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536", rootfs=rootfs)
    t = _check(c.pid)
    gate = next(g for g in t["gates"] if g["id"] == "handler-policy")
    assert "the helper runs on the host" in gate["evidence"]
    assert f"%p={c.nspid} " in gate["evidence"] and f"%P={c.pid} " in gate["evidence"]
    assert "%u=200000 " in gate["evidence"]
    c.crash()
    assert _wait_file(out), "the pipe helper never ran"
    with open(out) as f:
        words = f.read().split()
    assert words == [str(c.nspid), str(c.pid), "200000", c.inspect("{{.Config.Hostname}}")]


def test_canary_inside_the_container_lands_where_check_said(image, containers, saved_sysctls):
    L.set_sysctls({"kernel.core_pattern": "/tmp/cdland.%e.%p", "kernel.core_uses_pid": "0"})
    c = containers("--ulimit", "core=-1:-1", image=image)
    r = L.coredoctor("canary", "--like", str(c.pid), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    pred = rep["predicted"]["core_destination"]
    upper = c.inspect("{{.GraphDriver.Data.UpperDir}}")
    assert pred["landing"] == "overlay-upper" and pred["host_path"].startswith(upper + "/tmp/cdland.")
    assert rep["agrees"] is True and rep["core"]["path"] == pred["host_path"]
    assert rep["core"]["verified"] is True and rep["core"]["removed"] is True


def _modes():
    try:
        with open("/proc/sys/kernel/core_modes") as f:
            return f.read().split()
    except OSError:
        return []


@pytest.mark.skipif("socket" not in _modes(), reason="no socket core_pattern on this kernel (6.16+)")
def test_socket_pattern_is_served_on_the_host(image, containers, saved_sysctls):
    from test_socket_real import Server  # tests/crashlab: the socket lab's server and its event reader
    path = f"/run/cdland-{uuid.uuid4().hex[:8]}.sock"
    srv = Server("read", path)
    try:
        L.set_sysctls({"kernel.core_pattern": f"@{path}"})
        c = containers("--ulimit", "core=0:0", image=image)   # socket mode ignores RLIMIT_CORE
        t = _check(c.pid)
        assert t["dumps"] is True, t["verdict"]
        gate = next(g for g in t["gates"] if g["id"] == "handler-policy")
        assert "the kernel connects from init's root, on the host" in gate["evidence"]
        c.crash()
        done = [e for e in srv.events_until("done") if e["event"] == "done"]
        assert done and done[0]["bytes"] > 0 and done[0]["head"] == "7f454c46", done
    finally:
        srv.close()
        if os.path.exists(path):
            os.unlink(path)
