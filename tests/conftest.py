import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
sys.path.insert(0, os.path.join(HERE, "crashlab"))
sys.path.insert(0, os.path.join(HERE, "daemons"))

import lab as L  # noqa: E402

ROOT_DIRS = ("crashlab", "daemons", "trace")
LOCK = "/run/lock/coredoctor-tests.lock"


#: test folders whose tests only compute (no sysctl, user, mount, tracefs or process state):
#: a run of only these does not wait for the machine-wide lock
PURE_DIRS = ("unit", "fuzz")


def _take_lock(config):
    """One test run at a time on a machine: the tests change host-wide state (sysctls, users,
    audit, tracefs, systemd-coredump's socket) that another run in another checkout would see."""
    if os.geteuid() != 0 or os.environ.get("COREDOCTOR_IN_GUEST") == "1":
        return
    import fcntl
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.stderr.write(f"waiting for another coredoctor test run ({LOCK})...\n")
        fcntl.flock(fd, fcntl.LOCK_EX)
    config._coredoctor_lock = fd  # held until the process exits


def pytest_collection_modifyitems(config, items):
    if any(not any(f"/tests/{d}/" in str(it.fspath) for d in PURE_DIRS) for it in items):
        _take_lock(config)
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="changes sysctls, users and credentials and makes real crashes: run as root")
    for it in items:
        if any(f"/tests/{d}/" in str(it.fspath) for d in ROOT_DIRS):
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


SYSCTL_FILE = "/etc/sysctl.d/90-coredoctor.conf"


@pytest.fixture
def fix_env(saved_sysctls, tmp_path, monkeypatch):
    """A private journal directory, and /etc/sysctl.d and /var/crash restored afterwards."""
    state = tmp_path / "state"
    monkeypatch.setenv("COREDOCTOR_STATE_DIR", str(state))
    prior = open(SYSCTL_FILE, "rb").read() if os.path.exists(SYSCTL_FILE) else None
    prior_mode = os.stat(SYSCTL_FILE).st_mode if prior is not None else None
    crash_existed = os.path.exists("/var/crash")
    try:
        yield str(state)
    finally:
        if prior is None:
            if os.path.exists(SYSCTL_FILE):
                os.unlink(SYSCTL_FILE)
        else:
            with open(SYSCTL_FILE, "wb") as f:
                f.write(prior)
            os.chmod(SYSCTL_FILE, prior_mode)
        if not crash_existed and os.path.exists("/var/crash"):
            shutil.rmtree("/var/crash", ignore_errors=True)



LOUD = {"kernel.printk_ratelimit_burst": ("/proc/sys/kernel/printk_ratelimit_burst", "10000"),
        "kernel.printk_devkmsg": ("/proc/sys/kernel/printk_devkmsg", "on"),
        # show_unhandled_signals: arm64's default is 0 (a fault prints no line at all)
        "debug.exception-trace": ("/proc/sys/debug/exception-trace", "1")}


@pytest.fixture
def loud_kernel_log():
    """The kernel rate-limits the lines crash tests look for: user-space writes to /dev/kmsg
    (printk_devkmsg: systemd-coredump's complaints without a journal) and printk_ratelimit()
    callers: lift both for the test, and put them back. (x86's show_signal_msg() has a state
    of its own on current kernels: see lab.kernel_log_room().)"""
    saved = {}
    try:
        for k, (path, value) in LOUD.items():
            if not os.path.exists(path):  # a kernel without the knob (detected, not assumed)
                continue
            with open(path) as f:
                saved[k] = f.read().strip()
            if saved[k] != value:
                try:
                    with open(path, "w") as f:
                        f.write(value)
                except OSError:  # printk.devkmsg= on the kernel command line locks it
                    pass
        yield
    finally:
        for k, v in saved.items():
            path = LOUD[k][0]
            with open(path) as f:
                now = f.read().strip()
            if now != v:
                with open(path, "w") as f:
                    f.write(v)
