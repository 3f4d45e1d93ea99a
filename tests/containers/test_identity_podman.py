"""Container identity under real podman (issue 11, part A): a Debian root made by mmdebstrap, run
with --rootfs and imported as an image (overlay storage), with names; check --container finds
every process of each by name, full id and 12-hex prefix, with the right container object; a
real fault inside a container; crashes lists it with its container. Every container and image
made here is removed, even on failure.

(podman as this machine runs it: runc, --cgroup-manager=cgroupfs, explicit nofile/nproc limits:
../shared/reference/real-components.md.)"""
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

CACHE = "/var/tmp/coredoctor-ctid"
ROOTFS_TAR = os.path.join(CACHE, "bookworm-minbase.tar")

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="podman as root"),
              pytest.mark.skipif(shutil.which("podman") is None or shutil.which("runc") is None,
                                 reason="podman and runc are not installed")]

CRASHER = r"""
#include <signal.h>
#include <unistd.h>
static void boom(int s) { (void)s; *(volatile int *)0 = 1; }   /* a real fault: NULL write */
int main(void) { signal(SIGUSR1, boom); for (;;) pause(); }
"""


def podman(*args, check=True, timeout=120, **kw):
    r = subprocess.run(["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", *args],
                       capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}: rc {r.returncode}: {r.stderr[-2000:]}")
    return r


def _rootfs_tar():
    """The Debian root, made once and kept under /var/tmp (about 45 s the first time)."""
    if os.path.exists(ROOTFS_TAR):
        return ROOTFS_TAR
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is missing (apt-get install mmdebstrap)")
    os.makedirs(CACHE, exist_ok=True)
    part = os.path.join(CACHE, "bookworm-minbase.part.tar")
    r = subprocess.run(["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase", "bookworm", part],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail(f"mmdebstrap failed: {r.stderr[-2000:]}")
    os.replace(part, ROOTFS_TAR)
    return ROOTFS_TAR


def _cgroup_pids(cid):
    """Every pid whose /proc/PID/cgroup names libpod-<cid> (read here, not by coredoctor)."""
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cgroup") as f:
                    if f"libpod-{cid}" in f.read():
                        out.add(int(d))
            except OSError:
                pass
    return out


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _wait(pred, timeout=20.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _inspect(name):
    d = json.loads(podman("inspect", name).stdout)[0]
    return {"id": d["Id"], "pid": d["State"]["Pid"], "conmon": d["State"]["ConmonPid"]}


@pytest.fixture(scope="module")
def world():
    tag = uuid.uuid4().hex[:8]
    work = os.path.join("/var/tmp", f"coredoctor-ctid-run-{tag}")
    image = f"localhost/cdt-ctid-{tag}"
    names = {"rootfs": f"cdt-rootfs-{tag}", "image": f"cdt-image-{tag}"}
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
        started = time.time()
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        lim = ["--ulimit", f"nofile=1024:{hard}",
               "--ulimit", "nproc=4096:4096", "--ulimit", "core=-1:-1"]
        loop = "while :; do /usr/local/bin/cd-crasher; sleep 0.2; done"
        podman("run", "-d", "--name", names["rootfs"], *lim, "--rootfs", root, "sh", "-c", loop)
        made.append(("container", names["rootfs"]))
        podman("run", "-d", "--name", names["image"], *lim, image, "sh", "-c", "sleep 600 & sleep 601")
        made.append(("container", names["image"]))
        info = {k: _inspect(n) for k, n in names.items()}
        crasher = _wait(lambda: [p for p in _cgroup_pids(info["rootfs"]["id"]) if _comm(p) == "cd-crasher"],
                        what="the crasher in the --rootfs container")
        _wait(lambda: len([p for p in _cgroup_pids(info["image"]["id"]) if _comm(p) == "sleep"]) == 2,
              what="the image container's two sleeps")
        yield {"names": names, "info": info, "image": image, "crasher": crasher[0], "root": root,
               "started": started}
    finally:
        for kind, what in reversed(made):
            if kind == "container":
                podman("rm", "-f", "-t", "0", what, check=False)
            else:
                podman("rmi", "-f", what, check=False)
        shutil.rmtree(work, ignore_errors=True)


def _check(*args):
    r = L.coredoctor("check", *args)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("which", ["rootfs", "image"])
def test_check_container_by_name_id_and_prefix(world, which):
    name, info = world["names"][which], world["info"][which]
    expected = _cgroup_pids(info["id"])
    assert info["pid"] in expected and info["conmon"] not in expected
    for sel in (name, info["id"], info["id"][:12]):
        doc = _check("--container", sel, "--json")
        got = {t["pid"] for t in doc["targets"]}
        # the processes alive then and now (the crasher loop's sleep comes and goes)
        assert info["pid"] in got and got <= expected | _cgroup_pids(info["id"]), (sel, got, expected)
        for t in doc["targets"]:
            c = t["container"]
            assert (c["runtime"], c["id"], c["name"]) == ("podman", info["id"], name), sel
            assert c["image"] == (f"{world['image']}:latest" if which == "image" else None), c
            assert (c["pod"], c["namespace"]) == (None, None)
    if which == "image":
        assert {t["comm"] for t in doc["targets"]} == {"sh", "sleep"}
        assert len(doc["targets"]) == 3


def test_text_report_names_the_container_and_all_groups_by_it(world):
    name, info = world["names"]["image"], world["info"]["image"]
    r = L.coredoctor("check", "--pid", str(info["pid"]))
    assert r.returncode in (0, 1), r.stderr
    first = r.stdout.split("\n")[0]
    assert f"(pid {info['pid']}, in podman container {name} ({info['id'][:12]}))" in first
    r = L.coredoctor("check", "--all")
    assert r.returncode in (0, 1), r.stderr
    heads = [line for line in r.stdout.split("\n") if line.startswith("== ")]
    assert heads[0].startswith("== host: ")
    assert any(h.startswith(f"== podman container {name} ({info['id'][:12]}): ") for h in heads[1:])
    assert any(h.startswith(f"== podman container {world['names']['rootfs']} ") for h in heads[1:])
    assert all(len(line) <= 100 for line in r.stdout.split("\n"))
    doc = _check("--all", "--json")
    by_pid = {t["pid"]: t for t in doc["targets"]}
    assert by_pid[info["pid"]]["container"]["name"] == name
    assert by_pid[os.getpid()]["container"] is None            # this test runs on the host


def test_unknown_container_is_one_line_and_exit_2(world):
    for args in (["check", "--container", "cdt-no-such"], ["check", "--container", world["info"]["image"]["id"][:11]],
                 ["trace", "--container", "cdt-no-such"], ["snapshot", "--container", "cdt-no-such"]):
        r = L.coredoctor(*args)
        assert r.returncode == 2 and r.stdout == "", (args, r)
        assert r.stderr.count("\n") == 1 and "no container" in r.stderr, (args, r.stderr)


def test_a_real_fault_in_a_container_is_a_crash_of_that_container(world, loud_kernel_log):
    name, info = world["names"]["rootfs"], world["info"]["rootfs"]
    pid = world["crasher"]
    L.kernel_log_room(1)
    t0 = time.time()
    os.kill(pid, signal.SIGUSR1)                   # its handler writes through NULL: SIGSEGV
    _wait(lambda: not os.path.exists(f"/proc/{pid}") or _comm(pid) != "cd-crasher", what="the crash")
    again = _wait(lambda: [p for p in _cgroup_pids(info["id"]) if _comm(p) == "cd-crasher" and p != pid],
                  what="the restarted crasher")
    # the kernel saw the fault (its line names the host pid)
    r = L.coredoctor("crashes", "--json", "--source", "kmsg", "--container", name)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    mine = [c for c in doc["crashes"] if c["pid"] == pid]
    assert len(mine) == 1, doc["crashes"]
    rec = mine[0]
    assert rec["signal"] == "SIGSEGV" and rec["time"] >= t0 - 2
    assert (rec["container"]["runtime"], rec["container"]["id"], rec["container"]["name"]) == \
        ("podman", info["id"], name)
    assert rec["container_from"] == f"the cgroup of the running instance pid {again[0]}"
    assert all(c["container"]["id"] == info["id"] for c in doc["crashes"])
    # an older crash of a program of that name (another container, or the host) is not this one's
    assert all(c["time"] is None or c["time"] >= world["started"] - 1 for c in doc["crashes"]), doc["crashes"]
    # the other container had no crash: named as such, exit 2
    r = L.coredoctor("crashes", "--source", "kmsg", "--container", world["names"]["image"])
    assert r.returncode == 2 and "has a crash on record" in r.stderr
