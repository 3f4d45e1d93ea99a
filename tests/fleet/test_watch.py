"""coredoctor watch against real components: the real systemd-journald started by hand in its own
mount namespace (tests/daemons/test_journal.py's fixture) or a real rsyslogd
(tests/daemons/test_rsyslog.py's fixture), a real privilege-dropping daemon (dnsmasq -u nobody)
and setpriv(1) drops, in made-up service cgroups, and real crashes. watch runs as a process of its
own, is ended by its pid with SIGTERM, and must leave no tracefs instance behind; the journal
entries carry the frozen MESSAGE_IDs and the fields, journalctl --catalog shows the catalog text
(installed into the journald namespace's own catalog database), the metrics file counts the losses
per unit and keeps counting across a restart, and SIGHUP re-reads the configuration."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import lab as L
from test_journal import _in_ns, journal  # noqa: F401  (the fixture, reused)
from test_rsyslog import rsyslog  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="traces the host and creates cgroups: run as root")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CATALOG = os.path.join(ROOT, "contrib", "systemd", "coredoctor.catalog")
CGROUP_ROOTS = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")
DNSMASQ = "/usr/sbin/dnsmasq"
ID = {"lost": "f1fb545531a841f89301dd2fac44b6cf", "core": "3fbf5352ddbb4bb4bb39f7a9c4c8782e",
      "nocore": "1933e3de10074e6994a1818ec49a6add", "started": "d45ab48c86d240dda4dba0f53d8866d3",
      "stopped": "37c0befb9fb74ec6a1e94375c1fde3b4", "notice": "4274684a7abb47cea3ab5277494e83bf"}


def _cgroup_root():
    for r in CGROUP_ROOTS:
        if os.path.exists(os.path.join(r, "cgroup.procs")) and os.access(r, os.W_OK):
            return r
    pytest.skip("no writable cgroup hierarchy is mounted")


class Units:
    """Made-up service cgroups (system.slice/NAME): a command started in one is in it from its
    first instruction (sh writes its own pid, then execs). Removed on close."""

    def __init__(self):
        self.root = _cgroup_root()
        self.slice = os.path.join(self.root, "system.slice")
        self.made_slice = not os.path.exists(self.slice)
        self.made = []
        self.procs = []

    def wrap(self, name):
        cg = os.path.join(self.slice, name)
        if cg not in self.made:
            os.makedirs(cg)
            self.made.append(cg)
        return ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh"]

    def start(self, name, *cmd):
        p = subprocess.Popen([*self.wrap(name), *cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                L.end(p)
            if p.stderr:
                p.stderr.close()
        for cg in reversed(self.made):
            deadline = time.time() + 5
            while True:
                try:
                    os.rmdir(cg)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
        if self.made_slice:
            try:
                os.rmdir(self.slice)
            except OSError:
                pass


@pytest.fixture
def units():
    u = Units()
    try:
        yield u
    finally:
        u.close()


def _wait(pred, timeout, what):
    return L.until(pred, what, timeout, step=0.2)


def _watch(state, *args, ns=None):
    env = dict(os.environ, PYTHONPATH=L.SRC, COREDOCTOR_STATE_DIR=str(state))
    pre = ["nsenter", "-t", str(ns), "-m"] if ns else []  # nsenter execs: the pid is watch's own
    return subprocess.Popen([*pre, sys.executable, "-m", "coredoctor", "watch", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(w):
    """SIGTERM by pid; watch must exit 0 on its own, with nothing on stderr."""
    w.send_signal(signal.SIGTERM)
    try:
        out, err = w.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        w.kill()
        w.communicate()
        raise AssertionError("watch did not stop within 60 s of SIGTERM")
    assert w.returncode == 0 and "Traceback" not in err, (w.returncode, err)
    return out, err


def _entries(jpid, *match):
    r = _in_ns(jpid, "journalctl", "-q", "-o", "json", "--no-pager", *match)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def _instances(jpid, *pids):
    """The tracefs instances of these watch processes (coredoctor-PID): instances are global, and
    another coredoctor on the machine (a trace run beside the tests) has one of its own."""
    r = _in_ns(jpid, "sh", "-c", "ls /sys/kernel/tracing/instances")
    assert r.returncode == 0, r.stderr
    return [n for n in r.stdout.split() if n in {f"coredoctor-{p}" for p in pids}]


def _losses(textfile, unit):
    try:
        with open(os.path.join(textfile, "coredoctor.prom")) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.startswith(f'coredoctor_dumpability_losses_total{{unit="{unit}"}} '):
            return int(float(line.split()[-1]))
    return 0


def test_watch_journal_catalog_metrics_reload_restart(journal, units, tmp_path, saved_sysctls):  # noqa: F811
    L.require_installed(DNSMASQ, "dnsmasq-base")
    jpid, _ours = journal
    L.set_sysctls({"kernel.core_pattern": "core", "fs.suid_dumpable": 0})
    # tracefs mounted in journald's namespace only (gone with it); instances are the kernel's, so
    # what this mount lists is what any mount would
    r = _in_ns(jpid, "sh", "-c", "mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing")
    assert r.returncode == 0, r.stderr
    # the catalog, in that namespace's catalog database only
    cat = tmp_path / "catalog"
    cat.mkdir()
    for f in os.listdir("/usr/lib/systemd/catalog"):
        shutil.copy(os.path.join("/usr/lib/systemd/catalog", f), cat)
    shutil.copy(CATALOG, cat)
    r = _in_ns(jpid, "sh", "-c", f"mount --bind {cat} /usr/lib/systemd/catalog && "
               "mount -t tmpfs tmpfs /var/lib/systemd/catalog && journalctl --update-catalog")
    assert r.returncode == 0, r.stderr
    state, textfile, conf = tmp_path / "state", tmp_path / "textfile", tmp_path / "watch.conf"
    textfile.mkdir()
    conf.write_text("# nothing ignored yet\n")
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(work, 0o777)
    started = time.time()

    w = _watch(state, "--log", "journal", "--textfile", str(textfile), "--config", str(conf), ns=jpid)
    try:
        _wait(lambda: _entries(jpid, f"MESSAGE_ID={ID['started']}", f"_PID={w.pid}"), 60, "watch-started")
        assert _instances(jpid, w.pid) == [f"coredoctor-{w.pid}"]

        # a real daemon dropping privileges in a service
        dm = units.start("cdwatch-dnsmasq.service", DNSMASQ, "-k", "--conf-file=/dev/null", "-u", "nobody",
                         "-g", "nogroup", "--port=0", f"--pid-file={tmp_path}/dnsmasq.pid")
        lost = _wait(lambda: _entries(jpid, f"MESSAGE_ID={ID['lost']}", "COREDOCTOR_UNIT=cdwatch-dnsmasq.service"),
                     30, "dnsmasq's loss of dumpability")
        e = lost[0]
        assert (e["COREDOCTOR_PID"], e["COREDOCTOR_COMM"], e["COREDOCTOR_DUMPABLE_AFTER"]) == \
            (str(dm.pid), "dnsmasq", "0"), e
        assert e["COREDOCTOR_DUMPABLE_BEFORE"] == "1" and e["COREDOCTOR_CAUSE"] == "privilege-change", e
        # dnsmasq drops its group first: that setgid() is the loss (its setuid() then finds 0)
        nogroup = str(__import__("grp").getgrnam("nogroup").gr_gid)
        assert (e["COREDOCTOR_SYSCALL"], e["COREDOCTOR_GID_AFTER"].split()[1]) == ("setgid", nogroup), e
        assert e["PRIORITY"] == "4" and e["SYSLOG_IDENTIFIER"] == "coredoctor"
        # the kernel's view did not disagree (dnsmasq's setuid() right after may leave it unasked)
        assert e["COREDOCTOR_CONFIRMED"] in ("yes", "unknown"), e
        assert len(lost) == 1, [x["MESSAGE"] for x in lost]
        # journalctl --catalog: the catalog's text, the entry's fields substituted
        r = _in_ns(jpid, "journalctl", "-x", "--no-pager", f"MESSAGE_ID={ID['lost']}")
        assert "A process of cdwatch-dnsmasq.service lost its dumpable flag" in r.stdout, r.stdout
        assert f"Process {dm.pid} (dnsmasq) of cdwatch-dnsmasq.service changed its dumpable flag" in r.stdout
        # the metrics file counts it, per unit
        _wait(lambda: _losses(textfile, "cdwatch-dnsmasq.service") == 1, 30, "the loss in coredoctor.prom")

        # real crashes of service processes: one that dumps, one that cannot (RLIMIT_CORE 0)
        ok = L.Victim({"rlimit_core": [None, None], "comm": "cdwatch-core"}, cwd=str(work),
                      wrap=units.wrap("cdwatch-core.service"))
        bad = L.Victim({"rlimit_core": [0, None], "comm": "cdwatch-nocore"}, cwd=str(work),
                       wrap=units.wrap("cdwatch-nocore.service"))
        try:
            time.sleep(2.5)  # the predictor reads a service process within ~1.5 s (unit looked up each 1 s)
            st_ok, st_bad = ok.fault(), bad.fault()   # each reaped here: the kernel's own status
            assert os.WCOREDUMP(st_ok) and not os.WCOREDUMP(st_bad), (st_ok, st_bad)
        finally:
            ok.close()
            bad.close()
        core = _wait(lambda: _entries(jpid, f"MESSAGE_ID={ID['core']}", f"COREDOCTOR_PID={ok.pid}"), 30,
                     "the crash that left a core")[0]
        assert (core["COREDOCTOR_UNIT"], core["COREDOCTOR_SIGNAL"], core["COREDOCTOR_DUMPED"],
                core["COREDOCTOR_PREDICTED"], core["COREDOCTOR_AGREES"]) == \
            ("cdwatch-core.service", "SIGSEGV", "yes", "core", "yes"), core
        assert os.path.exists(work / f"core.{ok.pid}") or os.path.exists(work / "core")
        nocore = _wait(lambda: _entries(jpid, f"MESSAGE_ID={ID['nocore']}", f"COREDOCTOR_PID={bad.pid}"), 30,
                       "the crash that left no core")[0]
        assert (nocore["COREDOCTOR_UNIT"], nocore["COREDOCTOR_DUMPED"], nocore["COREDOCTOR_PREDICTED"],
                nocore["COREDOCTOR_GATE"], nocore["PRIORITY"]) == \
            ("cdwatch-nocore.service", "no", "no_core", "rlimit-core", "3"), nocore
        r = _in_ns(jpid, "journalctl", "-x", "--no-pager", f"MESSAGE_ID={ID['nocore']}")
        assert "crashed (SIGSEGV) and left no core: rlimit-core" in r.stdout, r.stdout

        # SIGHUP: the configuration is re-read; an ignored unit's loss is neither logged nor counted
        conf.write_text("ignore-unit = cdwatch-ignored.service\n")
        w.send_signal(signal.SIGHUP)
        _wait(lambda: _entries(jpid, f"MESSAGE_ID={ID['notice']}", "COREDOCTOR_NOTICE_KIND=reloaded",
                               f"_PID={w.pid}"), 30, "the reload")
        ign = units.start("cdwatch-ignored.service", "setpriv", "--reuid=65534", "--regid=65534",
                          "--clear-groups", "true")
        assert ign.wait(30) == 0
        after = units.start("cdwatch-after.service", "setpriv", "--reuid=65534", "--regid=65534",
                            "--clear-groups", "true")
        assert after.wait(30) == 0
        _wait(lambda: _entries(jpid, f"MESSAGE_ID={ID['lost']}", "COREDOCTOR_UNIT=cdwatch-after.service"), 30,
              "the loss after the reload")
        # watch handles records in order: the ignored unit's came first and was dropped
        assert _entries(jpid, "COREDOCTOR_UNIT=cdwatch-ignored.service") == []
    finally:
        if w.poll() is None:
            _stop(w)
    assert _instances(jpid, w.pid) == [], "watch left its tracefs instance"
    stopped = _entries(jpid, f"MESSAGE_ID={ID['stopped']}", f"_PID={w.pid}")
    assert stopped and stopped[0]["COREDOCTOR_REASON"] == "signal SIGTERM", stopped
    assert int(stopped[0]["COREDOCTOR_LOST"]) == 0
    assert _losses(textfile, "cdwatch-ignored.service") == 0
    assert _losses(textfile, "cdwatch-after.service") == 1

    # a restart keeps the counters: one more drop in the dnsmasq unit makes it 2
    w2 = _watch(state, "--log", "journal", "--textfile", str(textfile), "--config", str(conf), ns=jpid)
    try:
        _wait(lambda: _entries(jpid, f"MESSAGE_ID={ID['started']}", f"_PID={w2.pid}"), 60, "the second start")
        again = units.start("cdwatch-dnsmasq.service", "setpriv", "--reuid=65534", "--regid=65534",
                            "--clear-groups", "true")
        assert again.wait(30) == 0
        _wait(lambda: _losses(textfile, "cdwatch-dnsmasq.service") == 2, 40, "the counter across the restart")
    finally:
        if w2.poll() is None:
            _stop(w2)
    assert _instances(jpid, w.pid, w2.pid) == []
    assert time.time() - started < 240


def test_watch_syslog_without_a_journal(rsyslog, units, tmp_path, saved_sysctls):  # noqa: F811
    """No journal socket: one RFC 3164 line per event to syslog (a real rsyslogd, on its private
    socket); SIGINT stops it as SIGTERM does; the instance is gone."""
    L.set_sysctls({"fs.suid_dumpable": 0})
    sock = os.path.join(rsyslog, "log.sock")
    w = _watch(tmp_path / "state", "--log", "syslog", "--log-socket", sock)
    try:
        def syslog_has(needle):
            try:
                with open(os.path.join(rsyslog, "daemon.log")) as f:
                    return [line for line in f if needle in line]
            except FileNotFoundError:
                return []
        _wait(lambda: syslog_has(f"MESSAGE_ID={ID['started']}"), 60, "watch-started in daemon.log")
        p = units.start("cdwatch-syslog.service", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "true")
        assert p.wait(30) == 0
        line = _wait(lambda: syslog_has(f"MESSAGE_ID={ID['lost']}"), 30, "the loss in daemon.log")[0]
        assert f"coredoctor[{w.pid}]: MESSAGE_ID={ID['lost']} event=dumpability-lost pid={p.pid} " in line, line
        assert "unit=cdwatch-syslog.service" in line and "dumpable_after=0" in line, line
        assert len(syslog_has("event=dumpability-lost")) == 1
    finally:
        if w.poll() is None:
            w.send_signal(signal.SIGINT)
            out, err = w.communicate(timeout=60)
            assert w.returncode == 0 and err == "", err
    assert _host_instances(w.pid) == []


def _host_instances(pid):
    """watch's instance (coredoctor-PID) under any tracefs mount of this namespace (none mounted:
    none can be)."""
    with open("/proc/self/mounts") as f:
        roots = [fields[1] for fields in (line.split() for line in f) if fields[2] == "tracefs"]
    return sorted({n for r in roots for n in os.listdir(os.path.join(r, "instances")) if n == f"coredoctor-{pid}"})
