import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tracelab as T  # noqa: E402


@pytest.fixture(autouse=True)
def no_instance_left():
    """Every test: no coredoctor-* tracefs instance remains afterwards."""
    yield
    assert T.instances() == [], f"tracefs instances left behind: {T.instances()}"


@pytest.fixture
def cores(labdir):
    """A world-writable sticky core directory and an absolute core_pattern into it."""
    import lab as L
    d, _ = labdir
    c = L.make_cores(d)
    L.write_sysctl("kernel.core_pattern", f"{c}/core.%p")
    return c


@pytest.fixture(autouse=True, scope="session")
def tracefs_mount_as_found():
    """On a machine where tracefs is not mounted (CI), coredoctor mounts it for each run and
    unmounts it at the end -- except after a SIGKILL (test_sigkill_...): put it back as found."""
    was = T.tracefs_root()
    yield
    if was is None:
        while T.tracefs_root() is not None:
            import subprocess
            if subprocess.run(["umount", T.tracefs_root()], capture_output=True).returncode != 0:
                break
    assert T.tracefs_root() == was
