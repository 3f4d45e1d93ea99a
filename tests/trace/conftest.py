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
