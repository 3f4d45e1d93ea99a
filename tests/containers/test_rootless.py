"""Rootless podman, real (issue 11, "User namespaces: ... rootless podman"): a throw-away user
(useradd -m: its /etc/subuid and /etc/subgid lines come with it) runs podman (runc, cgroupfs,
--network none) with the Debian root of tests/containers as --rootfs in its home, a file
core_pattern, and a real fault (a NULL write) in the container, as container root and as
container uid 1000 (a subuid on the host). On this cgroup-v1 host the container's processes sit
in cgroup "/": the container is known by its conmon. Asserted: check --pid names it (runtime
podman, id, name, rootless, the owner uid); the kernel agrees with check -- the core is exactly
at the host path check gave, owned by the host uid check predicted (the fsuid through the user
namespace's uid_map); crashes --json lists the crash with its container and the core found
there. Without --ulimit core= the container keeps conmon's RLIMIT_CORE 0: check says no core,
blocked by rlimit-core, with the podman fix; the kernel writes none. Everything is removed
again: containers, the user's storage, its processes (by pid), the user, its home, its subid
lines, the runtime directory, and /etc's '-' backups that useradd/userdel rewrite."""
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid

import pytest

import lab as L
from test_identity_podman import CRASHER, _comm, _rootfs_tar, _wait

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="makes a user and runs podman as it"),
              pytest.mark.skipif(any(shutil.which(x) is None for x in ("podman", "runc", "runuser", "useradd",
                                                                         "newuidmap", "gcc")),
                                 reason="podman, runc, runuser, useradd, newuidmap (uidmap) and gcc are needed")]

PATTERN = "/tmp/cdrl.%e.%p"
LOOP = "while :; do /usr/local/bin/cd-crasher; sleep 0.2; done"
#: files useradd/userdel rewrite, with the backup copies they leave (restored as found)
ETC = ("passwd", "group", "shadow", "gshadow", "subuid", "subgid")
FUSE_OVERLAYFS = "/usr/bin/fuse-overlayfs"


def _subids(path, name):
    with open(path) as f:
        for line in f:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[0] == name:
                return int(parts[1]), int(parts[2])
    return None


def _uid_procs(uids):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid in uids:
                    out.append(int(d))
            except OSError:
                pass
    return out


def _children(pid, comm):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                if int(s[s.rindex(")") + 2:].split()[1]) == pid and _comm(int(d)) == comm:
                    out.append(int(d))
            except (OSError, ValueError):
                pass
    return out


def _nspid(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(x for x in f if x.startswith("NSpid:")).split()[-1])


class User:
    def __init__(self, name, uid, home, xdg, subuid):
        self.name, self.uid, self.home, self.xdg = name, uid, home, xdg
        #: the storages used: the default graph root with the vfs driver (named: installing
        #: fuse-overlayfs, or a storage.conf, would change podman's choice), and native rootless
        #: overlay in a graph root of its own (rootless_storage_path-like)
        self.stores = {"vfs": ("--storage-driver", "vfs"),
                       "overlay": ("--storage-driver", "overlay", "--root", f"{home}/ovl",
                                   "--runroot", f"{xdg}/ovl"),
                       "fuse": ("--storage-driver", "overlay", "--storage-opt",
                                f"overlay.mount_program={FUSE_OVERLAYFS}", "--root", f"{home}/fov",
                                "--runroot", f"{xdg}/fov")}
        #: the host uids its containers run as: its own and its subordinate range
        self.uids = range(uid, uid + 1) if subuid is None else \
            [uid, *range(subuid[0], subuid[0] + subuid[1])]

    def podman(self, *args, check=True, timeout=120, store="vfs"):
        env = ["env", "-i", f"HOME={self.home}", f"USER={self.name}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
               f"XDG_RUNTIME_DIR={self.xdg}"]
        r = subprocess.run(["runuser", "-u", self.name, "--", *env, "podman", "--runtime", "runc",
                            "--cgroup-manager=cgroupfs", *self.stores[store], *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:3])} as {self.name}: rc {r.returncode}: "
                               f"{r.stderr[-2000:]}")
        return r


def _cleanup(user, name, backups):
    """Everything the module made, in order; each step runs even when one before it failed."""
    errors = []
    if user is not None:
        for store in user.stores:
            for args in (("rm", "-f", "-a", "-t", "0"), ("system", "reset", "-f")):
                try:
                    user.podman(*args, check=False, timeout=180, store=store)
                except (OSError, subprocess.SubprocessError) as e:
                    errors.append(f"podman {args[0]} ({store}): {e}")
        # what is left of the user's processes (podman's pause process, conmons, a container's):
        # all started here, by this module's podman runs -- ended by pid, then reaped by init
        uids = set(user.uids)
        end = time.time() + 30
        while time.time() < end:
            left = _uid_procs(uids)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        else:
            errors.append(f"processes of uid {user.uid} or its subuids left: {_uid_procs(uids)}")
    try:
        pwd.getpwnam(name)
        exists = True
    except KeyError:
        exists = False
    if exists:
        r = subprocess.run(["userdel", "-r", name], capture_output=True, text=True)
        if r.returncode not in (0, 12):     # 12: the home could not be removed (done below)
            errors.append(f"userdel: {r.stderr.strip()}")
    for f in ("/etc/subuid", "/etc/subgid"):
        with open(f) as fh:
            lines = fh.readlines()
        keep = [x for x in lines if x.split(":", 1)[0] != name]
        if keep != lines:
            with open(f, "w") as fh:
                fh.writelines(keep)
    if user is not None:
        shutil.rmtree(user.home, ignore_errors=True)    # storage under it may hold subuid-owned files
        shutil.rmtree(user.xdg, ignore_errors=True)
    for f, data in backups.items():
        if data is None:
            if os.path.exists(f):
                os.unlink(f)
        else:
            with open(f, "rb") as fh:
                same = fh.read() == data[0]
            if not same:
                with open(f, "wb") as fh:
                    fh.write(data[0])
                os.chmod(f, data[1])
    return errors


@pytest.fixture(scope="module")
def rl():
    tag = uuid.uuid4().hex[:8]
    name = f"cdrl{tag}"
    backups = {}
    for base in ETC:
        f = f"/etc/{base}-"
        backups[f] = (open(f, "rb").read(), os.stat(f).st_mode & 0o7777) if os.path.exists(f) else None
    user = None
    try:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True, timeout=60)
        pw = pwd.getpwnam(name)
        subuid, subgid = _subids("/etc/subuid", name), _subids("/etc/subgid", name)
        if subuid is None or subgid is None:
            pytest.fail(f"useradd gave {name} no /etc/subuid or /etc/subgid range (SUB_UID_COUNT in login.defs)")
        xdg = f"/run/cdrl-xdg-{tag}"
        os.mkdir(xdg, 0o700)
        os.chown(xdg, pw.pw_uid, pw.pw_gid)
        user = User(name, pw.pw_uid, pw.pw_dir, xdg, subuid)
        root = os.path.join(pw.pw_dir, "root")
        os.mkdir(root)
        subprocess.run(["tar", "-C", root, "--numeric-owner", "-xf", _rootfs_tar()], check=True, timeout=300)
        src = os.path.join(pw.pw_dir, "crasher.c")
        with open(src, "w") as f:
            f.write(CRASHER)
        subprocess.run(["gcc", "-static", "-O0", "-o", os.path.join(root, "usr/local/bin/cd-crasher"), src],
                       check=True, capture_output=True, timeout=120)
        # the container's root is the user: its files are the user's (-h: a link itself, never
        # what it points to -- the root holds absolute links into what would be the host's /)
        subprocess.run(["chown", "-hR", f"{pw.pw_uid}:{pw.pw_gid}", root], check=True, timeout=300)
        yield {"user": user, "tag": tag, "root": root, "subuid": subuid, "subgid": subgid}
    finally:
        errors = _cleanup(user, name, backups)
        assert not errors, errors
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
        assert _subids("/etc/subuid", name) is None and _subids("/etc/subgid", name) is None


def _run(rl, name, *args, store="vfs", image=None):
    where = [image] if image else ["--rootfs", rl["root"]]
    rl["user"].podman("run", "-d", "--network", "none", "--name", name, *args, *where, "sh", "-c", LOOP,
                      store=store)
    d = json.loads(rl["user"].podman("inspect", name, store=store).stdout)[0]
    init = d["State"]["Pid"]
    pid = _wait(lambda: _children(init, "cd-crasher"), what="the crasher in the rootless container")[0]
    upper = ((d.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir")     # None for --rootfs
    return d["Id"], d["State"]["ConmonPid"], init, pid, upper


def _check(pid):
    r = L.coredoctor("check", "--json", "--pid", str(pid))
    assert r.returncode in (0, 1), r.stderr
    (t,) = json.loads(r.stdout)["targets"]
    return t


def _crash(pid, init):
    """SIGUSR1: the crasher's handler writes through NULL (SIGSEGV, a real fault); returns once
    it is gone and the loop started the next one (the kernel wrote any core before it exited)."""
    L.kernel_log_room(1)
    t0 = time.time()
    os.kill(pid, signal.SIGUSR1)
    _wait(lambda: not os.path.exists(f"/proc/{pid}") or _comm(pid) != "cd-crasher", what="the crash")
    _wait(lambda: [p for p in _children(init, "cd-crasher") if p != pid], what="the restarted crasher")
    return t0


def _crashes(name):
    r = L.coredoctor("crashes", "--json", "--source", "kmsg", "--container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["crashes"]


@pytest.mark.parametrize("inside", [0, 1000])
def test_rootless_container_named_core_lands_where_check_said_owned_as_predicted(rl, inside, saved_sysctls,
                                                                                  loud_kernel_log):
    L.set_sysctls({"kernel.core_pattern": PATTERN, "kernel.core_uses_pid": "0"})
    user = rl["user"]
    name = f"cdrl-{inside}-{rl['tag']}"
    expected = None
    try:
        cid, conmon, init, pid, _ = _run(rl, name, "--ulimit", "core=-1:-1", "--user", f"{inside}:{inside}")
        host_uid = user.uid if inside == 0 else rl["subuid"][0] + inside - 1   # the uid_map podman wrote
        host_gid = user.uid if inside == 0 else rl["subgid"][0] + inside - 1
        assert os.stat(f"/proc/{pid}").st_uid == host_uid
        with open(f"/proc/{pid}/cgroup") as f:
            assert "libpod" not in f.read()             # no container cgroup names it
        t = _check(pid)
        c = t["container"]
        assert c is not None, "check named no container: " + t["verdict"]
        assert (c["runtime"], c["id"], c["name"], c["rootless"], c["owner_uid"]) == \
            ("podman", cid, name, True, user.uid), c
        assert c["conmon"] == conmon and c["format"] == "conmon"
        assert c["bundle"] == f"{user.home}/.local/share/containers/storage/vfs-containers/{cid}/userdata/config.json"
        dest = t["core_destination"]
        expected = f"{rl['root']}/tmp/cdrl.cd-crasher.{_nspid(pid)}"
        assert t["dumps"] is True and t["blocking_gate"] is None, t["verdict"]
        assert (dest["host_path"], dest["landing"], dest["survives"]) == (expected, "bind", True), dest
        assert dest["owner"] == {"uid": host_uid, "gid": host_gid, "uid_in_container": inside,
                                 "gid_in_container": inside}, dest["owner"]
        if inside == 0:         # --container: every process of it, found by its conmon
            r = L.coredoctor("check", "--json", "--container", name)
            assert r.returncode in (0, 1), r.stderr
            got = {x["pid"]: x["container"]["id"] for x in json.loads(r.stdout)["targets"]}
            assert {init, pid} <= set(got) and set(got.values()) == {cid}, got
            assert conmon not in got
        r = L.coredoctor("check", "--pid", str(pid))
        first = " ".join(r.stdout.split("\n\n")[0].split())          # the verdict sentence, unwrapped
        assert f"(pid {pid}, in rootless podman container {name} ({cid[:12]}) of uid {user.uid}):" in first, first
        t0 = _crash(pid, init)
        # the kernel agrees: the core is there, and whose check said
        assert os.path.exists(expected), os.listdir(os.path.dirname(expected))
        st = os.lstat(expected)
        assert (st.st_uid, st.st_gid) == (host_uid, host_gid) and st.st_size > 0
        mine = [x for x in _crashes(name) if x["pid"] == pid]
        assert len(mine) == 1, mine
        rec = mine[0]
        assert rec["signal"] == "SIGSEGV" and rec["time"] >= t0 - 2
        rc = rec["container"]
        assert (rc["runtime"], rc["id"], rc["name"], rc["rootless"], rc["owner_uid"]) == \
            ("podman", cid, name, True, user.uid)
        core = rec["core"]
        assert core["found"] is True and core["host_path"] == expected == core["path"], core
        assert core["size"] == st.st_size and core["landing"] == "bind"
    finally:
        if expected and os.path.exists(expected):
            os.unlink(expected)            # this test's own core, in the root kept for the module
        user.podman("rm", "-f", "-t", "0", name, check=False)   # (another container's running crasher
        # would be taken for this crash's "running instance" by crashes: none is left behind)


def test_rootless_without_ulimit_core_keeps_conmons_zero_no_core(rl, saved_sysctls, loud_kernel_log):
    L.set_sysctls({"kernel.core_pattern": PATTERN, "kernel.core_uses_pid": "0"})
    user = rl["user"]
    name = f"cdrl-noulimit-{rl['tag']}"
    try:
        cid, conmon, init, pid, _ = _run(rl, name)
        with open(f"/proc/{conmon}/limits") as f:
            conmon_core = next(x for x in f if x.startswith("Max core file size")).split()[4]
        assert conmon_core == "0"                      # what the machine gives a user's podman
        t = _check(pid)
        assert (t["container"]["id"], t["container"]["rootless"]) == (cid, True)
        assert t["dumps"] is False and t["blocking_gate"] == "rlimit-core", t["verdict"]
        gate = next(g for g in t["gates"] if g["id"] == "rlimit-core")
        assert gate["origin"]["kind"] == "container", gate
        commands = [c for f in t["fixes"] for c in f["commands"]]
        assert any("podman run --ulimit core=" in c for c in commands), commands
        expected = f"{rl['root']}/tmp/cdrl.cd-crasher.{_nspid(pid)}"
        assert t["core_destination"]["host_path"] == expected
        t0 = _crash(pid, init)
        assert not os.path.exists(expected)        # the kernel wrote none, as check said
        mine = [x for x in _crashes(name) if x["pid"] == pid]
        assert len(mine) == 1 and mine[0]["time"] >= t0 - 2, mine
        assert mine[0]["container"]["id"] == cid and mine[0]["core"]["found"] is False, mine[0]["core"]
    finally:
        user.podman("rm", "-f", "-t", "0", name, check=False)


def _import(rl, store):
    """The module's root as an image in *store*: its files root's (its root is the user on the
    host), no device nodes (a user namespace cannot make them)."""
    user = rl["user"]
    image = f"localhost/cdrl-img-{store}-{rl['tag']}"
    tar = os.path.join(user.home, "img.tar")
    subprocess.run(["tar", "-C", rl["root"], "--numeric-owner", "--owner=0", "--group=0", "--exclude=./dev/*",
                    "-cf", tar, "."], check=True, timeout=300)
    try:
        os.chown(tar, user.uid, user.uid)
        user.podman("import", tar, image, store=store, timeout=600)
    finally:
        os.unlink(tar)
    return image


def test_rootless_image_on_native_overlay_core_in_the_upper_layer_under_the_users_graph_root(
        rl, saved_sysctls, loud_kernel_log):
    """The same Debian root imported as an image into a graph root of the user's own with the
    overlay driver (native rootless overlay: the kernel mounts it in the user's namespace)."""
    L.set_sysctls({"kernel.core_pattern": PATTERN, "kernel.core_uses_pid": "0"})
    user = rl["user"]
    name = f"cdrl-ovl-{rl['tag']}"
    image = _import(rl, "overlay")
    expected = None
    try:
        cid, conmon, init, pid, upper = _run(rl, name, "--ulimit", "core=-1:-1", store="overlay", image=image)
        graph = f"{user.home}/ovl"
        assert upper and upper.startswith(f"{graph}/overlay/"), upper
        with open(f"/proc/{pid}/mountinfo") as f:
            root = next(x for x in f if x.split()[4] == "/")
        assert " - overlay overlay " in root and f"upperdir={upper}" in root, root   # the kernel's overlay
        t = _check(pid)
        c = t["container"]
        assert c is not None, "check named no container: " + t["verdict"]
        assert (c["id"], c["name"], c["image"], c["rootless"], c["owner_uid"]) == \
            (cid, name, f"{image}:latest", True, user.uid), c
        assert c["bundle"] == f"{graph}/overlay-containers/{cid}/userdata/config.json"
        expected = f"{upper}/tmp/cdrl.cd-crasher.{_nspid(pid)}"
        dest = t["core_destination"]
        assert t["dumps"] is True, t["verdict"]
        assert (dest["host_path"], dest["landing"], dest["survives"]) == (expected, "overlay-upper", True), dest
        assert "kept until the container is removed" in dest["warning"]         # not --rm: its bundle said
        assert (dest["owner"]["uid"], dest["owner"]["uid_in_container"]) == (user.uid, 0)
        t0 = _crash(pid, init)
        assert os.path.exists(expected), os.listdir(os.path.dirname(expected))
        st = os.lstat(expected)
        assert (st.st_uid, st.st_gid) == (user.uid, user.uid) and st.st_size > 0
        mine = [x for x in _crashes(name) if x["pid"] == pid]
        assert len(mine) == 1 and mine[0]["time"] >= t0 - 2, mine
        core = mine[0]["core"]
        assert (mine[0]["container"]["id"], mine[0]["container"]["rootless"]) == (cid, True)
        assert core["found"] is True and core["host_path"] == expected and core["landing"] == "overlay-upper", core
    finally:
        user.podman("rm", "-f", "-t", "0", name, check=False, store="overlay")
        user.podman("rmi", "-f", image, check=False, store="overlay")


@pytest.fixture
def dev_fuse():
    """/dev/fuse open to the user (udev's 0666 on a usual host; this VM has no udev: 0600),
    put back as it was."""
    st = os.stat("/dev/fuse")
    try:
        os.chmod("/dev/fuse", 0o666)
        yield
    finally:
        os.chmod("/dev/fuse", st.st_mode & 0o7777)


@pytest.mark.skipif(not os.path.exists(FUSE_OVERLAYFS) or not os.path.exists("/dev/fuse"),
                    reason="fuse-overlayfs (apt) and /dev/fuse are needed")
def test_rootless_image_on_fuse_overlayfs_core_in_the_upper_dir_of_its_argv(rl, dev_fuse, saved_sysctls,
                                                                           loud_kernel_log):
    """The image on fuse-overlayfs (podman's mount_program): the container's root mount has no
    upperdir= (a FUSE mount); the serving fuse-overlayfs process's argv names it."""
    L.set_sysctls({"kernel.core_pattern": PATTERN, "kernel.core_uses_pid": "0"})
    user = rl["user"]
    name = f"cdrl-fuse-{rl['tag']}"
    image = _import(rl, "fuse")
    expected = None
    try:
        cid, conmon, init, pid, upper = _run(rl, name, "--ulimit", "core=-1:-1", store="fuse", image=image)
        assert upper and upper.startswith(f"{user.home}/fov/overlay/"), upper
        with open(f"/proc/{pid}/mountinfo") as f:
            root = next(x for x in f if x.split()[4] == "/")
        assert " - fuse.fuse-overlayfs " in root and "upperdir" not in root, root
        t = _check(pid)
        c = t["container"]
        assert c is not None, "check named no container: " + t["verdict"]
        assert (c["id"], c["rootless"], c["fuse_overlay"]["upperdir"]) == (cid, True, upper), c
        expected = f"{upper}/tmp/cdrl.cd-crasher.{_nspid(pid)}"
        dest = t["core_destination"]
        # a FUSE mount made in the user's namespace is closed to the host's root (fs/fuse/dir.c
        # fuse_allow_current_process(): allow_other admits only that namespace and its
        # children): the directory cannot be judged from here, and check says so
        gate = next(g for g in t["gates"] if g["id"] == "core-dir")
        assert t["dumps"] is None and gate["status"] == "unknown" and "EACCES" in gate["evidence"], t["verdict"]
        assert (dest["host_path"], dest["landing"], dest["survives"]) == (expected, "overlay-upper", True), dest
        assert "fuse-overlayfs pid" in dest["landing_evidence"]
        t0 = _crash(pid, init)
        assert os.path.exists(expected), os.listdir(os.path.dirname(expected))
        st = os.lstat(expected)
        assert (st.st_uid, st.st_gid) == (user.uid, user.uid) and st.st_size > 0
        mine = [x for x in _crashes(name) if x["pid"] == pid]
        assert len(mine) == 1 and mine[0]["time"] >= t0 - 2, mine
        core = mine[0]["core"]
        assert core["found"] is True and core["host_path"] == expected, core
    finally:
        user.podman("rm", "-f", "-t", "0", name, check=False, store="fuse")
        user.podman("rmi", "-f", image, check=False, store="fuse")
