"""kernel/landing.py for rootless podman (issue 11): where a core lands on the host and who owns
it, from mount tables and id maps recorded from real rootless podman 4.3.1 containers on this
project's machine (user cdrlman1, uid 1001, subuids 100000-165535; runc, cgroupfs): --rootfs in
the user's home (a bind), the vfs driver (a bind of its directory), native rootless overlay with
its upper layer under the user's graph root, and a relative upperdir under that graph root."""

from coredoctor.kernel import landing as L
from coredoctor.snapshot import containers as C
from coredoctor.snapshot import mounts as M

HOST = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534\n"
CID = "2f98850b490cc1d837616d24c4da227908511af6982e2d51b85e9be6a962ba5e"
LAYER = "dc8ace1b509017454abaa5b2c9e414e990d7b71b4f8bd7bdd8b6f7ef43bbd3f4"
GRAPH = "/home/cdrlman1/ovl"

ROOTFS = ("94 70 254:0 /home/cdrlman1/root / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,"
          "resuid=65534,resgid=65534\n")
VFS = (f"94 70 254:0 /home/cdrlman1/.local/share/containers/storage/vfs/dir/{LAYER} / rw,relatime - ext4 "
       "/dev/vda rw,discard\n")
OVERLAY = (f"215 164 0:73 / / rw,relatime - overlay overlay rw,lowerdir={GRAPH}/overlay/l/BUQRCQ3A6FFSD2GVEI7OU3GLBG,"
           f"upperdir={GRAPH}/overlay/{LAYER}/diff,workdir={GRAPH}/overlay/{LAYER}/work,redirect_dir=nofollow,"
           "uuid=on,userxattr\n"
           "217 215 0:77 / /dev rw,nosuid,noexec - tmpfs tmpfs rw,size=65536k,mode=755,uid=1001,gid=1001\n")
#: /proc/PID/uid_map of the container (and of its conmon): root is the user, 1.. the subuids
MAP = [[0, 1001, 1], [1, 100000, 65536]]


def _snap(table):
    return {"host": M.parse_mountinfo(HOST), "mnt:[7]": M.parse_mountinfo(table)}


def _proc(uid, container=None):
    return {"pid": 10305, "mnt_ns": "mnt:[7]", "userns_is_host": False, "uid_map": MAP, "gid_map": MAP,
            "creds": {"uid": [uid] * 4, "gid": [uid] * 4}, "container": container}


def _ct(bundle_store=f"{GRAPH}/overlay-containers"):
    return C.conmon_from_argv(["conmon", "-c", CID, "-n", "ov1", "-b", f"{bundle_store}/{CID}/userdata"],
                              10290, 1001, False)


def test_rootfs_in_the_users_home_is_a_bind():
    r = L.landing("/core", _proc(1001), _snap(ROOTFS))
    assert (r["host_path"], r["landing"], r["survives"]) == ("/home/cdrlman1/root/core", "bind", True)


def test_vfs_driver_directory_is_a_bind():
    r = L.landing("/tmp/core.1", _proc(1001), _snap(VFS))
    assert r["host_path"] == f"/home/cdrlman1/.local/share/containers/storage/vfs/dir/{LAYER}/tmp/core.1"
    assert r["landing"] == "bind"


def test_native_rootless_overlay_upper_under_the_users_graph_root():
    r = L.landing("/core", _proc(1001, _ct()), _snap(OVERLAY), autoremove=False)
    assert (r["host_path"], r["landing"]) == (f"{GRAPH}/overlay/{LAYER}/diff/core", "overlay-upper")
    assert r["survives"] is True and "kept until the container is removed" in r["warning"]


def test_a_relative_upperdir_of_a_rootless_container_is_under_its_users_graph_root():
    rel = OVERLAY.replace(f"upperdir={GRAPH}/overlay/{LAYER}/diff", f"upperdir={LAYER[:8]}/diff")
    r = L.landing("/core", _proc(1001, _ct()), _snap(rel))
    assert r["host_path"] == f"{GRAPH}/overlay/{LAYER[:8]}/diff/core"     # not root's /var/lib/containers
    assert GRAPH in r["landing_evidence"] and "rootless" in r["landing_evidence"]
    # a bundle that does not name the graph root: not known (root's default is not the user's)
    ct = dict(_ct(), bundle_dir=None)
    r = L.landing("/core", _proc(1001, ct), _snap(rel))
    assert r["host_path"] is None and "relative" in r["landing_evidence"]
    assert L.rootless_home(dict(_ct(), bundle_dir=f"/../overlay-containers/{CID}/userdata")) is None
    assert L.rootless_home(dict(_ct(), bundle_dir=f"/overlay-containers/{CID}/userdata")) is None
    # a rootful podman container keeps the driver's root home
    root = dict(_ct(), rootless=False)
    assert L.landing("/core", _proc(0, root), _snap(rel))["host_path"] == \
        f"/var/lib/containers/storage/overlay/{LAYER[:8]}/diff/core"


def test_the_owner_on_the_host_is_the_fsuid_mapped_through_uid_map():
    # container root dumps as the user itself
    assert L.owner(_proc(1001), 1) == {"uid": 1001, "gid": 1001, "uid_in_container": 0, "gid_in_container": 0}
    # container uid 1000 (podman run --user 1000): the subuid 100000 + 999, /proc's host view
    assert L.owner(_proc(100999), 1) == {"uid": 100999, "gid": 100999, "uid_in_container": 1000,
                                         "gid_in_container": 1000}
    assert L.map_id(MAP, 1000) == 100999 and L.map_id(MAP, 65537) is None
    # dumpable=2: the kernel dumps as global root, which the container does not map
    assert L.owner(_proc(1001), 2)["uid"] == 0 and L.owner(_proc(1001), 2)["uid_in_container"] is None


# -- fuse-overlayfs (podman's mount_program): recorded from a rootless container on this machine
FUSE_LAYER = "e5cccc0db2b35eeb0dc78032c937369ae025569c3ff38116c1c091666fe5ef29"
FUSE_GRAPH = "/home/cdrlman2/fov/overlay"
FUSE_ARGV = ["/usr/bin/fuse-overlayfs", "-o",
             f"lowerdir={FUSE_GRAPH}/l/PUWDGVWYEC6V5D7EJU2LOAP2EY,upperdir={FUSE_GRAPH}/{FUSE_LAYER}/diff,"
             f"workdir={FUSE_GRAPH}/{FUSE_LAYER}/work,", f"{FUSE_GRAPH}/{FUSE_LAYER}/merged"]
FUSE_ROOT = ("98 72 0:41 / / rw,nodev,noatime - fuse.fuse-overlayfs fuse-overlayfs rw,user_id=0,group_id=0,"
             "default_permissions,allow_other\n")


def test_fuse_overlayfs_argv():
    opts, mnt = C.fuse_args(FUSE_ARGV)
    assert mnt == f"{FUSE_GRAPH}/{FUSE_LAYER}/merged"
    assert opts["upperdir"] == f"{FUSE_GRAPH}/{FUSE_LAYER}/diff" and opts["lowerdir"].endswith("EY")
    # -oA,B joined, the last of a key wins, flags take no value, the last word is the mount point
    opts, mnt = C.fuse_args(["fuse-overlayfs", "-f", "-oupperdir=/a", "-o", "upperdir=/b,squash_to_root", "/m1",
                             "/m2"])
    assert (opts["upperdir"], opts["squash_to_root"], mnt) == ("/b", "", "/m2")
    assert C.fuse_args(["fuse-overlayfs", "-o"]) == ({}, None)
    assert C.fuse_args([]) == ({}, None)


def _fuse_ct(**fo):
    ct = _ct()
    ct["fuse_overlay"] = dict({"dev": "0:41", "merged": f"{FUSE_GRAPH}/{FUSE_LAYER}/merged",
                               "upperdir": f"{FUSE_GRAPH}/{FUSE_LAYER}/diff", "pid": 30036,
                               "state": "/proc/30036/cmdline"}, **fo)
    return ct


def test_a_fuse_overlayfs_root_lands_in_the_upper_dir_its_process_names():
    r = L.landing("/tmp/core.3", _proc(1001, _fuse_ct()), _snap(FUSE_ROOT), autoremove=False)
    assert (r["host_path"], r["landing"], r["survives"]) == \
        (f"{FUSE_GRAPH}/{FUSE_LAYER}/diff/tmp/core.3", "overlay-upper", True)
    assert "fuse-overlayfs pid 30036" in r["landing_evidence"] and "kept until" in r["warning"]
    # no serving process found, or one that serves another device: not known
    for ct in (_ct(), _fuse_ct(dev="0:42"), _fuse_ct(upperdir="relative/diff")):
        r = L.landing("/tmp/core.3", _proc(1001, ct), _snap(FUSE_ROOT))
        assert r["host_path"] is None and "fuse-overlayfs" in r["landing_evidence"], ct
    # --rm: gone with the container
    r = L.landing("/core", _proc(1001, _fuse_ct()), _snap(FUSE_ROOT), autoremove=True)
    assert r["survives"] is False and "--rm" in r["warning"]


def test_the_fuse_overlay_fact_validates():
    import json
    import os
    import pytest
    from coredoctor.snapshot.validate import Bad, validate
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(os.path.dirname(here), "fixtures", "dropped-suid0.json")) as f:
        snap = json.load(f)
    snap["processes"][0]["container"] = _fuse_ct()
    validate(snap)
    snap["processes"][0]["container"]["fuse_overlay"]["upperdir"] = 7
    with pytest.raises(Bad, match="fuse_overlay.upperdir"):
        validate(snap)
