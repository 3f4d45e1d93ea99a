"""The Ansible collection's pure parts (contrib/ansible/.../plugins/module_utils/coredoctor.py):
the command lines the modules run, the reading of coredoctor's JSON, the container filter, the
fleet summary and the diff of a fix plan; and the collection's version, kept equal to the
package's. (ansible-playbook against real hosts: tests/fleet/test_ansible.py.)"""

import importlib.util
import os
import re

import pytest

import coredoctor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTION = os.path.join(ROOT, "contrib", "ansible", "ansible_collections", "coredoctor", "coredoctor")


def _load():
    path = os.path.join(COLLECTION, "plugins", "module_utils", "coredoctor.py")
    spec = importlib.util.spec_from_file_location("cd_ansible_utils", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


U = _load()

PODMAN_ID = "72810c3f075941b2508bce96ecd24223522b92beddf868b62e8aab4d60e67f9b"


def test_galaxy_version_is_the_package_version():
    with open(os.path.join(COLLECTION, "galaxy.yml")) as f:
        text = f.read()
    assert re.search(r"^namespace: coredoctor$", text, re.M)
    assert re.search(r"^name: coredoctor$", text, re.M)
    m = re.search(r"^version: (\S+)$", text, re.M)
    assert m and m.group(1) == coredoctor.__version__


def test_module_utils_imports_no_ansible():
    """It is tested here without Ansible, and runs on the managed host with its Python."""
    with open(os.path.join(COLLECTION, "plugins", "module_utils", "coredoctor.py")) as f:
        src = f.read()
    assert not re.search(r"^\s*(from|import) ansible", src, re.M)


def test_base_command_runs_a_zipapp_with_the_module_python():
    assert U.base_command("/usr/local/lib/coredoctor/coredoctor.pyz", "/usr/bin/python3") == \
        ["/usr/bin/python3", "/usr/local/lib/coredoctor/coredoctor.pyz"]
    assert U.base_command("/usr/bin/coredoctor", "/usr/bin/python3") == ["/usr/bin/coredoctor"]


def test_check_argv_is_all_without_selectors():
    assert U.check_argv() == ["check", "--json", "--all"]
    assert U.check_argv(signal="SIGABRT", how="kill") == ["check", "--json", "--all", "--signal", "SIGABRT",
                                                         "--how", "kill"]


def test_check_argv_with_selectors():
    argv = U.check_argv(targets=["ovs-vswitchd"], pids=[12, "13"], units=["nginx.service"])
    assert argv == ["check", "--json", "--pid", "12", "--pid", "13", "ovs-vswitchd", "nginx.service"]
    assert "--all" not in argv


@pytest.mark.parametrize("bad", ["--all", "-p", ""])
def test_a_target_is_never_an_option(bad):
    """A target word that looks like an option would change what coredoctor does (--apply)."""
    with pytest.raises(ValueError):
        U.check_argv(targets=[bad])
    with pytest.raises(ValueError):
        U.fix_argv(targets=[bad])


def test_a_unit_has_a_suffix():
    with pytest.raises(ValueError):
        U.check_argv(units=["nginx"])


def test_fix_argv():
    assert U.fix_argv(pids=[5]) == ["fix", "--json", "--pid", "5"]
    assert U.fix_argv(targets=["nginx"], apply=True) == ["fix", "--json", "--apply", "nginx"]
    with pytest.raises(ValueError):
        U.fix_argv()  # fix takes no --all
    with pytest.raises(ValueError):
        U.fix_argv(pids=["5; rm -rf /"])


def test_parse_json_wants_the_schema():
    assert U.parse_json('{"schema": "coredoctor.fix/1", "actions": []}', "coredoctor.fix/1")["actions"] == []
    for bad in ("", "not json", "[]", '{"schema": "coredoctor.check/1"}'):
        with pytest.raises(ValueError):
            U.parse_json(bad, "coredoctor.fix/1")


def test_error_line_is_coredoctors_last_line():
    assert U.error_line(2, "coredoctor: no such process: pid 4\n") == \
        "coredoctor exited 2: coredoctor: no such process: pid 4"
    assert U.error_line(70, "") == "coredoctor exited 70: (nothing on stderr)"


def test_container_ids_cgroupfs_and_systemd_drivers():
    cgroupfs = f"12:pids:/libpod_parent/libpod-{PODMAN_ID}\n0::/libpod_parent/libpod-{PODMAN_ID}\n"
    assert U.container_ids(cgroupfs) == [PODMAN_ID]
    systemd = f"0::/machine.slice/libpod-{PODMAN_ID}.scope/container\n"
    assert U.container_ids(systemd) == [PODMAN_ID]
    docker = "0::/system.slice/docker-" + "a" * 64 + ".scope\n"
    assert U.container_ids(docker) == ["a" * 64]
    # the monitor (conmon) is not the container; a host process names none
    assert U.container_ids(f"0::/machine.slice/libpod-conmon-{PODMAN_ID}.scope\n") == []
    assert U.container_ids("0::/system.slice/ssh.service\n") == []


def test_in_containers_by_prefix():
    assert U.in_containers([PODMAN_ID], [PODMAN_ID[:12]])
    assert U.in_containers([PODMAN_ID], [PODMAN_ID.upper()[:12]])
    assert not U.in_containers([PODMAN_ID], ["0" * 12])
    for bad in ("7281", "zz" * 8, "ct1"):  # too short to name one container, or not an id
        with pytest.raises(ValueError):
            U.in_containers([PODMAN_ID], [bad])


def test_filter_containers():
    doc = {"schema": "coredoctor.check/1", "targets": [{"pid": 1}, {"pid": 2}, {"pid": 3}]}
    cg = {1: f"0::/libpod_parent/libpod-{PODMAN_ID}\n", 2: "0::/user.slice\n", 3: None}
    out = U.filter_containers(doc, [PODMAN_ID[:12]], cg.get)
    assert [t["pid"] for t in out["targets"]] == [1]
    assert len(doc["targets"]) == 3  # the input is not changed


def test_summary_by_gate():
    doc = {"targets": [
        {"pid": 1, "comm": "init", "unit": None, "dumps": True, "blocking_gate": None},
        {"pid": 7, "comm": "ovs-vswitchd", "unit": "ovs.service", "dumps": False, "blocking_gate": "dumpable"},
        {"pid": 8, "comm": "nginx", "unit": "nginx.service", "dumps": False, "blocking_gate": "rlimit-core"},
        {"pid": 9, "comm": "chronyd", "unit": None, "dumps": False, "blocking_gate": "dumpable"},
        {"pid": 10, "comm": "x", "unit": None, "dumps": None, "blocking_gate": None},
    ]}
    s = U.summary(doc)
    assert (s["total"], s["core"], s["no_core"], s["undecided"]) == (5, 1, 3, 1)
    assert [p["pid"] for p in s["by_gate"]["dumpable"]] == [7, 9]
    assert s["by_gate"]["rlimit-core"] == [{"pid": 8, "comm": "nginx", "unit": "nginx.service"}]
    assert s["by_gate"]["unknown"] == [{"pid": 10, "comm": "x", "unit": None}]
    assert U.summary({"targets": []}) == {"total": 0, "core": 0, "no_core": 0, "undecided": 0, "by_gate": {}}


SEED_PLAN = {"schema": "coredoctor.fix/1", "actions": [
    {"kind": "mkdir", "path": "/var/crash", "mode": "1777"},
    {"kind": "sysctl", "key": "kernel.core_pattern", "value": "/var/crash/core.%e.%p.%t"},
    {"kind": "sysctl", "key": "fs.suid_dumpable", "value": "2"},
    {"kind": "file", "path": "/etc/sysctl.d/90-coredoctor.conf", "mode": "0644",
     "content": "kernel.core_pattern = /var/crash/core.%e.%p.%t\nfs.suid_dumpable = 2\n"},
    {"kind": "prlimit", "pid": 42, "resource": "core", "value": [None, None]},
], "reported": [{"kind": "restart", "pid": 42}]}


def test_plan_diff_of_the_seed_fix():
    files = {"/proc/sys/kernel/core_pattern": "core\n", "/proc/sys/fs/suid_dumpable": "0\n"}
    d = U.plan_diff(SEED_PLAN, files.get, lambda pid, res: (0, -1) if (pid, res) == (42, "core") else None)
    assert len(d) == 5  # one per action, in the plan's order; the reported restart is no change
    assert d[0]["before"] == {"path": "/var/crash", "state": "absent"}
    assert d[0]["after"] == {"path": "/var/crash", "state": "directory", "mode": "1777"}
    assert (d[1]["before"], d[1]["after"]) == ("core\n", "/var/crash/core.%e.%p.%t\n")
    assert "kernel.core_pattern" in d[1]["before_header"]
    assert (d[2]["before"], d[2]["after"]) == ("0\n", "2\n")
    assert d[3]["before"] == "" and d[3]["before_header"].endswith("(absent)")
    assert d[3]["after"] == SEED_PLAN["actions"][3]["content"]
    assert (d[4]["before"], d[4]["after"]) == ("0:unlimited\n", "unlimited:unlimited\n")
    assert d[4]["before_header"] == "RLIMIT_CORE of pid 42"


def test_plan_diff_of_an_existing_file_and_unknown_values():
    plan = {"actions": [{"kind": "file", "path": "/etc/x.conf", "mode": "0644", "content": "b\n"},
                        {"kind": "sysctl", "key": "fs.suid_dumpable", "value": "2"},
                        {"kind": "prlimit", "pid": 9, "resource": "core", "value": [1024, None]},
                        {"kind": "something-new"}]}
    d = U.plan_diff(plan, {"/etc/x.conf": "a\n"}.get, lambda pid, res: None)
    assert len(d) == 3  # a kind it cannot show is left out, not guessed at
    assert (d[0]["before"], d[0]["after"]) == ("a\n", "b\n")
    assert not d[0]["before_header"].endswith("(absent)")
    assert d[1]["before"] == "(unknown)\n"
    assert (d[2]["before"], d[2]["after"]) == ("(unknown)\n", "1024:unlimited\n")
    assert U.plan_diff({"actions": []}, {}.get, lambda p, r: None) == []


def test_read_limit_reads_proc_limits():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    as_proc = tuple(-1 if v == resource.RLIM_INFINITY else v for v in (soft, hard))
    assert U.read_limit(os.getpid(), "core") == as_proc
    assert U.read_limit(os.getpid(), "nofile") is None
    assert U.read_limit(None, "core") is None


def test_read_text_of_a_missing_file(tmp_path):
    assert U.read_text(str(tmp_path / "nothing")) is None
    (tmp_path / "f").write_bytes(b"a\xffb\n")
    assert U.read_text(str(tmp_path / "f")) == "a\ufffdb\n"


def test_find_coredoctor_prefers_path():
    assert U.find_coredoctor(lambda n: "/usr/bin/" + n) == "/usr/bin/coredoctor"


def _collection_py():
    out = []
    for d, _, files in os.walk(os.path.join(COLLECTION, "plugins")):
        out += [os.path.join(d, n) for n in files if n.endswith(".py")]
    return sorted(out)


def test_modules_run_on_old_managed_hosts_with_the_standard_library():
    """The modules run on the managed host's Python (RHEL 8's platform-python is 3.6): its
    syntax, and imports of the standard library, ansible's module_utils and the collection's."""
    import ast
    import sys
    files = _collection_py()
    assert len(files) == 3
    stdlib = getattr(sys, "stdlib_module_names", None)
    for path in files:
        with open(path) as f:
            tree = ast.parse(f.read(), filename=path, feature_version=(3, 6))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for n in names:
                top = n.split(".")[0]
                assert (top in ("ansible", "__future__") or n.startswith("ansible_collections.coredoctor.coredoctor.")
                        or (stdlib is None or top in stdlib)), (path, n)
                if top == "ansible":
                    assert n.startswith("ansible.module_utils"), (path, n)
            assert not isinstance(node, ast.JoinedStr), (path, "an f-string: older ansible-core still runs modules on Python 2.7")


def test_applied_something_counts_the_actions_that_did_not_fail():
    acts = [{"kind": "sysctl"}, {"kind": "prlimit"}]
    assert U.applied_something({"applied": True, "actions": acts, "errors": []})
    assert U.applied_something({"applied": True, "actions": acts, "errors": ["EPERM: ... CAP_SYS_RESOURCE"]})
    # a second apply whose one action (a live limit root may not raise here) failed again
    assert not U.applied_something({"applied": True, "actions": acts[1:], "errors": ["EPERM"]})
    assert not U.applied_something({"applied": False, "id": None, "actions": []})


def test_check_argv_passes_containers_to_check():
    """``container:`` is coredoctor check's --container (name, id or prefix: coredoctor decides)."""
    assert U.check_argv(containers=["web", PODMAN_ID[:12]]) == \
        ["check", "--json", "--container", "web", "--container", PODMAN_ID[:12]]
    argv = U.check_argv(units=["nginx.service"], containers=["web"], signal="SIGABRT")
    assert argv == ["check", "--json", "--container", "web", "nginx.service", "--signal", "SIGABRT"]
    for bad in ("--all", "-x", ""):  # never an option of coredoctor's
        with pytest.raises(ValueError):
            U.check_argv(containers=[bad])


def test_unknown_option_reads_argparses_refusal():
    """The refusal of an option coredoctor does not have, as coredoctor's own argparse prints it
    (an older coredoctor given --container), and not any other exit 2."""
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    r = subprocess.run([sys.executable, "-m", "coredoctor", "check", "--json", "--no-such-option", "x"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == U.EXIT_USAGE, r.stderr
    assert U.unknown_option(r.returncode, r.stderr, "--no-such-option")
    assert not U.unknown_option(r.returncode, r.stderr, "--container")
    assert not U.unknown_option(1, r.stderr, "--no-such-option")
    assert not U.unknown_option(2, "coredoctor: no container 'web' is running\n", "--container")
    assert not U.unknown_option(2, "", "--container")
