"""crashes looks for a container's core at the host path of that time (issue 11): real podman
(runc, cgroupfs), a Debian root with a static crasher used as --rootfs and imported as an image
(overlay storage), a file core_pattern, a real fault (a NULL write) in the container. `crashes
--json` lists the crash with its container and the core at its host path (the rootfs directory,
the overlay upper layer), found; a --rm container whose main process crashed is removed by podman
with its upper layer: the crash is still tied to it (podman's events log) and the core is said
not found, and why. Every container and image made here is removed, sysctls restored."""
import json
import os
import resource
import shutil
import signal
import subprocess
import time
import uuid

import pytest

import lab as L
from test_identity_podman import CRASHER, _cgroup_pids, _comm, _rootfs_tar, _wait, podman

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="podman as root"),
              pytest.mark.skipif(shutil.which("podman") is None or shutil.which("runc") is None,
                                 reason="podman and runc are not installed")]

PATTERN = "/tmp/cdcr.%e.%p"


@pytest.fixture(scope="module")
def world():
    tag = uuid.uuid4().hex[:8]
    work = os.path.join("/var/tmp", f"coredoctor-ctcr-run-{tag}")
    image = f"localhost/cdt-ctcr-{tag}"
    made = []
    try:
        root = os.path.join(work, "root")
        os.makedirs(root)
        subprocess.run(["tar", "-C", root, "--numeric-owner", "-xf", _rootfs_tar()], check=True, timeout=300)
        src = os.path.join(work, "crasher.c")
        with open(src, "w") as f:
            f.write(CRASHER)
        subprocess.run(["gcc", "-static", "-O0", "-o", os.path.join(root, "usr/local/bin/cd-crasher"), src],
                       check=True, capture_output=True, timeout=120)
        with open(os.path.join(work, "root.tar"), "wb") as out:
            subprocess.run(["tar", "-C", root, "-c", "."], stdout=out, check=True, timeout=300)
        with open(os.path.join(work, "root.tar"), "rb") as inp:
            podman("import", "-", image, stdin=inp, timeout=600)
        made.append(("image", image))
        yield {"tag": tag, "root": root, "image": image, "made": made}
    finally:
        for kind, what in reversed(made):
            if kind == "container":
                podman("rm", "-f", "-t", "0", what, check=False)
            else:
                podman("rmi", "-f", what, check=False)
        shutil.rmtree(work, ignore_errors=True)


def _limits():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["--ulimit", f"nofile=1024:{hard}", "--ulimit", "nproc=4096:4096", "--ulimit", "core=-1:-1"]


def _run(world, name, *args):
    world["made"].append(("container", name))
    podman("run", "-d", "--name", name, *_limits(), *args)
    d = json.loads(podman("inspect", name).stdout)[0]
    return d["Id"], d["State"]["Pid"], d["GraphDriver"]["Data"].get("UpperDir")


def _nspid(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(x for x in f if x.startswith("NSpid:")).split()[-1])


def _crashes(*args):
    r = L.coredoctor("crashes", "--json", "--source", "kmsg", *args)
    if r.returncode != 0:  # what the records of the crasher said, unfiltered (a failure is explained)
        every = L.coredoctor("crashes", "--json", "--source", "kmsg")
        try:
            recs = [c for c in json.loads(every.stdout)["crashes"] if c.get("comm") == "cd-crasher"][:4]
        except (ValueError, KeyError):
            recs = every.stderr
        raise AssertionError(f"{r.stderr.strip()}; the crasher's newest records: {json.dumps(recs)[:6000]}")
    return json.loads(r.stdout)


LOOP = "while :; do /usr/local/bin/cd-crasher; sleep 0.2; done"


@pytest.mark.parametrize("how", ["image", "rootfs"])
def test_crashes_finds_the_containers_core_at_its_host_path(world, how, saved_sysctls, loud_kernel_log):
    L.set_sysctls({"kernel.core_pattern": PATTERN, "kernel.core_uses_pid": "0"})
    name = f"cdt-ctcr-{how}-{world['tag']}"
    where = [world["image"]] if how == "image" else ["--rootfs", world["root"]]
    cid, _init, upper = _run(world, name, *where, "sh", "-c", LOOP)
    pid = _wait(lambda: [p for p in _cgroup_pids(cid) if _comm(p) == "cd-crasher"], what="the crasher")[0]
    nspid = _nspid(pid)
    assert nspid != pid
    base = upper if how == "image" else world["root"]
    expected = f"{base}/tmp/cdcr.cd-crasher.{nspid}"
    L.kernel_log_room(1)
    t0 = time.time()
    os.kill(pid, signal.SIGUSR1)           # its handler writes through NULL: SIGSEGV, a real fault
    _wait(lambda: not os.path.exists(f"/proc/{pid}") or _comm(pid) != "cd-crasher", what="the crash")
    _wait(lambda: [p for p in _cgroup_pids(cid) if _comm(p) == "cd-crasher" and p != pid], what="the restart")
    try:
        _wait(lambda: os.path.exists(expected) and os.path.getsize(expected) > 0, what=f"the core at {expected}")
        doc = _crashes("--container", name)
        mine = [c for c in doc["crashes"] if c["pid"] == pid]
        assert len(mine) == 1, doc["crashes"]
        rec = mine[0]
        assert rec["time"] >= t0 - 2 and rec["signal"] == "SIGSEGV"
        assert (rec["container"]["id"], rec["container"]["name"]) == (cid, name)
        core = rec["core"]
        assert core["found"] is True and core["host_path"] == expected == core["path"], core
        assert core["status"] == "present" and core["size"] == os.path.getsize(expected)
        assert core["container_path"] == "/tmp/cdcr.cd-crasher.*"        # %p: the pid there is not logged
        assert core["landing"] == ("overlay-upper" if how == "image" else "bind")
        assert "today's core_pattern" in core["pattern_from"]
        assert rec["likely_reason"] is None
    finally:
        if how == "rootfs" and os.path.exists(expected):
            os.unlink(expected)            # this test's own core, in the rootfs kept for the module


def test_rm_container_gone_core_not_found_and_why(world, saved_sysctls, loud_kernel_log):
    L.set_sysctls({"kernel.core_pattern": PATTERN, "kernel.core_uses_pid": "0"})
    name = f"cdt-ctcr-rm-{world['tag']}"
    cid, init, upper = _run(world, name, "--rm", world["image"], "/usr/local/bin/cd-crasher")
    _wait(lambda: _comm(init) == "cd-crasher", what="the crasher as the container's main process")
    expected = f"{upper}/tmp/cdcr.cd-crasher.1"   # the main process is pid 1 of its namespace
    L.kernel_log_room(1)
    t0 = time.time()
    os.kill(init, signal.SIGUSR1)          # a real fault in the container's init: it dies with a core
    _wait(lambda: subprocess.run(["podman", "container", "exists", name]).returncode != 0, timeout=60,
          what="podman removing the --rm container")
    assert not os.path.exists(upper), "the upper layer outlived the --rm container"
    doc = _crashes("--container", name)
    mine = [c for c in doc["crashes"] if c["pid"] == init]
    assert len(mine) == 1, doc["crashes"]
    rec = mine[0]
    assert rec["time"] >= t0 - 2 and rec["signal"] == "SIGSEGV"
    assert (rec["container"]["runtime"], rec["container"]["id"], rec["container"]["name"]) == ("podman", cid, name)
    assert rec["container_from"].startswith("/run/libpod/events/events.log: podman container ")
    assert "died with exit code 139" in rec["container_from"] and "was removed at" in rec["container_from"]
    core = rec["core"]
    assert core["found"] is False and core["host_path"] is None, core
    assert core["status"] == "missing" and not os.path.exists(expected)
    assert "podman removed the container" in core["why"] and "upper layer" in core["why"], core["why"]
