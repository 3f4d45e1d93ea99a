import os
import shutil
import subprocess
import tempfile

import pytest

import lab as L


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="the crash lab changes sysctls and credentials: run the tests as root")
        for it in items:
            if "crashlab" in str(it.fspath):
                it.add_marker(skip)


@pytest.fixture
def saved_sysctls():
    """Save the core-dump sysctls and restore them even when the test fails."""
    saved = {k: L.read_sysctl(k) for k in L.SYSCTLS}
    try:
        yield saved
    finally:
        L.write_sysctl("fs.suid_dumpable", saved["fs.suid_dumpable"])
        for k in ("kernel.core_pattern", "kernel.core_uses_pid", "kernel.core_pipe_limit"):
            L.write_sysctl(k, saved[k])
        assert {k: L.read_sysctl(k) for k in L.SYSCTLS} == saved


@pytest.fixture
def labdir(saved_sysctls):
    d = tempfile.mkdtemp(prefix="cdlab-", dir="/tmp")
    os.chmod(d, 0o755)
    mounts = []
    try:
        yield d, mounts
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(d, ignore_errors=True)
