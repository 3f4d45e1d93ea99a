import os
import subprocess

from coredoctor.kernel import core_pattern as cp
from coredoctor.kernel.gates import pattern_context, write_lines_cmd
from coredoctor.snapshot import fs


def test_fix_commands_write_patterns_verbatim(tmp_path):
    """printf must not eat core_pattern specifiers (%e, %p) as directives."""
    out = tmp_path / "90-coredoctor.conf"
    cmd = write_lines_cmd(str(out), "kernel.core_pattern = /var/crash/core.%e.%p.%t", "fs.suid_dumpable = 2",
                          "it's")
    subprocess.run(cmd, shell=True, check=True)
    assert out.read_text() == "kernel.core_pattern = /var/crash/core.%e.%p.%t\nfs.suid_dumpable = 2\nit's\n"


def _tree(tmp_path):
    root = tmp_path / "root"
    for d in ("a/b", "a/c", "d"):
        (root / d).mkdir(parents=True)
    os.symlink("/d", root / "a" / "b" / "abs")
    return root


def test_walk_relative_dotdot_and_absolute_symlink(tmp_path):
    root = _tree(tmp_path)
    cwd = root / "a" / "b"
    r = fs.walk_dir(str(cwd), "../c", root=str(root), cwd_path="/a/b")
    assert r["exists"] and r["host_path"].endswith("/a/c")
    r = fs.walk_dir(str(cwd), "abs", root=str(root), cwd_path="/a/b")
    assert r["exists"] and r["host_path"] == str(root) + "/d"     # from the task's root, not the cwd
    r = fs.walk_dir(str(cwd), "../../../..", root=str(root), cwd_path="/a/b")
    assert r["exists"] and r["host_path"].rstrip("/") == str(root)  # '..' stops at the root
    r = fs.walk_dir(str(root), "/a/nope", root=str(root))
    assert not r["exists"] and r["error"] == "ENOENT" and r["missing"] == "a/nope"


def _proc(**kw):
    p = {"pid": 7, "nspid": [7], "threads": 1, "comm": "worker", "exe": "/usr/bin/x (deleted)",
         "creds": {"uid": [0] * 4, "gid": [0] * 4}, "limits": {"core": [None, None]}}
    p.update(kw)
    return p


def test_thread_name_and_exe_path_knowledge():
    k = {"hostname": "h"}
    parts = lambda p: cp.expand(cp.parse("/c/%e.%f.%F"), pattern_context(p, k, 11, 1))["parts"]  # noqa: E731
    assert cp.render(parts(_proc())) == "/c/worker.x (deleted)."        # %F: nothing in file mode
    assert cp.render(parts(_proc(threads=4))) == "/c/*.x (deleted)."    # which thread faults?
    assert cp.render(parts(_proc(threads=4, thread_comms_same=True))) == "/c/worker.x (deleted)."
    assert cp.render(parts(_proc(root_is_host=False))) == "/c/worker.*."


def test_plan_from_a_recorded_snapshot():
    """The seed case, recorded: an absolute pattern in a missing /var/crash, dumpable 0."""
    import json
    from coredoctor.fix import plan as fplan
    from coredoctor.kernel import gates
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    snap = json.load(open(os.path.join(here, "fixtures", "dropped-suid0.json")))
    procs = {p["pid"]: p for p in snap["processes"]}
    pid = snap["targets"][0]
    t = gates.evaluate(snap, procs[pid], procs.get(procs[pid]["ppid"]), "SIGSEGV", None, procs)
    p = fplan.plan(snap, t, running={"sshd", "bash"})
    kinds = [(a["kind"], a.get("key") or a.get("path")) for a in p["actions"]]
    assert kinds == [("mkdir", "/var/crash"), ("sysctl", "fs.suid_dumpable"), ("file", fplan.SYSCTL_FILE)]
    assert "fs.suid_dumpable = 2" in p["actions"][-1]["content"]
    assert p["needs_restart"][0]["pid"] == pid
    assert any("sshd" in w for w in p["warnings"]) and p["security"] and not p["refused"]
    # once applied (the sysctl and the file in place), planning again finds nothing to do
    snap["sysctl"]["fs.suid_dumpable"] = 2
    snap["paths"] = {k: dict(v, exists=True) for k, v in snap["paths"].items()}
    again = fplan.plan(snap, t, existing_files={fplan.SYSCTL_FILE: p["actions"][-1]["content"]})
    assert again["actions"] == []
