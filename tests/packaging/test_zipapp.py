"""dist/coredoctor.pyz: one file, the standard library only, run by the system /usr/bin/python3
from an empty directory with no checkout and nothing installed -- as on a customer's host."""

import json
import os
import resource
import shutil
import subprocess
import tempfile
import zipfile

import pytest

from conftest import SYSTEM_PYTHON

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="check and snapshot read other processes: run as root")


@pytest.fixture
def bare(dist, tmp_path, clean_env):
    """An empty directory holding only the zipapp, and a way to run it there."""
    d = tmp_path / "customer"
    d.mkdir()
    shutil.copy(dist.pyz, d / "coredoctor.pyz")
    assert os.listdir(d) == ["coredoctor.pyz"]

    def run(*args, **kw):
        return subprocess.run([SYSTEM_PYTHON, "coredoctor.pyz", *args], cwd=d, env=clean_env,
                              capture_output=True, text=True, timeout=300, **kw)
    run.dir = d
    return run


@pytest.fixture
def no_core_process(tmp_path):
    """A process of ours that cannot dump: RLIMIT_CORE 0 (blocked at the rlimit-core gate on
    every kernel)."""
    def nocore():
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    p = subprocess.Popen(["sleep", "300"], preexec_fn=nocore, cwd=str(tmp_path))
    try:
        yield p.pid
    finally:
        p.kill()
        p.wait()


def test_nothing_of_coredoctor_is_importable_without_the_zipapp(bare, clean_env):
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import coredoctor"], cwd=bare.dir, env=clean_env,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "ModuleNotFoundError" in r.stderr


def test_the_archive_holds_the_package_and_nothing_compiled(dist):
    with zipfile.ZipFile(dist.pyz) as z:
        names = z.namelist()
    assert "__main__.py" in names and "coredoctor/cli.py" in names
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n]
    with open(dist.pyz, "rb") as f:
        assert f.readline() == b"#!/usr/bin/env python3\n"
    assert os.stat(dist.pyz).st_mode & 0o111


def test_version_and_explain_flags(bare):
    import coredoctor
    r = bare("--version")
    assert (r.returncode, r.stdout) == (0, f"coredoctor {coredoctor.__version__}\n")
    r = bare("explain-flags", "204")
    assert r.returncode == 0, r.stderr
    assert "dumpable bits 0-1 = 00: dumpable=0 (SUID_DUMP_DISABLE)" in r.stdout
    assert "00000033" in r.stdout
    r = bare("explain-flags", "--json", "0xcc")
    assert json.loads(r.stdout)["dumpable"] == 0
    # hostile input: one line on stderr, the documented exit code, no traceback
    r = bare("explain-flags", "not-a-number")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_check_pid_gives_the_kernels_gate(bare, no_core_process):
    r = bare("check", "--pid", str(no_core_process))
    assert r.returncode == 1, r.stderr
    assert "rlimit-core" in r.stdout.lower() or "RLIMIT_CORE" in r.stdout
    r = bare("check", "--pid", str(no_core_process), "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "coredoctor.check/1"
    (t,) = doc["targets"]
    assert (t["pid"], t["dumps"], t["blocking_gate"]) == (no_core_process, False, "rlimit-core")


def _user_pids():
    """Pids of live processes that are not kernel threads (PF_KTHREAD, 0x00200000, in stat's flags)."""
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and not int(fields[6]) & 0x00200000:
            out.add(int(d))
    return out


def test_snapshot_all_then_check_from_it_elsewhere(bare, no_core_process, tmp_path, clean_env):
    # exactly the README's line for a customer's host: python3 coredoctor.pyz snapshot --all > host.json
    before = _user_pids()
    with open(bare.dir / "host.json", "w") as out:
        r = subprocess.run([SYSTEM_PYTHON, "coredoctor.pyz", "snapshot", "--all"], cwd=bare.dir, env=clean_env,
                           stdout=out, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with open(bare.dir / "host.json") as f:
        snap = json.load(f)
    assert snap["schema"] == "coredoctor.snapshot/1"
    assert no_core_process in {p["pid"] for p in snap["processes"]}
    # every user process that lived through the whole run is in it (kernel threads are not processes
    # here); the count depends on the machine (a CI container has a handful), the set does not
    lived = before & _user_pids()
    assert lived and lived <= {p["pid"] for p in snap["processes"]}, sorted(lived - {p["pid"] for p in snap["processes"]})
    # evaluated somewhere else, as another user would: offline, from the file
    elsewhere = tempfile.mkdtemp(prefix="cd-elsewhere-", dir="/tmp")
    try:
        os.chmod(elsewhere, 0o755)
        for n in ("host.json", "coredoctor.pyz"):
            shutil.copy(bare.dir / n, elsewhere)
            os.chmod(os.path.join(elsewhere, n), 0o644)
        r = subprocess.run([SYSTEM_PYTHON, "coredoctor.pyz", "check", "--from", "host.json", "--pid",
                            str(no_core_process), "--json"], cwd=elsewhere, env=clean_env, capture_output=True,
                           text=True, timeout=120, user=65534, group=65534, extra_groups=[])
    finally:
        shutil.rmtree(elsewhere)
    assert r.returncode == 1, r.stderr
    (t,) = json.loads(r.stdout)["targets"]
    assert (t["dumps"], t["blocking_gate"]) == (False, "rlimit-core")


def test_the_system_python_is_not_the_venv():
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.prefix, sys.base_prefix)"],
                       capture_output=True, text=True)
    prefix, base = r.stdout.split()
    assert prefix == base == "/usr"


def _pyenv(version: str):
    import glob
    found = sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python{version}"))
    return found[-1] if found else None


@pytest.mark.skipif(_pyenv("3.9") is None, reason="no Python 3.9 interpreter here (pyenv)")
def test_runs_on_the_oldest_python_it_supports(bare, no_core_process, clean_env):
    """3.9: RHEL 9's python3, and RHEL 8's python39."""
    py = _pyenv("3.9")
    r = subprocess.run([py, "coredoctor.pyz", "explain-flags", "204"], cwd=bare.dir, env=clean_env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "SUID_DUMP_DISABLE" in r.stdout, r.stderr
    r = subprocess.run([py, "coredoctor.pyz", "check", "--pid", str(no_core_process), "--json"], cwd=bare.dir,
                       env=clean_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    (t,) = json.loads(r.stdout)["targets"]
    assert (t["dumps"], t["blocking_gate"]) == (False, "rlimit-core")
    r = subprocess.run([py, "coredoctor.pyz", "snapshot", "--pid", str(no_core_process)], cwd=bare.dir,
                       env=clean_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["schema"] == "coredoctor.snapshot/1", r.stderr


@pytest.mark.skipif(_pyenv("3.6") is None, reason="no Python 3.6 interpreter here (pyenv)")
def test_too_old_a_python_gets_one_line_not_a_traceback(bare, clean_env):
    """RHEL 8's platform python3 is 3.6, below what coredoctor supports (requires-python >= 3.9,
    nothing tests it there): refuse in one line that says what to run instead, rather than run
    half-way (without the guard, 3.6 gets through snapshot --all)."""
    r = subprocess.run([_pyenv("3.6"), "coredoctor.pyz", "snapshot", "--all"], cwd=bare.dir, env=clean_env,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "needs Python 3.9 or later, this is 3.6" in r.stderr
