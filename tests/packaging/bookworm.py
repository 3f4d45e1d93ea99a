"""A minimal Debian 12 (bookworm) root made with mmdebstrap, for installing the .deb into.

The root is mmdebstrap's ``apt`` variant (Essential: yes packages and apt) plus man-db (to read
the installed pages); python3 is *not* in it -- ``apt-get install ./coredoctor_*.deb`` has to
resolve it from the package's Depends. apt's package lists and python3's .debs (downloaded, not
installed: ``apt-get install --download-only``) are kept in the root, so the install needs no
network at test time. The mirror is the one this machine's apt uses (/etc/apt/sources.list,
/etc/apt/sources.list.d/*.sources or *.list).

The root is built once as a tarball under /var/tmp/coredoctor-pkgtest and reused while it is
younger than MAX_AGE and made with the same recipe (the recipe's hash is in its name); a fresh
machine builds it (about a minute with a nearby mirror). COREDOCTOR_PKGTEST_FRESH=1 rebuilds.
Each test extracts its own copy and runs commands in it with chroot inside a private mount
namespace (unshare --mount), so /proc mounted for it disappears with the namespace, even if the
test dies.
"""

import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Callable, List, Optional

CACHE = "/var/tmp/coredoctor-pkgtest"
SUITE = "bookworm"
MAX_AGE = 14 * 86400
INCLUDE = ["man-db"]
PREFETCH = ["python3"]
RECIPE = 1  # bump when the mmdebstrap command below changes meaning


def debian_mirror() -> str:
    """The http(s) URI this machine's apt uses for Debian's main archive (not -security)."""
    uris: List[str] = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and (
                        SUITE in fields.get("Suites", "").split()):
                    uris += fields.get("URIs", "").split()
        elif path.endswith(".list"):
            for ln in text.splitlines():
                w = ln.split()
                if len(w) >= 3 and w[0] == "deb":
                    w = [x for x in w if not x.startswith("[")]
                    if len(w) >= 3 and w[2] == SUITE:
                        uris.append(w[1])
    uris = [u for u in uris if "security" not in u]
    if not uris:
        raise RuntimeError(f"no Debian {SUITE} mirror in this machine's apt sources")
    return uris[0]


def mmdebstrap_command(target: str, mirror: str) -> List[str]:
    return ["mmdebstrap", "--quiet", "--mode=root", "--variant=apt", "--include=" + ",".join(INCLUDE),
            "--skip=cleanup/apt/lists", "--skip=cleanup/apt/cache",
            "--customize-hook=chroot \"$1\" apt-get install --download-only -y -q " + " ".join(PREFETCH),
            SUITE, target, mirror]


def cached_tarball(key: str, command: Callable[[str], List[str]], recipe: int, cache: str, fresh_env: str,
                   log: Callable[[str], object] = print, max_age: float = MAX_AGE) -> str:
    """The tarball *cache*/KEY-HASH.tar that *command(target)* writes (an mmdebstrap command line,
    target ending in .tar), built when missing, older than *max_age* or made by another recipe
    (HASH is that of *recipe* and *command*), or when the environment has *fresh_env*=1. It is
    built as KEY-HASH.part.tar and renamed, so a killed build leaves no tarball that looks whole;
    KEY's older tarballs (and parts) in *cache* are removed (regular files only, never a link)."""
    digest = hashlib.sha256(repr((recipe, command("T"))).encode()).hexdigest()[:12]
    path = os.path.join(cache, f"{key}-{digest}.tar")
    fresh = os.environ.get(fresh_env) == "1"
    if not fresh and os.path.exists(path) and time.time() - os.stat(path).st_mtime < max_age:
        return path
    os.makedirs(cache, mode=0o755, exist_ok=True)
    mine = re.compile(re.escape(key) + r"-[0-9a-f]{12}(\.part)?\.tar")
    for n in os.listdir(cache):
        old = os.path.join(cache, n)
        if mine.fullmatch(n) and os.path.isfile(old) and not os.path.islink(old):
            os.unlink(old)
    tmp = path[:-len(".tar")] + ".part.tar"  # mmdebstrap picks the format from the name's end
    t0 = time.monotonic()
    r = subprocess.run(command(tmp), capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise RuntimeError(f"{command(tmp)[0]} failed ({r.returncode}): {r.stderr[-3000:]}")
    os.replace(tmp, path)
    log(f"built {path} in {time.monotonic() - t0:.0f} s")
    return path


def tarball(log: Callable[[str], object] = print) -> str:
    """The cached root tarball, built when missing, stale or made by another recipe."""
    mirror = debian_mirror()
    return cached_tarball(SUITE, lambda target: mmdebstrap_command(target, mirror), RECIPE, CACHE,
                          "COREDOCTOR_PKGTEST_FRESH", log)


class Root:
    """One extracted copy of the root; ``run`` executes a shell command chrooted into it."""

    def __init__(self, tar: str) -> None:
        self.path = tempfile.mkdtemp(prefix="cd-bookworm-", dir="/var/tmp")
        try:
            subprocess.run(["tar", "-C", self.path, "--numeric-owner", "-xf", tar], check=True)
        except BaseException:
            shutil.rmtree(self.path)
            raise

    def run(self, command: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
        inner = ("mount -t proc proc \"$R/proc\" && exec chroot \"$R\" /usr/bin/env -i "
                 "PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "
                 "/bin/sh -c \"$CMD\"")
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", inner],
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "R": self.path, "CMD": command},
                           capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, (command, r.returncode, r.stdout[-3000:], r.stderr[-3000:])
        return r

    def files(self, exclude: Optional[List[str]] = None) -> set:
        out = set()
        for d, dirs, files in os.walk(self.path):
            for n in dirs + files:
                p = os.path.join(d, n)[len(self.path):]
                if not any(p.startswith(x) for x in (exclude or [])):
                    out.add(p)
        return out

    def close(self) -> None:
        # the namespace's mounts are gone with it; refuse to delete through a mount all the same
        with open("/proc/self/mountinfo") as f:
            mounted = [ln.split()[4] for ln in f]
        if any(m == self.path or m.startswith(self.path + "/") for m in mounted):
            raise RuntimeError(f"{self.path}: still has mounts, not removed")
        shutil.rmtree(self.path)
