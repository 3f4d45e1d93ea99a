"""snapshot.units reads a unit's files under a root (a temporary tree standing for a machine's
root): systemd's search order, drop-ins by name across directories (a higher directory's file of
the same name masks a lower one), aliases and masks as symlinks in root-owned directories, no
symlink followed from a directory others can write, no way out of the root."""
import os

import pytest

from coredoctor.snapshot import units as SU


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    for d in ("etc/systemd/system/a.service.d", "run/systemd/system/a.service.d", "lib/systemd/system/a.service.d",
              "lib/systemd/system", "etc/sysconfig", "etc/security/limits.d", "tmp"):
        (r / d).mkdir(parents=True, exist_ok=True)
    for d in r.rglob("*"):
        if d.is_dir():
            os.chmod(d, 0o755)
    os.chmod(r, 0o755)
    os.chmod(r / "tmp", 0o1777)
    return r


def _w(root, path, text):
    p = root / path.lstrip("/")
    p.write_text(text)
    return p


def _snap_of(root, unit="a.service"):
    procs = {5: {"pid": 5, "ppid": 1, "nspid": [5, 1], "unit": None, "comm": "systemd"},
             9: {"pid": 9, "ppid": 5, "nspid": [9, 7], "unit": unit, "creds": {"uid": [0] * 4, "gid": [0] * 4}}}
    rec = SU._unit(str(root), unit)
    return procs, rec


@pytest.mark.skipif(os.geteuid() != 0, reason="root-owned directories are what makes a symlink trusted")
def test_search_order_dropins_and_env_files(root):
    _w(root, "/lib/systemd/system/a.service", "[Service]\nEnvironmentFile=-/etc/sysconfig/a\n"
       "EnvironmentFile=-/etc/sysconfig/missing\nLimitCORE=infinity\n")
    _w(root, "/etc/systemd/system/a.service.d/20-x.conf", "[Service]\nLimitCORE=0\n")
    _w(root, "/run/systemd/system/a.service.d/20-x.conf", "[Service]\nLimitCORE=5\n")  # masked by /etc's
    _w(root, "/lib/systemd/system/a.service.d/10-y.conf", "[Service]\nUser=nobody\n")
    _w(root, "/etc/sysconfig/a", "X=1\n")
    rec = SU._unit(str(root), "a.service")
    assert [(f["path"], f["kind"]) for f in rec["files"]] == [
        ("/lib/systemd/system/a.service", "unit"), ("/lib/systemd/system/a.service.d/10-y.conf", "dropin"),
        ("/etc/systemd/system/a.service.d/20-x.conf", "dropin")]
    assert rec["env"] == {"/etc/sysconfig/a": "X=1\n", "/etc/sysconfig/missing": None}
    assert rec["env_errors"] == {"/etc/sysconfig/missing": "missing"}


@pytest.mark.skipif(os.geteuid() != 0, reason="root-owned directories are what makes a symlink trusted")
def test_alias_mask_and_untrusted_links(root):
    _w(root, "/lib/systemd/system/real.service", "[Service]\nUser=x\n")
    os.symlink("/lib/systemd/system/real.service", root / "etc/systemd/system/alias.service")
    rec = SU._unit(str(root), "alias.service")
    assert rec["files"][0]["text"] == "[Service]\nUser=x\n"
    assert rec["files"][0]["links"] == ["/lib/systemd/system/real.service"]
    os.symlink("/dev/null", root / "etc/systemd/system/masked.service")
    _w(root, "/lib/systemd/system/masked.service", "[Service]\n")
    rec = SU._unit(str(root), "masked.service")
    assert rec["masked"] is True and rec["files"][0]["text"] is None
    # a link out of the root stays inside it
    os.symlink("../../../../../../etc/hostname", root / "etc/systemd/system/out.service")
    r = SU._read(str(root), "/etc/systemd/system/out.service")
    assert r["text"] is None and r["error"] == "missing"
    # a symlink in a directory others can write is not followed
    _w(root, "/etc/sysconfig/secret", "S=1\n")
    os.symlink("/etc/sysconfig/secret", root / "tmp/env")
    r = SU._read(str(root), "/tmp/env")
    assert r["text"] is None and "not followed" in r["error"]


def test_big_and_special_files_are_refused(root):
    _w(root, "/etc/sysconfig/big", "x" * (SU.MAX_FILE + 1))
    assert "larger than" in SU._read(str(root), "/etc/sysconfig/big")["error"]
    os.mkfifo(root / "etc/sysconfig/fifo")
    assert SU._read(str(root), "/etc/sysconfig/fifo")["error"] == "not a regular file"


def test_read_keys_by_manager_and_limits(root):
    _w(root, "/lib/systemd/system/a.service", "[Service]\n")
    procs = {5: {"pid": 5, "ppid": 1, "nspid": [5, 1], "unit": None, "comm": "systemd"},
             9: {"pid": 9, "ppid": 5, "nspid": [9, 7], "unit": "a.service",
                 "creds": {"uid": [0] * 4, "gid": [0] * 4, "groups": []}}}
    got = SU.read(procs, [9])
    assert list(got) == ["5:a.service"] and got["5:a.service"]["root"] == "/proc/5/root"
    _w(root, "/etc/security/limits.conf", "* soft core 0\n")
    _w(root, "/etc/security/limits.d/b.conf", "x\n")
    _w(root, "/etc/security/limits.d/a.conf", "y\n")
    assert [r["path"] for r in SU.read_limits(str(root))] == [
        "/etc/security/limits.conf", "/etc/security/limits.d/a.conf", "/etc/security/limits.d/b.conf"]


def _fixture_with_units():
    import copy
    import json
    snap = json.load(open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "dropped-suid0.json")))
    snap = copy.deepcopy(snap)
    snap["units"] = {"0:a.service": {"unit": "a.service", "root": "/", "masked": False, "manager_pid": None,
                                     "manager_comm": None, "files": [{"path": "/lib/systemd/system/a.service",
                                                                      "text": "[Service]\n", "links": [],
                                                                      "error": None, "kind": "unit"}],
                                     "env": {"/etc/x": None}, "env_errors": {"/etc/x": "missing"}, "system": [],
                                     "users": {"999": "openvswitch"}, "groups": {}}}
    snap["limits_conf"] = [{"path": "/etc/security/limits.conf", "text": "* soft core 0\n", "links": [],
                            "error": None}]
    return snap


def test_validate_accepts_the_units_section_and_names_a_bad_field():
    from coredoctor.snapshot import validate as V
    snap = _fixture_with_units()
    V.validate(snap)
    snap["units"]["0:a.service"]["files"][0]["text"] = 5
    with pytest.raises(V.Bad) as e:
        V.validate(snap)
    assert "units" in str(e.value) and "files[0].text" in str(e.value)
    snap = _fixture_with_units()
    snap["limits_conf"][0]["text"] = "x" * ((1 << 16) + 1)
    with pytest.raises(V.Bad):
        V.validate(snap)
