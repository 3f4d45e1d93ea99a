"""A Debian 12 root with openssh-server and python3 (mmdebstrap), for podman containers that
Ansible reaches over ssh on loopback ports (tests/fleet/test_ansible.py).

Built once as a tarball under /var/tmp/coredoctor-fleet and reused while it is younger than
MAX_AGE and made by the same recipe (its hash is in the name); COREDOCTOR_FLEET_FRESH=1 rebuilds.
The mirror is the one this machine's apt uses (tests/packaging/bookworm.py reads it).
"""

import glob
import hashlib
import os
import subprocess
import sys
import time
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "packaging"))

from bookworm import debian_mirror  # noqa: E402

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


def tarball(log=print) -> str:
    mirror = debian_mirror()
    key = hashlib.sha256(repr((RECIPE, command("T", mirror))).encode()).hexdigest()[:12]
    path = os.path.join(CACHE, f"{SUITE}-ssh-{key}.tar")
    if (os.environ.get("COREDOCTOR_FLEET_FRESH") != "1" and os.path.exists(path)
            and time.time() - os.stat(path).st_mtime < MAX_AGE):
        return path
    os.makedirs(CACHE, mode=0o755, exist_ok=True)
    for old in glob.glob(os.path.join(CACHE, f"{SUITE}-ssh-*.tar")):
        if os.path.isfile(old) and not os.path.islink(old):
            os.unlink(old)
    tmp = path[:-len(".tar")] + ".part.tar"  # mmdebstrap picks the format from the name's end
    t0 = time.monotonic()
    r = subprocess.run(command(tmp, mirror), capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise RuntimeError(f"mmdebstrap failed ({r.returncode}): {r.stderr[-3000:]}")
    os.replace(tmp, path)
    log(f"built {path} from {mirror} in {time.monotonic() - t0:.0f} s")
    return path


if __name__ == "__main__":
    print(tarball())
