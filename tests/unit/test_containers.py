"""Container identity on paper (issue 11, part A): /proc/PID/cgroup texts of Kubernetes nodes
(kubelet cgroupfs and systemd drivers, cgroup v1 and v2), Docker, containerd, podman, LXC and
nspawn, and the runtimes' state as their documentation shows it (tests/fixtures/containers/),
read through the bounded reader; selectors and the text report's naming of the container."""
import json
import os

import pytest

from coredoctor.errors import UsageError
from coredoctor.snapshot import containers as C, targets
from coredoctor.snapshot.validate import Bad, validate

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(os.path.dirname(HERE), "fixtures", "containers")
ROOT = os.path.join(FIX, "hostroot")

CID = "d3b8c5a2f1e04a7b9c6d8e2f0a1b3c5d7e9f1a2b4c6d8e0f2a4b6c8d0e2f4a6b"
CRIO = "8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b"
DK = "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"
PM = "e4ecdc9f84391a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70819203"
UID = "1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7081"


def cg(name):
    with open(os.path.join(FIX, "cgroup", name)) as f:
        return f.read()


# (fixture, runtime, id, pod_uid, qos, driver) -- from the cgroup path alone
CASES = [
    ("k8s-cgroupfs-v1-burstable.txt", "cri", CID, UID, "burstable", "cgroupfs"),
    ("k8s-cgroupfs-v2-besteffort.txt", "cri", CID, UID, "besteffort", "cgroupfs"),
    ("k8s-cgroupfs-v2-guaranteed.txt", "cri", CID, UID, "guaranteed", "cgroupfs"),
    ("k8s-systemd-v2-containerd.txt", "containerd", CID, UID, "burstable", "systemd"),
    ("k8s-systemd-v1-crio.txt", "cri-o", CRIO, UID, "besteffort", "systemd"),
    ("k8s-systemd-v2-guaranteed-crio.txt", "cri-o", CRIO, UID, "guaranteed", "systemd"),
    ("docker-systemd-v2.txt", "docker", DK, None, None, "systemd"),
    ("docker-cgroupfs-v1.txt", "docker", DK, None, None, "cgroupfs"),
    ("containerd-ctr-v2.txt", "containerd", CID, None, None, "cgroupfs"),
    ("podman-systemd-v2.txt", "podman", PM, None, None, "systemd"),
    ("podman-rootless-v2.txt", "podman", PM, None, None, "systemd"),
    ("lxc-payload-v2.txt", "lxc", "web01", None, None, "cgroupfs"),
    ("nspawn-v2.txt", "systemd-nspawn", "build-box", None, None, "systemd"),
    ("nspawn-service-v1.txt", "systemd-nspawn", "build", None, None, "systemd"),
]


@pytest.mark.parametrize("name,runtime,cid,pod_uid,qos,driver", CASES)
def test_identity_from_the_cgroup_path(name, runtime, cid, pod_uid, qos, driver):
    c = C.from_cgroup(cg(name))
    assert c is not None, name
    assert (c["runtime"], c["id"], c["pod_uid"], c["qos"], c["driver"]) == (runtime, cid, pod_uid, qos, driver)
    assert set(C.KEYS) <= set(c)


@pytest.mark.parametrize("name", ["host-v2.txt", "host-v1-user.txt", "podman-conmon-v2.txt",
                                  "lxc-monitor-v2.txt", "k8s-systemd-v2-crio-conmon.txt"])
def test_host_processes_and_runtime_monitors_are_in_no_container(name):
    assert C.from_cgroup(cg(name)) is None


def test_every_format_row_cites_its_source_and_names_a_known_runtime():
    keys = [r[0] for r in C.FORMATS]
    assert len(keys) == len(set(keys))
    for key, runtime, driver, rx, source in C.FORMATS:
        assert runtime in C.RUNTIMES + ("", "cri"), key
        assert driver in ("cgroupfs", "systemd"), key
        assert len(source) > 20 and ("/" in source or "." in source), key


def test_this_machines_podman_cgroup_v1_hybrid_lines():
    """As read under real podman here (--cgroup-manager=cgroupfs, cgroup v1 + unified)."""
    text = "".join(f"{i}:{c}:/libpod_parent/libpod-{PM}\n" for i, c in
                   [(9, "name=systemd"), (4, "memory"), (1, "cpu")]) + f"0::/libpod_parent/libpod-{PM}\n"
    c = C.from_cgroup(text)
    assert (c["runtime"], c["id"], c["driver"], c["format"]) == ("podman", PM, "cgroupfs", "libpod-cgroupfs")
    # only a v1 controller tells (name=systemd and unified left at the root): still found
    assert C.from_cgroup(f"9:name=systemd:/\n4:memory:/docker/{DK}\n0::/\n")["id"] == DK


def test_a_non_container_64_hex_leaf_under_a_known_parent_is_not_containerd():
    assert C.from_cgroup(f"0::/system.slice/{CID}\n") is None
    assert C.from_cgroup("0::/process_api/0a64976dd56f9604cafb8209f95a14c1\n") is None


def test_containerd_cri_names_from_the_bundle_annotations():
    c = C.identify(cg("k8s-systemd-v2-containerd.txt"), root=ROOT)
    assert {k: c[k] for k in C.KEYS} == {"runtime": "containerd", "id": CID, "name": "nginx",
                                         "image": "docker.io/library/nginx:1.25",
                                         "pod": "web-7d4b9c6f5-x2k8p", "namespace": "shop"}
    assert c["bundle"] == f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/config.json"
    # a cgroupfs-driver leaf says no runtime: the bundle found under k8s.io does
    c2 = C.identify(cg("k8s-cgroupfs-v1-burstable.txt"), root=ROOT)
    assert (c2["runtime"], c2["name"], c2["pod"], c2["qos"]) == ("containerd", "nginx", "web-7d4b9c6f5-x2k8p",
                                                                "burstable")


def test_crio_names_from_the_bundle_annotations():
    c = C.identify(cg("k8s-systemd-v1-crio.txt"), root=ROOT)
    assert {k: c[k] for k in C.KEYS} == {"runtime": "cri-o", "id": CRIO, "name": "api",
                                         "image": "quay.io/acme/api:2.3", "pod": "api-5c9f7-qq4rt",
                                         "namespace": "billing"}
    assert C.label(c) == "pod billing/api-5c9f7-qq4rt container api (cri-o)"


def test_docker_name_and_image_from_config_v2():
    c = C.identify(cg("docker-systemd-v2.txt"), root=ROOT)
    assert (c["runtime"], c["name"], c["image"]) == ("docker", "cache", "redis:7-alpine")
    assert c["state"] == [f"/var/lib/docker/containers/{DK}/config.v2.json"]
    assert C.label(c) == f"docker container cache ({DK[:12]})"


def test_podman_name_and_image_from_containers_json_and_rlimits_from_its_bundle():
    c = C.identify(cg("podman-systemd-v2.txt"), root=ROOT)
    assert (c["runtime"], c["name"], c["image"]) == ("podman", "web", "localhost/deb:latest")
    path, cfg = C.bundle_config(c, root=ROOT)
    assert path.endswith(f"{PM}/userdata/config.json")
    assert C.oci_rlimits(cfg) == {"RLIMIT_CORE": (0, 0)}
    assert C.oci_annotations(cfg)["io.container.manager"] == "libpod"
    # unlimited (2**64-1) reads as None, as /proc/PID/limits' "unlimited" does in a snapshot
    _, kcfg = C.bundle_config(C.from_cgroup(cg("k8s-systemd-v2-containerd.txt")), root=ROOT)
    assert C.oci_rlimits(kcfg)["RLIMIT_CORE"] == (None, None)


def test_nspawn_machine_from_machined_record():
    c = C.identify(cg("nspawn-v2.txt"), root=ROOT)
    assert (c["name"], c["image"]) == ("build-box", "/var/lib/machines/build-box")
    assert C.label(c) == "machine build-box"


def test_state_cache_reads_each_container_once(monkeypatch):
    calls = []
    real = C.read_json
    monkeypatch.setattr(C, "read_json", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    cache = {}
    for _ in range(3):
        C.identify(cg("docker-systemd-v2.txt"), root=ROOT, cache=cache)
    assert len(calls) == len(set(calls)) and calls


# -- the bounded reader ----------------------------------------------------------------------

def test_reader_bounds_and_file_kinds(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "big.json").write_text("[" + "1," * 600 + "1]")
    assert C.read_json("/run/big.json", limit=100, root=str(tmp_path)) is None
    assert C.read_json("/run/big.json", root=str(tmp_path)) == [1] * 601
    os.mkfifo(tmp_path / "run" / "fifo")
    assert C.read_bounded("/run/fifo", root=str(tmp_path)) is None     # not a regular file: no block
    assert C.read_bounded("/run/../etc/passwd", root=str(tmp_path)) is None
    (tmp_path / "run" / "deep.json").write_text("[" * 100000 + "]" * 100000)
    assert C.read_json("/run/deep.json", root=str(tmp_path)) is None   # RecursionError is no crash
    (tmp_path / "run" / "bad.json").write_bytes(b"\xff\xfe{")
    assert C.read_json("/run/bad.json", root=str(tmp_path)) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="making files owned by another user needs root")
def test_reader_follows_only_root_owned_symlinks_in_root_owned_directories(tmp_path):
    r = tmp_path
    os.chmod(r, 0o755)
    (r / "data").mkdir()
    (r / "data" / "f.json").write_text('{"ok": 1}')
    (r / "var").mkdir()
    os.symlink("/data", r / "var" / "lib")                  # root's link, in root's 0755 dir: followed
    assert C.read_json("/var/lib/f.json", root=str(r)) == {"ok": 1}
    (r / "tmp").mkdir()
    os.chmod(r / "tmp", 0o1777)
    os.symlink("/data", r / "tmp" / "lib")                  # root's link in a world-writable dir: not
    assert C.read_json("/tmp/lib/f.json", root=str(r)) is None
    (r / "home").mkdir()
    os.symlink("/data/f.json", r / "home" / "f.json")
    os.lchown(r / "home" / "f.json", 1000, 1000)            # another user's link: not
    assert C.read_json("/home/f.json", root=str(r)) is None
    os.symlink("/var/lib/f.json", r / "var" / "again")       # chains, and absolute targets stay under root
    assert C.read_json("/var/again", root=str(r)) == {"ok": 1}
    os.symlink("loop", r / "var" / "loop")
    assert C.read_json("/var/loop", root=str(r)) is None


def test_hostile_state_values_are_checked_and_clipped(tmp_path):
    d = tmp_path / "var/lib/docker/containers" / DK
    d.mkdir(parents=True)
    (d / "config.v2.json").write_text(json.dumps({"Name": "/" + "x" * 5000, "Config": {"Image": ["not", "str"]},
                                                  "Image": 7}))
    c = C.identify(f"0::/docker/{DK}\n", root=str(tmp_path))
    assert c["name"] == "x" * (C.MAX_FIELD - 1) and c["image"] is None
    (d / "config.v2.json").write_text("[]")
    assert C.identify(f"0::/docker/{DK}\n", root=str(tmp_path))["name"] is None
    assert len(C.label(dict(c, name="y" * 300))) < 80


# -- selectors ------------------------------------------------------------------------------

FOUND = {"podman:" + PM: {"runtime": "podman", "id": PM, "name": "web"},
         "podman:" + PM[:20] + "0" * 44: {"runtime": "podman", "id": PM[:20] + "0" * 44, "name": "db"},
         "docker:" + DK: {"runtime": "docker", "id": DK, "name": PM[:12]}}


def test_selectors_by_name_id_and_prefix():
    assert targets.pick_containers("web", FOUND) == ["podman:" + PM]
    assert targets.pick_containers(PM, FOUND) == ["podman:" + PM]
    assert targets.pick_containers(DK[:12], FOUND) == ["docker:" + DK]
    # a name that is also another container's id prefix names the container of that name
    assert targets.pick_containers(PM[:12], FOUND) == ["docker:" + DK]
    with pytest.raises(UsageError, match="names 2 containers"):
        targets.pick_containers(PM[:13], FOUND)
    with pytest.raises(UsageError, match="at least 12 hex"):
        targets.pick_containers(DK[:11], FOUND)
    with pytest.raises(UsageError, match="no container 'nope' is running"):
        targets.pick_containers("nope", FOUND)


def test_offline_selector_and_the_snapshot_field_validates():
    with open(os.path.join(os.path.dirname(HERE), "fixtures", "dropped-suid0.json")) as f:
        snap = json.load(f)
    p0 = snap["processes"][0]
    p0["container"] = C.identify(cg("docker-systemd-v2.txt"), root=ROOT)
    validate(snap)
    assert targets.resolve_offline(snap, [], containers=["cache"]) == [p0["pid"]]
    assert targets.resolve_offline(snap, [], containers=[DK[:12]]) == [p0["pid"]]
    with pytest.raises(UsageError):
        targets.resolve_offline(snap, [], containers=["web"])
    from coredoctor.kernel import gates
    (t,) = gates.evaluate_targets(snap, [p0["pid"]], "SIGSEGV", None)
    assert t["container"]["name"] == "cache"          # the target carries its process's container
    host = [p["pid"] for p in snap["processes"][1:]]
    assert all(t["container"] is None for t in gates.evaluate_targets(snap, host, "SIGSEGV", None))
    p0["container"]["id"] = 5
    with pytest.raises(Bad, match="container.id"):
        validate(snap)


def test_text_report_names_the_container_in_the_first_sentence_and_groups_the_table():
    from coredoctor.render import text
    c = {"runtime": "podman", "id": PM, "name": "web"}
    t = {"pid": 42, "comm": "sh", "verdict": "sh (pid 42): a SIGSEGV now would leave a core", "container": c}
    assert text._verdict(t).startswith(f"sh (pid 42, in podman container web ({PM[:12]})): ")
    assert text._verdict(dict(t, container=None)) == t["verdict"]
    dest = {"kind": "file", "path": "/core"}
    rows = [dict(pid=1, comm="init", dumps=True, core_destination=dest, signal="SIGSEGV", verdict="v", container=None),
            dict(pid=7, comm="sh", dumps=True, core_destination=dest, signal="SIGSEGV", verdict="v", container=c),
            dict(pid=3, comm="cron", dumps=True, core_destination=dest, signal="SIGSEGV", verdict="v", container=None)]
    out = text.summary_table(rows).split("\n")
    heads = [line for line in out if line.startswith("== ")]
    assert heads[0].startswith("== host: 2 processes") and heads[1].startswith(f"== podman container web")
    assert out.index(heads[0]) < [i for i, line in enumerate(out) if " cron " in line][0] < out.index(heads[1])
    assert all(len(line) <= 100 for line in out)
    # no container at all: the table by blocking gate, as before
    assert not any(line.startswith("== ") for line in text.summary_table([rows[0], rows[2]]).split("\n"))


# -- crash records ----------------------------------------------------------------------------

def _crash_env(**kw):
    from coredoctor.kernel import core_pattern
    env = {"parsed": core_pattern.parse("/var/crash/core.%p"), "signals": {"SIGSEGV": 11},
           "base_dirs": lambda c: ([], []), "instance": lambda c: None, "policy": None, "missing_dir": None}
    env.update(kw)
    return env


def test_a_crash_in_a_container_is_one_record_with_its_container():
    from coredoctor.history import journal, kmsg, report
    seg = kmsg.parse_line("app[7001]: segfault at 0 ip 0000000000401000 sp 00007ffc00000000 error 4 in app[401000,1000]",
                          1795484150.0)
    cd_entry = {"MESSAGE_ID": journal.COREDUMP_MESSAGE_ID, "MESSAGE": "Process 7001 (app) dumped core.",
                              "COREDUMP_PID": "7001", "COREDUMP_COMM": "app", "COREDUMP_SIGNAL": "11",
                              "COREDUMP_TIMESTAMP": "1795484150100000",
                              "COREDUMP_CGROUP": f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
                                                 f"{UID.replace('-', '_')}.slice/crio-{CRIO}.scope",
                              "__REALTIME_TIMESTAMP": "1795484150200000"}
    cd = journal.parse_entry(cd_entry)
    assert cd["cgroup"].endswith(f"crio-{CRIO}.scope")
    complete = lambda c: C.complete(c, root=ROOT)   # noqa: E731 (the live host's reads the real root)
    recs = report.records([seg, cd], _crash_env(complete_container=complete))
    assert len(recs) == 1
    r = recs[0]
    assert {k: r["container"][k] for k in C.KEYS} == {"runtime": "cri-o", "id": CRIO, "name": "api",
                                                      "image": "quay.io/acme/api:2.3", "pod": "api-5c9f7-qq4rt",
                                                      "namespace": "billing"}
    assert r["container_from"].startswith("journal: the cgroup /kubepods.slice/")
    # the same entry sent by another user (anyone can log COREDUMP_CGROUP=): it names nothing
    forged = journal.parse_entry(dict(cd_entry, _UID="1000"), trusted_uids={0})
    assert forged["untrusted"]
    r3 = report.records([forged], _crash_env(complete_container=complete))[0]
    assert (r3["container"], r3["container_from"]) == (None, None)
    # a kernel line alone, on the host: no container, and nothing claimed
    alone = report.records([seg], _crash_env())[0]
    assert (alone["container"], alone["container_from"]) == (None, None)
    # the running instance that stands in for it is in a container: that is named, and how
    inst = {"pid": 7100, "container": {"runtime": "podman", "id": PM, "name": "web"}}
    r2 = report.records([seg], _crash_env(instance=lambda c: inst))[0]
    assert r2["container"]["name"] == "web" and r2["container_from"] == "the cgroup of the running instance pid 7100"
    # ... but not when that container started after the crash (another container of the program)
    late = dict(inst, container_since=seg["time"] + 60)
    r4 = report.records([seg], _crash_env(instance=lambda c: late))[0]
    assert (r4["container"], r4["container_from"]) == (None, None)
    early = dict(inst, container_since=seg["time"] - 60)
    assert report.records([seg], _crash_env(instance=lambda c: early))[0]["container"]["name"] == "web"


def test_crashes_text_names_the_container_under_its_row():
    from coredoctor.render import text
    rec = {"time": 1795484150.0, "pid": 7001, "comm": "app", "signal": "SIGSEGV", "signo": 11,
           "sources": ["kmsg"], "core": {"status": "unknown", "path": None, "size": None, "why": "x"},
           "container": {"runtime": "podman", "id": PM, "name": "web"}, "evidence": [], "likely_reason": None}
    out = text.crashes_report({"crashes": [rec], "read": {"kmsg": "read (1 events)"}})
    lines = out.split("\n")
    i = next(i for i, line in enumerate(lines) if " app " in line)
    assert lines[i + 1].strip() == f"in podman container web ({PM[:12]})"
