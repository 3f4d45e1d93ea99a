"""kernel/landing.py and snapshot/mounts.py: where a file core lands on the host, from mount
tables recorded from real podman containers on this project's machine (runc, cgroupfs)."""

from coredoctor.kernel import landing as L
from coredoctor.snapshot import mounts as M

HOST = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
28 27 0:5 / /dev rw,nosuid,relatime - devtmpfs udev rw,size=1000k
41 27 0:33 / /run rw,nosuid,nodev - tmpfs tmpfs rw,size=200000k,mode=755
50 27 254:16 /exports /srv/nfs rw - xfs /dev/vdb rw
"""

# podman run --rootfs /var/tmp/coredoctor-ctland/rootfs (a bind of a host directory)
ROOTFS = """\
78 51 254:0 /var/tmp/coredoctor-ctland/rootfs / rw,relatime - ext4 /dev/vda rw,discard,resv_strict
79 78 0:43 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
80 78 0:44 / /dev rw,nosuid,noexec - tmpfs tmpfs rw,size=65536k,mode=755
81 78 0:45 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
90 78 254:0 /srv/cores /var/cores rw,relatime - ext4 /dev/vda rw
91 78 254:16 /exports/app /data rw - xfs /dev/vdb rw
"""

UPPER = "/var/lib/containers/storage/overlay/c998c94097fae5312a8f490ad3517ec6cf11bdf94ee6a848ce31ffaba75b82a9"
# podman run localhost/ctland-deb --tmpfs /scratch (the overlay storage driver)
OVERLAY = f"""\
96 55 0:42 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/containers/storage/overlay/l/KHRJQKMLDZJK2YWGD\
G5PXP7WFJ,upperdir={UPPER}/diff,workdir={UPPER}/work,uuid=on,fsync=volatile
98 96 0:45 / /scratch rw,nosuid,nodev,relatime - tmpfs tmpfs rw
"""


def _snap(table):
    return {"host": M.parse_mountinfo(HOST), "mnt:[9]": M.parse_mountinfo(table)}


PROC = {"pid": 4242, "mnt_ns": "mnt:[9]", "creds": {"uid": [0, 0, 0, 0], "gid": [0, 0, 0, 0]}}


def test_parse_mountinfo_fields_and_escapes():
    ms = M.parse_mountinfo("36 35 98:0 /mnt\\0401 /a\\134b rw master:1 - ext3 /dev/root rw,errors=continue\n"
                           "garbage line\n12 x 0:1 / / rw - proc proc rw\n")
    assert ms == [{"id": 36, "parent": 35, "dev": "98:0", "root": "/mnt 1", "mountpoint": "/a\\b",
                   "fstype": "ext3", "source": "/dev/root", "super_options": "rw,errors=continue"}]


def test_parse_id_map():
    assert M.parse_id_map("         0     200000      65536\nbad\n1 2\n") == [[0, 200000, 65536]]


def test_rootfs_bind_maps_through_the_host_mount():
    r = L.landing("/core", PROC, _snap(ROOTFS), autoremove=True)
    assert r["host_path"] == "/var/tmp/coredoctor-ctland/rootfs/core"
    assert (r["landing"], r["survives"], r["warning"]) == ("bind", True, None)  # --rm leaves a --rootfs dir


def test_volume_bind_mount():
    r = L.landing("/var/cores/./sub/../core.1", PROC, _snap(ROOTFS))
    assert r["container_path"] == "/var/cores/core.1"
    assert r["host_path"] == "/srv/cores/core.1"
    # the host mounts a subtree of that filesystem: its root field is taken off
    assert L.landing("/data/core", PROC, _snap(ROOTFS))["host_path"] == "/srv/nfs/app/core"


def test_overlay_upper_layer_and_autoremove():
    gone = L.landing("/tmp/core.7", PROC, _snap(OVERLAY), autoremove=True)
    assert gone["host_path"] == f"{UPPER}/diff/tmp/core.7"
    assert gone["landing"] == "overlay-upper" and gone["survives"] is False and "--rm" in gone["warning"]
    kept = L.landing("/tmp/core.7", PROC, _snap(OVERLAY), autoremove=False)
    assert kept["survives"] is True and "until the container is removed" in kept["warning"]
    assert L.landing("/tmp/core.7", PROC, _snap(OVERLAY))["survives"] is None


def test_tmpfs_is_memory():
    r = L.landing("/scratch/core", PROC, _snap(OVERLAY), autoremove=False)
    assert r["host_path"] is None and r["survives"] is False and r["landing"] == "memory"
    assert "/proc/4242/root/scratch/core" in r["warning"]


def test_host_process_and_dumpable_two():
    host_proc = {"pid": 5, "creds": PROC["creds"]}
    assert L.landing("/var/crash/core", host_proc, _snap(ROOTFS))["host_path"] == "/var/crash/core"
    r = L.landing("/var/crash/core", PROC, _snap(OVERLAY), from_init_root=True)
    assert r["host_path"] == "/var/crash/core" and r["landing"] == "host"


def test_unknowns_say_why():
    r = L.landing("/core", PROC, {"host": []})
    assert r["host_path"] is None and r["survives"] is None and "mnt:[9]" in r["landing_evidence"]
    assert L.landing("core", PROC, _snap(ROOTFS))["landing"] == "unknown"
    rel = OVERLAY.replace(f"upperdir={UPPER}/diff", "upperdir=c998/diff")
    r = L.landing("/core", PROC, _snap(rel))
    assert r["host_path"] is None and "relative" in r["landing_evidence"]
    r = L.landing("/var/cores/x", PROC, {"host": [], "mnt:[9]": M.parse_mountinfo(ROOTFS)})
    assert r["host_path"] is None and "does not mount" in r["landing_evidence"]


def test_topmost_of_a_stack_of_mounts():
    stacked = ROOTFS + "95 90 0:50 / /var/cores rw - tmpfs tmpfs rw\n"
    assert L.landing("/var/cores/c", PROC, _snap(stacked))["landing"] == "memory"


def test_owner_in_a_user_namespace():
    p = dict(PROC, userns_is_host=False, creds={"uid": [200000] * 4, "gid": [200000] * 4},
             uid_map=[[0, 200000, 65536]], gid_map=[[0, 200000, 65536]])
    assert L.owner(p, 1) == {"uid": 200000, "gid": 200000, "uid_in_container": 0, "gid_in_container": 0}
    assert L.owner(p, 2)["uid"] == 0 and L.owner(p, 2)["uid_in_container"] is None  # host root: unmapped
    assert L.map_id(p["uid_map"], 5) == 200005 and L.map_id(p["uid_map"], 70000) is None


def test_mapped_root_may_write_only_inodes_mapped_in_its_namespace():
    from coredoctor.kernel import namei, world
    proc = dict(PROC, userns_is_host=False, creds={"uid": [200000] * 4, "gid": [200000] * 4, "cap_eff": "1ffffffffff"},
                uid_map=[[0, 200000, 65536]], gid_map=[[0, 200000, 65536]])
    cred = world.dump_cred({"proc": proc, "dumpable": 1})
    app = {"mode": 0o40755, "uid": 200033, "gid": 200033}    # uid 33 of the container
    host = {"mode": 0o40755, "uid": 0, "gid": 0}              # the host's root: unmapped
    assert namei.may_access(app, cred, namei.MAY_WRITE | namei.MAY_EXEC)    # CAP_DAC_OVERRIDE counts
    assert not namei.may_access(host, cred, namei.MAY_WRITE | namei.MAY_EXEC)
    assert "uid 0 in the container's user namespace" in L.userns_note(proc, 200000)
    no_maps = {k: v for k, v in proc.items() if k not in ("uid_map", "gid_map")}
    assert not namei.may_access(app, world.dump_cred({"proc": no_maps, "dumpable": 1}), namei.MAY_WRITE)
    assert L.userns_note(PROC, 0) == ""


def test_recorded_podman_snapshot_overlay_rm_uidmap():
    """`coredoctor snapshot` of a real podman container (image on the overlay driver, --rm,
    --uidmap 0:200000:65536, --ulimit core=0:0), checked from the file."""
    import json
    import os
    import subprocess
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    fx = os.path.join(here, "..", "fixtures", "landing", "podman-overlay-rm-uidmap.json")
    env = dict(os.environ, PYTHONPATH=os.path.join(here, "..", "..", "src"))
    r = subprocess.run([sys.executable, "-m", "coredoctor", "check", "--json", "--from", fx],
                       capture_output=True, text=True, env=env, timeout=60)
    t = json.loads(r.stdout)["targets"][0]
    d = t["core_destination"]
    assert d["container_path"] == "/tmp/core" and d["landing"] == "overlay-upper"
    assert d["host_path"] == ("/var/lib/containers/storage/overlay/fcfd1dbc02adae44e573324eb310313901176895d4a9"
                              "fddbb5d1b608fc7971e8/diff/tmp/core")
    assert d["survives"] is False and "--rm" in d["warning"]
    assert d["owner"] == {"uid": 200000, "gid": 200000, "uid_in_container": 0, "gid_in_container": 0}
    gate = next(g for g in t["gates"] if g["id"] == "rlimit-core")
    assert t["blocking_gate"] == "rlimit-core" and gate["origin"]["kind"] == "container"


def test_relative_upperdir_is_under_the_runtimes_driver_home():
    # a layer list too long for one page: the driver mounts from its home with relative paths
    rel = OVERLAY.replace(f"upperdir={UPPER}/diff", "upperdir=c998/diff")
    pod = dict(PROC, container={"runtime": "podman", "id": "c" * 64})
    r = L.landing("/tmp/core.7", pod, _snap(rel), autoremove=False)
    assert r["host_path"] == "/var/lib/containers/storage/overlay/c998/diff/tmp/core.7"
    assert r["landing"] == "overlay-upper" and "containers/storage" in r["landing_evidence"]
    dock = dict(PROC, container={"runtime": "docker", "id": "d" * 64})
    assert L.landing("/core", dock, _snap(rel))["host_path"] == "/var/lib/docker/overlay2/c998/diff/core"
    # a runtime without such a rule, or a '..' in it: not known, as before
    ctd = dict(PROC, container={"runtime": "containerd", "id": "e" * 64})
    assert L.landing("/core", ctd, _snap(rel))["host_path"] is None
    up = OVERLAY.replace(f"upperdir={UPPER}/diff", "upperdir=../../etc")
    r = L.landing("/core", pod, _snap(up))
    assert r["host_path"] is None and "relative" in r["landing_evidence"]
