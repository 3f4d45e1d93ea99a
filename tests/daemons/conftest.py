import os

import pytest

from ovs import OVS, OVS_CTL


@pytest.fixture
def ovs(saved_sysctls):
    if not os.path.exists(OVS_CTL):
        if os.environ.get("CI"):
            pytest.fail("openvswitch-switch is not installed: .ci/run must install it")
        pytest.skip("openvswitch-switch is not installed (apt-get install openvswitch-switch)")
    o = OVS()
    try:
        yield o
    finally:
        o.cleanup()
