"""dist/coredoctor_*.deb: what it holds, lintian's verdict, and a real install into a fresh
minimal Debian 12 root (mmdebstrap): apt resolves python3, coredoctor runs, man finds its page,
dpkg -r removes every file the package installed."""

import os
import re
import shutil
import stat
import subprocess

import pytest

import bookworm
import gen
# at import, as test_zipapp does: at run time the name 'conftest' is whichever conftest.py pytest
# loaded last (tests/trace's in a whole run)
from conftest import PACKAGING, ROOT, SYSTEM_PYTHON

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dpkg, chroot and mmdebstrap need root")


def _field(deb: str, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, name], capture_output=True, text=True, check=True).stdout.strip()


def test_control_fields(dist):
    import coredoctor
    assert _field(dist.deb, "Package") == "coredoctor"
    assert _field(dist.deb, "Version") == f"{coredoctor.__version__}-1"
    assert os.path.basename(dist.deb) == f"coredoctor_{coredoctor.__version__}-1_all.deb"
    assert _field(dist.deb, "Architecture") == "all"
    assert _field(dist.deb, "Depends") == "python3 (>= 3.9)"
    size = int(_field(dist.deb, "Installed-Size"))
    total = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(dist.tree) for f in fs)
    assert abs(size - total / 1024) <= 2


def test_contents_where_debian_puts_them(dist, parser):
    t = dist.tree
    sbin = os.path.join(t, "usr/sbin/coredoctor")
    assert stat.S_IMODE(os.stat(sbin).st_mode) == 0o755
    with open(sbin) as f:
        assert f.readline() == "#!/usr/bin/python3\n"
    pkg = os.path.join(t, "usr/lib/python3/dist-packages/coredoctor")
    here = os.path.join(os.path.dirname(gen.__file__), "..", "src", "coredoctor")
    want = sorted(os.path.relpath(os.path.join(d, f), here) for d, _, fs in os.walk(here) for f in fs
                  if f.endswith(".py") and "__pycache__" not in d)
    got = sorted(os.path.relpath(os.path.join(d, f), pkg) for d, _, fs in os.walk(pkg) for f in fs)
    assert got == want
    man = sorted(os.listdir(os.path.join(t, "usr/share/man/man8")))
    assert man == sorted(["coredoctor.8.gz"] + [f"coredoctor-{n}.8.gz" for n, _, _ in gen.subcommands(parser)])
    assert os.path.isfile(os.path.join(t, "usr/share/bash-completion/completions/coredoctor"))
    assert os.path.isfile(os.path.join(t, "usr/share/zsh/vendor-completions/_coredoctor"))
    # issue 13's watch service and its journal catalog (systemd's dpkg trigger on
    # /usr/lib/systemd/catalog runs journalctl --update-catalog)
    for rel in ("usr/lib/systemd/system/coredoctor-watch.service", "usr/lib/systemd/catalog/coredoctor.catalog"):
        assert os.path.isfile(os.path.join(t, rel)), rel
    doc = sorted(os.listdir(os.path.join(t, "usr/share/doc/coredoctor")))
    assert doc == ["changelog.Debian.gz", "copyright"]
    # every file root-owned in the archive, nothing world-writable, no byte-compiled file
    listing = subprocess.run(["dpkg-deb", "-c", dist.deb], capture_output=True, text=True, check=True).stdout
    for ln in listing.splitlines():
        perms, owner = ln.split()[:2]
        assert owner == "root/root", ln
        assert perms[8] != "w", ln
        assert not ln.endswith((".pyc", "/__pycache__/")), ln


def test_lintian_is_clean_and_every_override_is_explained(dist):
    r = subprocess.run(["lintian", "--display-info", "--pedantic", "--display-experimental", "--show-overrides",
                        "--tag-display-limit", "0", dist.deb], capture_output=True, text=True, timeout=300)
    tags = [ln for ln in r.stdout.splitlines() if re.match(r"^[EWIPX]: ", ln)]
    assert tags == [], r.stdout
    assert r.returncode == 0, r.stderr
    # each override hides exactly what it says (the watch unit's: that file only), and none is unused
    overridden = [ln for ln in r.stdout.splitlines() if ln.startswith("O: ")]
    assert sorted(o.split()[2] for o in overridden) == ["initial-upload-closes-no-bugs",
                                                        "package-supports-alternative-init-but-no-init.d-script"], r.stdout
    assert [o.split()[3] for o in overridden if "alternative-init" in o] == \
        ["[usr/lib/systemd/system/coredoctor-watch.service]"], r.stdout
    assert "unused-override" not in r.stdout
    with open(os.path.join(dist.tree, "usr/share/lintian/overrides/coredoctor")) as f:
        lines = f.read().splitlines()
    for i, ln in enumerate(lines):
        if ln and not ln.startswith("#"):
            assert i > 0 and lines[i - 1].startswith("#"), f"override without a reason: {ln}"


@pytest.fixture(scope="module")
def root_tar():
    if not shutil.which("mmdebstrap"):
        pytest.fail("mmdebstrap is missing (run-tests installs it)")
    return bookworm.tarball()


@pytest.fixture
def root(root_tar):
    r = bookworm.Root(root_tar)
    try:
        yield r
    finally:
        r.close()


# what dpkg and apt write about any package, and what a user's man(1) run leaves (man-db's cat
# cache of a formatted page, cleaned by man-db's own cron job): not files the package installed
BOOKKEEPING = ("/var/lib/dpkg/", "/var/lib/apt/", "/var/cache/apt/", "/var/log/", "/var/cache/man/",
               "/var/cache/debconf/", "/var/cache/ldconfig/", "/etc/ld.so.cache", "/tmp/")


def test_install_into_fresh_bookworm_and_remove(dist, root):
    import coredoctor
    deb = os.path.basename(dist.deb)
    assert root.run("dpkg -s python3", check=False).returncode == 1, "python3 must not be in the root yet"
    shutil.copy(dist.deb, os.path.join(root.path, "tmp", deb))
    before = root.files()

    r = root.run(f"apt-get install -y -q --no-install-recommends /tmp/{deb}")
    assert re.search(r"^Setting up python3 ", r.stdout, re.M), r.stdout
    assert re.search(r"^Setting up coredoctor \(", r.stdout, re.M), r.stdout
    assert root.run("dpkg-query -W -f '${Status}' coredoctor").stdout == "install ok installed"

    assert root.run("coredoctor --version").stdout == f"coredoctor {coredoctor.__version__}\n"
    r = root.run("coredoctor explain-flags 204")
    assert "dumpable=0 (SUID_DUMP_DISABLE)" in r.stdout and "00000033" in r.stdout
    r = root.run("MANPAGER=cat MANWIDTH=80 man coredoctor")
    assert r.stdout.startswith("COREDOCTOR(8)") and "coredoctor-check(8)" in r.stdout, r.stdout[:500]
    assert root.run("man -w coredoctor-trace").stdout.strip() == "/usr/share/man/man8/coredoctor-trace.8.gz"
    r = root.run("MANPAGER=cat MANWIDTH=80 man 8 coredoctor-trace")
    assert "OVERHEAD" in r.stdout
    # a crash-lab-free check of a real process in the root: pid 1 of the host is visible (no pid ns)
    r = root.run("coredoctor check --pid 1 --json", check=False)
    assert r.returncode in (0, 1) and '"coredoctor.check/1"' in r.stdout, r.stderr
    # postinst byte-compiled the modules (py3compile), as dh_python3's packages do
    assert os.listdir(os.path.join(root.path, "usr/lib/python3/dist-packages/coredoctor/__pycache__"))

    installed = [p for p in root.run("dpkg -L coredoctor").stdout.splitlines() if p and p != "/."]
    assert "/usr/sbin/coredoctor" in installed and "/usr/share/man/man8/coredoctor.8.gz" in installed
    root.run("dpkg -r coredoctor")
    status = root.run("dpkg-query -W -f '${Status}' coredoctor", check=False).stdout
    assert "installed" not in status.replace("not-installed", ""), status
    left = []
    for p in installed:
        full = os.path.join(root.path, p.lstrip("/"))
        if not os.path.lexists(full):
            continue
        # a directory that other packages own as well (/usr, /usr/share/man/man8) stays
        if os.path.isdir(full) and not os.path.islink(full) and root.run(f"dpkg -S {p}", check=False).returncode == 0:
            continue
        left.append(p)
    assert left == [], left
    # nothing else of it either: no byte-compiled file, no directory of its own
    after = root.files(exclude=list(BOOKKEEPING))
    new = sorted(p for p in after - before if "coredoctor" in p)
    assert new == [], new
    assert not os.path.exists(os.path.join(root.path, "usr/lib/python3/dist-packages/coredoctor"))
    # and python3, pulled in for it, is still there (dpkg -r removes only coredoctor)
    assert root.run("python3 -c 'print(1)'").stdout == "1\n"


def test_two_builds_of_one_commit_are_the_same_bytes(dist, tmp_path, clean_env):
    """Timestamps come from the last commit (SOURCE_DATE_EPOCH), gzip headers carry no name or
    time, md5sums and the tar are in a fixed order: rebuilding gives the same .deb."""
    r = subprocess.run([SYSTEM_PYTHON, os.path.join(PACKAGING, "build-dist"), "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, env=clean_env)
    assert r.returncode == 0, r.stderr
    with open(dist.deb, "rb") as a, open(tmp_path / os.path.basename(dist.deb), "rb") as b:
        assert a.read() == b.read()
