"""Packaging tests: build dist/ once per session (packaging/build-dist into a temporary directory)
and hand its artifacts to the tests. Real tools only: dpkg-deb, lintian, groff, bash, zsh,
mmdebstrap, apt and dpkg in a Debian 12 root, the system /usr/bin/python3."""

import glob
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PACKAGING = os.path.join(ROOT, "packaging")
sys.path.insert(0, PACKAGING)
sys.path.insert(0, HERE)

SYSTEM_PYTHON = "/usr/bin/python3"


class Dist:
    def __init__(self, out: str) -> None:
        self.out = out
        debs = glob.glob(os.path.join(out, "coredoctor_*_all.deb"))
        assert len(debs) == 1, debs
        self.deb = debs[0]
        self.pyz = os.path.join(out, "coredoctor.pyz")
        self.man = os.path.join(out, "man")
        self.bash = os.path.join(out, "completions", "coredoctor.bash")
        self.zsh = os.path.join(out, "completions", "_coredoctor")
        self.tree = os.path.join(out, "tree")  # the .deb's contents, unpacked with dpkg-deb -x


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Dist:
    """packaging/build-dist run as a user runs it, with the system python3, from the checkout."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("no /usr/bin/python3")
    out = str(tmp_path_factory.mktemp("dist"))
    r = subprocess.run([SYSTEM_PYTHON, os.path.join(PACKAGING, "build-dist"), "--out", out],
                       capture_output=True, text=True, cwd=ROOT, env=_clean_env())
    assert r.returncode == 0, r.stderr
    d = Dist(out)
    subprocess.run(["dpkg-deb", "-x", d.deb, d.tree], check=True)
    return d


@pytest.fixture(scope="session")
def parser():
    import gen
    return gen.load_parser()


def _clean_env() -> dict:
    """The environment a user's shell would give: no PYTHONPATH (so nothing of the checkout or
    the venv leaks into the system python3's imports), no virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


@pytest.fixture
def clean_env() -> dict:
    return _clean_env()
