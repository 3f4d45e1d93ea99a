"""A Debian 12 root with openssh-server and python3 (mmdebstrap), for podman containers that
Ansible reaches over ssh on loopback ports (tests/fleet/test_ansible.py).

Built once as a tarball under /var/tmp/coredoctor-fleet and reused while it is younger than
MAX_AGE and made by the same recipe (its hash is in the name); COREDOCTOR_FLEET_FRESH=1 rebuilds.
The mirror is the one this machine's apt uses (tests/packaging/bookworm.py reads it).
"""

import os
import sys
from typing import Callable, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "packaging"))

from bookworm import cached_tarball, debian_mirror  # noqa: E402

CACHE = "/var/tmp/coredoctor-fleet"
SUITE = "bookworm"
MAX_AGE = 14 * 86400
INCLUDE = ["openssh-server", "python3"]
RECIPE = 1  # bump when the command below changes meaning


def command(target: str, mirror: str) -> List[str]:
    return ["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase", "--include=" + ",".join(INCLUDE),
            # no host keys baked in: each container makes its own at start (ssh-keygen -A)
            "--customize-hook=rm -f \"$1\"/etc/ssh/ssh_host_*",
            SUITE, target, mirror]


def tarball(log: Callable[[str], object] = print) -> str:
    mirror = debian_mirror()
    return cached_tarball(f"{SUITE}-ssh", lambda target: command(target, mirror), RECIPE, CACHE,
                          "COREDOCTOR_FLEET_FRESH", log, MAX_AGE)


if __name__ == "__main__":
    print(tarball())
