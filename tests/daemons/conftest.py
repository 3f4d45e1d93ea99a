import pytest

from lab import require_installed
from ovs import OVS, OVS_CTL


@pytest.fixture
def ovs(saved_sysctls):
    require_installed(OVS_CTL, "openvswitch-switch")
    o = OVS()
    try:
        yield o
    finally:
        o.cleanup()
