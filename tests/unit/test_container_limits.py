"""What a container runtime set for RLIMIT_CORE (snapshot/ctspec.py, read from a planted host
root) and the origin finder that names it on the rlimit-core gate (origin/containers.py)."""

import json
import os

from coredoctor import origin
from coredoctor.origin import containers as OC
from coredoctor.snapshot import ctspec

CID = "6ba63ec50e9fc341c3a60eda299c5e22139c5cb40a0c5de712fb167da03758d4"


def _plant(root, rel, text, mode=0o644):
    path = os.path.join(root, rel.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return rel


def _podman_root(tmp_path, rlimits, autoremove="TRUE"):
    root = str(tmp_path)
    cfg = {"process": {"rlimits": rlimits}, "annotations": {"io.podman.annotations.autoremove": autoremove}}
    bundle = _plant(root, f"/var/lib/containers/storage/overlay-containers/{CID}/userdata/config.json",
                    json.dumps(cfg))
    _plant(root, "/etc/containers/containers.conf",
           '[containers]\n# default_ulimits = ["core=1:1"]\ndefault_ulimits = [\n  "nofile=1024:1024",\n'
           '  "core=0:0",  # was "core=5:5"\n]\n')
    return root, bundle


def test_parse_ulimit():
    assert ctspec.parse_ulimit("core=-1:-1") == [None, None]
    assert ctspec.parse_ulimit("core=4096") == [4096, 4096]
    assert ctspec.parse_ulimit("core=1:unlimited") == [1, None]
    assert ctspec.parse_ulimit("nofile=1:1") is None and ctspec.parse_ulimit("core=x") is None


def test_spec_and_defaults_from_the_runtime_files(tmp_path):
    root, bundle = _podman_root(tmp_path, [{"type": "RLIMIT_CORE", "soft": 0, "hard": 0}])
    procs = [{"pid": 7, "container": {"runtime": "podman", "id": CID}}]
    defaults = ctspec.read(procs, root)
    assert procs[0]["container_spec"] == {"bundle": bundle, "rlimit_core": [0, 0], "autoremove": True,
                                          "autoremove_from": f"io.podman.annotations.autoremove=TRUE in {bundle}"}
    assert defaults == [{"runtime": "podman", "file": "/etc/containers/containers.conf", "line": 5,
                         "text": '"core=0:0",  # was "core=5:5"', "core": [0, 0]}]  # comments are not settings


def test_docker_defaults_and_autoremove(tmp_path):
    root = str(tmp_path)
    _plant(root, "/etc/docker/daemon.json",
           '{\n "default-ulimits": {\n  "core": {"Name": "core", "Soft": 0, "Hard": -1}\n }\n}\n')
    _plant(root, f"/var/lib/docker/containers/{CID}/hostconfig.json", '{"AutoRemove": false}')
    procs = [{"pid": 7, "container": {"runtime": "docker", "id": CID}}]
    assert ctspec.read(procs, root) == [{"runtime": "docker", "file": "/etc/docker/daemon.json", "line": 3,
                                         "text": '"core": {"Name": "core", "Soft": 0, "Hard": -1}',
                                         "core": [0, None]}]
    assert procs[0]["container_spec"]["autoremove"] is False


def _target(status="fail"):
    return {"gates": [{"id": "rlimit-core", "status": status}], "dumpable": {}, "fixes": []}


def _proc(spec, runtime="podman"):
    return {"pid": 7, "limits": {"core": [0, 0]}, "container": {"runtime": runtime, "id": CID, "name": "web"},
            "container_spec": spec}


def test_finder_names_the_default_line_that_fed_the_spec(tmp_path):
    root, bundle = _podman_root(tmp_path, [{"type": "RLIMIT_CORE", "soft": 0, "hard": 0}])
    proc = _proc(None)
    snap = {"runtime_defaults": ctspec.read([proc], root)}
    found = OC.find(snap, proc, _target())
    o = found.origins["rlimit-core"]
    assert o["kind"] == "container" and o["file"] == bundle and "the runtime's default" in o["summary"]
    assert [(v["file"], v["line"]) for v in o["via"]] == [("/etc/containers/containers.conf", 5)]
    cmds = found.fixes[0]["commands"]
    assert "# per container: podman run --ulimit core=-1:-1 ..." in cmds
    assert '#   default_ulimits = ["core=-1:-1"]' in cmds and found.fixes[0]["needs_restart"]


def test_finder_per_container_flag_and_no_spec_limit():
    o = OC.find({}, _proc({"bundle": "/b", "rlimit_core": [0, 0]}), _target()).origins["rlimit-core"]
    assert "set for this container (podman run --ulimit core=...)" in o["summary"] and o["via"] == []
    o = OC.find({}, _proc({"bundle": "/b", "rlimit_core": None}), _target()).origins["rlimit-core"]
    assert "sets no RLIMIT_CORE" in o["summary"] and "conmon" in o["summary"]
    assert OC.find({}, dict(_proc(None), container=None), _target()) == ({}, [])
    assert OC.find({}, _proc(None, runtime="lxc"), _target()) == ({}, [])


def test_attached_through_the_finder_table():
    assert OC.find in origin.FINDERS
    t = _target()
    origin.attach({}, _proc({"bundle": "/b", "rlimit_core": [0, 0]}), t)
    assert t["gates"][0]["origin"]["kind"] == "container"
    assert any("recreate the container web" in f["summary"] for f in t["fixes"])
    passed = _target("pass")
    origin.attach({}, _proc({"bundle": "/b", "rlimit_core": [0, 0]}), passed)
    assert "origin" not in passed["gates"][0] and passed["fixes"] == []


def test_dockerd_default_ulimit_on_its_command_line(tmp_path):
    import subprocess
    import time
    script = tmp_path / "dockerd"       # a script's comm is its file name
    script.write_text("#!/bin/sh\nread x\n")  # a builtin: no child process to leave behind
    script.chmod(0o755)
    p = subprocess.Popen([str(script), "--default-ulimit", "core=0:0", "--default-ulimit=nofile=1:1"],
                         stdin=subprocess.PIPE)
    try:
        deadline = time.time() + 5
        recs = []
        while time.time() < deadline and not recs:
            recs = [r for r in ctspec._dockerd_argv() if r["file"] == f"/proc/{p.pid}/cmdline"]
            time.sleep(0.05)
        assert recs == [{"runtime": "docker", "file": f"/proc/{p.pid}/cmdline", "line": None,
                         "text": "--default-ulimit core=0:0", "core": [0, 0]}]
    finally:
        p.kill()
        p.wait()
