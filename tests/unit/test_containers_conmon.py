"""A container known by its conmon (issue 11, rootless podman): conmon's argv parsed as GOption
does, hostile argv, who may be taken for conmon (a root-owned file at its own path, not a copy,
not a link, not another user's), rootless and the owner, the user's own state read only when the
user owns it, the cgroup-v2 user manager rows, the label and the snapshot fields."""
import json
import os
import shutil
import signal
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from coredoctor.snapshot import containers as C
from coredoctor.snapshot.validate import Bad, validate

HERE = os.path.dirname(os.path.abspath(__file__))
CID = "7343a66287acf200cf0dffec285bdfbabbd700e49df8a495ea43fb9d4822f68c"
HOME = "/home/cdrlman1"
STORE = f"{HOME}/.local/share/containers/storage/vfs-containers"
RUN = "/tmp/cdrl-xdg-1001"

#: the argv of a rootless podman 4.3.1 container's conmon on this machine (runc, cgroupfs, vfs)
REAL = ["/usr/bin/conmon", "--api-version", "1", "-c", CID, "-u", CID, "-r", "/usr/bin/runc",
        "-b", f"{STORE}/{CID}/userdata", "-p", f"{RUN}/containers/vfs-containers/{CID}/userdata/pidfile",
        "-n", "rl1", "--exit-dir", f"{RUN}/libpod/tmp/exits", "--full-attach",
        "-l", f"k8s-file:{STORE}/{CID}/userdata/ctr.log", "--log-level", "warning",
        "--runtime-arg", "--log-format=json", "--runtime-arg", "--log",
        f"--runtime-arg={RUN}/containers/vfs-containers/{CID}/userdata/oci-log",
        "--conmon-pidfile", f"{RUN}/containers/vfs-containers/{CID}/userdata/conmon.pid",
        "--exit-command", "/usr/bin/podman", "--exit-command-arg", "--root", "--exit-command-arg",
        f"{HOME}/.local/share/containers/storage", "--exit-command-arg", "--network-config-dir",
        "--exit-command-arg", "", "--exit-command-arg", "--storage-driver", "--exit-command-arg", "vfs",
        "--exit-command-arg", "container", "--exit-command-arg", "cleanup", "--exit-command-arg", CID]


def test_the_real_rootless_argv():
    c = C.conmon_from_argv(REAL, 8978, 1001, False)
    assert (c["runtime"], c["id"], c["name"], c["format"]) == ("podman", CID, "rl1", "conmon")
    assert (c["rootless"], c["owner_uid"], c["conmon"]) == (True, 1001, 8978)
    assert c["bundle_dir"] == f"{STORE}/{CID}/userdata" and c["cuuid"] == CID
    assert (c["runtime_path"], c["exit_dir"]) == ("/usr/bin/runc", f"{RUN}/libpod/tmp/exits")
    assert c["state"] == ["/proc/8978/cmdline"]
    assert C.bundle_paths(c) == [f"{STORE}/{CID}/userdata/config.json"]
    # the same argv run by root in the host's user namespace: rootful
    r = C.conmon_from_argv(REAL, 8978, 0, True)
    assert (r["rootless"], r["owner_uid"]) == (False, 0)
    assert C.bundle_paths(r) == [p.format(id=CID) for p in C.BUNDLES["podman"]]
    # root, but in a user namespace of its own (podman inside a container): rootless
    assert C.conmon_from_argv(REAL, 8978, 0, False)["rootless"] is True


def test_every_conmon_row_cites_its_source():
    assert len(C.CONMON) >= 4
    for row in C.CONMON:
        assert row["fact"] and ("conmon" in row["source"] or "podman" in row["source"])
    assert "user@.service" in C.USER_MANAGER["source"]


@pytest.mark.parametrize("argv, want", [
    (["conmon", f"--cid={CID}", "--name=web"], (CID, "web")),
    (["conmon", f"-c{CID}", "-nweb"], (CID, "web")),
    (["conmon", "-t", "-i", "--cid", CID, "-n", "web"], (CID, "web")),
    (["conmon", "-ts", "-c", CID, "--name", "a", "--name", "b"], (CID, "b")),   # last wins
    # a value of another option is not an option: --log-tag's value "-n" names nothing
    (["conmon", "-c", CID, "--log-tag", "-n", "--exit-command-arg", "--name=evil"], (CID, None)),
    (["conmon", "-c", CID, "--", "-n", "after-the-end"], (CID, None)),
    # options anywhere (GOption is not strict POSIX): after a positional word too
    (["conmon", "positional", "-c", CID, "-n", "web"], (CID, "web")),
])
def test_goption_forms(argv, want):
    c = C.conmon_from_argv(argv, 5, 0, True)
    assert (c["id"], c["name"]) == want


@pytest.mark.parametrize("argv", [
    ["conmon"], [], ["conmon", "-c"], ["conmon", "--cid"], ["conmon", "-c", CID.upper()],
    ["conmon", "-c", CID[:63]], ["conmon", "-c", CID + "0"], ["conmon", "-c", "../../etc"],
    ["conmon", "--log-tag", "-c", CID],          # -c here is the value of --log-tag
    ["conmon", "--cid-x", CID],
])
def test_no_container_id_no_container(argv):
    assert C.conmon_from_argv(argv, 5, 1001, False) is None


def test_hostile_values_are_clipped_and_a_bundle_elsewhere_is_not_read():
    c = C.conmon_from_argv(["conmon", "-c", CID, "-n", "x" * 9000, "-u", "not a uuid", "-r", "r" * 5000],
                           5, 1001, False)
    assert c["name"] == "x" * C.MAX_FIELD and c["cuuid"] is None and len(c["runtime_path"]) == C.MAX_FIELD
    for bundle in (f"/etc/{CID}/userdata",                                  # not a storage dir
                   f"{STORE}/{'0' * 64}/userdata",                            # another container's
                   f"{STORE}/../../../../root/vfs-containers/{CID}/userdata",  # '..'
                   f"relative/vfs-containers/{CID}/userdata",
                   f"{STORE}/{CID}/userdata/../../{CID}/userdata"):
        c = C.conmon_from_argv(["conmon", "-c", CID, "-b", bundle], 5, 1001, False)
        assert c["bundle_dir"] is None, bundle
        assert C.bundle_paths(c) == []                   # rootless: nothing but its own bundle


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["-c", "--cid", "-n", "--name=", "--", "-b", "-tc", "--log-tag",
                                           "-", CID, f"--cid={CID}", ""]),
                          st.text(max_size=40)), max_size=30),
       st.one_of(st.none(), st.integers(0, 1 << 32)), st.one_of(st.none(), st.booleans()))
def test_any_argv_gives_a_container_or_none_never_an_error(argv, uid, userns):
    c = C.conmon_from_argv(["conmon"] + argv, 7, uid, userns)
    assert c is None or (c["id"] == CID and isinstance(c["rootless"], bool)
                         and (c["name"] is None or len(c["name"]) <= C.MAX_FIELD))


def test_label_says_rootless_and_whose():
    c = C.conmon_from_argv(REAL, 8978, 1001, False)
    assert C.label(c) == f"rootless podman container rl1 ({CID[:12]}) of uid 1001"
    assert C.label(C.conmon_from_argv(REAL, 8978, 0, True)) == f"podman container rl1 ({CID[:12]})"


def test_a_rootless_cgroup_v2_path_under_the_user_manager():
    path = f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope"
    c = C.from_path(path)
    assert (c["runtime"], c["id"], c["rootless"], c["owner_uid"]) == ("podman", CID, True, 1000)
    c = C.from_path(f"/machine.slice/libpod-{CID}.scope")
    assert c["runtime"] == "podman" and "rootless" not in c        # not known from the path
    # the user manager's conmon cgroup is still not a container
    assert C.from_path(f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{CID}.scope") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="files owned by another user need root")
def test_a_rootless_containers_state_is_read_only_when_its_user_owns_it(tmp_path):
    os.chmod(tmp_path, 0o755)
    ud = tmp_path / f"home/u/.local/share/containers/storage/overlay-containers/{CID}/userdata"
    ud.mkdir(parents=True)
    cfg = {"annotations": {"io.podman.annotations.autoremove": "TRUE"},
           "process": {"rlimits": [{"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]}}
    (ud / "config.json").write_text(json.dumps(cfg))
    store = ud.parent.parent
    (store / "containers.json").write_text(json.dumps([{"id": CID, "names": ["web"], "image": "img",
                                                        "metadata": json.dumps({"image-name": "docker.io/x:1"})}]))
    bdir = "/" + str(ud.relative_to(tmp_path))
    argv = ["conmon", "-c", CID, "-b", bdir]
    c = C.conmon_from_argv(argv, 9, 1234, False)
    # owned by root, not by uid 1234: a planted or linked file of someone else's is not read
    assert C.bundle_config(c, str(tmp_path)) is None
    assert C.complete(dict(c), str(tmp_path))["name"] is None
    for p in (ud / "config.json", store / "containers.json"):
        os.chown(p, 1234, 1234)
    assert C.bundle_config(c, str(tmp_path)) == (bdir + "/config.json", cfg)
    got = C.complete(C.conmon_from_argv(argv, 9, 1234, False), str(tmp_path))
    assert (got["name"], got["image"]) == ("web", "docker.io/x:1")
    assert got["state"] == ["/proc/9/cmdline", "/" + str((store / "containers.json").relative_to(tmp_path))]
    from coredoctor.snapshot import ctspec
    s = ctspec.spec_of(C.conmon_from_argv(argv, 9, 1234, False), str(tmp_path))
    assert s["rlimit_core"] == [0, 0] and s["autoremove"] is True
    # the conmon's uid decides: another user's conmon naming this bundle reads nothing
    assert C.bundle_config(C.conmon_from_argv(argv, 9, 4321, False), str(tmp_path)) is None


# -- who is taken for conmon: real processes -------------------------------------------------

def _fake_conmon(exe, *args, prefix=()):
    """A process running *exe* (a copy of bash named conmon) with conmon-like argv whose child
    is a sleep: bash -s reads its script from stdin and keeps the rest as positional words.
    Returns (Popen, the pid of the bash, the pid of its sleep)."""
    p = subprocess.Popen([*prefix, exe, "-s", "x", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    p.stdin.write("echo $$; sleep 30 & echo $!; wait\n")
    p.stdin.flush()
    me, child = int(p.stdout.readline()), int(p.stdout.readline())
    return p, me, child


def _kill(p, child):
    for pid in (child, p.pid):      # the processes this test started, by pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="a root-owned conmon in a root-only directory needs root")
def test_only_a_root_owned_conmon_at_its_own_path_names_a_container(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o755)
    exe = str(d / "conmon")
    shutil.copy("/bin/bash", exe)
    os.chmod(exe, 0o755)
    args = [f"--cid={CID}", "--name=web"]
    p, me, child = _fake_conmon(exe, *args)
    try:
        c = C.conmon_of(child)
        assert c is not None and (c["id"], c["name"], c["conmon"], c["rootless"]) == (CID, "web", me, False)
        assert c["owner_uid"] == 0
        assert C.add_monitor(None, child, "/", {})["name"] == "web"
        # the file changes hands: another user's file named conmon names nothing
        os.chown(exe, 1234, 1234)
        assert C.conmon_of(child) is None
        os.chown(exe, 0, 0)
        os.chmod(exe, 0o775)                                 # group-writable
        assert C.conmon_of(child) is None
        os.chmod(exe, 0o755)
        os.chmod(d, 0o777)                                   # a directory anyone may change
        assert C.conmon_of(child) is None
        os.chmod(d, 0o755)
        assert C.conmon_of(child)["name"] == "web"
    finally:
        _kill(p, child)
    # a link named conmon to another program: /proc/PID/exe is that program
    link = str(tmp_path / "conmon")
    os.symlink("/bin/bash", link)
    p, me, child = _fake_conmon(link, *args)
    try:
        assert C.conmon_of(child) is None
    finally:
        _kill(p, child)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="a mount namespace needs root")
def test_a_file_bind_mounted_over_conmon_in_a_namespace_of_its_own_is_not_conmon(tmp_path):
    """A user with a mount namespace of its own can put any root-owned program at conmon's path
    there; seen from the host, /proc/PID/exe is not the file at that path."""
    os.chmod(tmp_path, 0o755)
    exe = str(tmp_path / "conmon")
    shutil.copy("/bin/bash", exe)        # a root-owned "conmon" at a trusted path ...
    os.chmod(exe, 0o755)
    other = str(tmp_path / "other")
    shutil.copy("/bin/bash", other)      # ... and another program bound over it in the namespace
    script = f'mount --bind {other} {exe} && exec {exe} "$@"'
    p, me, child = _fake_conmon("sh", f"--cid={CID}", "--name=forged",   # "sh": the script's $0
                                prefix=("unshare", "-m", "--propagation", "private", "sh", "-c", script))
    try:
        assert os.readlink(f"/proc/{me}/exe") == exe          # the name says conmon
        assert C._trusted_exe(me, "conmon") is False
        assert C.conmon_of(child) is None
    finally:
        _kill(p, child)


def test_a_process_without_a_conmon_ancestor():
    assert C.conmon_of(os.getpid()) is None
    assert C.conmon_of(0x7FFFFFFF) is None
    assert C.add_monitor(None, os.getpid(), None, {}) is None


def test_the_snapshot_fields_validate():
    with open(os.path.join(os.path.dirname(HERE), "fixtures", "dropped-suid0.json")) as f:
        snap = json.load(f)
    c = C.conmon_from_argv(REAL, 8978, 1001, False)
    c["bundle"] = c["bundle_dir"] + "/config.json"
    snap["processes"][0]["container"] = c
    validate(snap)
    from coredoctor.kernel import gates
    (t,) = gates.evaluate_targets(snap, [snap["processes"][0]["pid"]], "SIGSEGV", None)
    assert (t["container"]["rootless"], t["container"]["owner_uid"]) == (True, 1001)
    c["rootless"] = "yes"
    with pytest.raises(Bad, match="container.rootless"):
        validate(snap)
    c["rootless"], c["owner_uid"] = True, -1
    with pytest.raises(Bad, match="container.owner_uid"):
        validate(snap)


def test_a_root_that_is_not_fuse_overlayfs_has_no_fuse_overlay():
    c = C.conmon_from_argv(REAL, 8978, os.geteuid(), True)
    assert C.fuse_overlay_of(os.getpid(), c, {}) is None     # this test's root: not fuse-overlayfs
    assert C.fuse_overlay_of(0x7FFFFFFF, c, {}) is None      # no such process
