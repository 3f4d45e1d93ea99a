"""Debian's real nginx, dnsmasq, chrony, haproxy, openvpn and squid, each started by the test with
its own config on loopback (foreground, RLIMIT_CORE unlimited, so that only what the daemon
itself does decides): check names the option or config line (file:line) behind its verdict,
then a real SIGSEGV shows the kernel agrees (a core, or none)."""
import glob
import json
import os
import pwd
import resource
import signal
import subprocess
import tempfile
import time

import pytest

import lab as L
from coredoctor.snapshot import pidfd

# exact dumpable from PIDFD_INFO_COREDUMP (6.16+); COREDOCTOR_DISABLE=pidfd switches it off here
PIDFD = pidfd.probe() and "pidfd" not in os.environ.get("COREDOCTOR_DISABLE", "").split(",")


def _unlimited():
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


class Daemon:
    def __init__(self, argv, cwd, log):
        self.log = log
        with open(log, "wb") as out:
            self.p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                      preexec_fn=_unlimited)

    def end(self):
        if self.p.poll() is None:
            L.end(self.p)


@pytest.fixture
def work(saved_sysctls):
    w = tempfile.mkdtemp(prefix="cd-daemons-", dir="/tmp")
    os.chmod(w, 0o755)
    cores = L.make_cores(w)
    started = []
    try:
        yield w, cores, started
    finally:
        for d in reversed(started):
            d.end()
        subprocess.run(["rm", "-rf", w], check=False)


def _need(path, package):
    L.require_installed(path, package)


def _id(user):
    return pwd.getpwnam(user).pw_uid


def _uid(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])
    except OSError:
        return None


def check(pid):
    r = L.coredoctor("check", "--pid", str(pid), "--json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["targets"][0]


def text(pid):
    r = L.coredoctor("check", "--pid", str(pid))
    assert r.returncode in (0, 1), r.stderr
    return r.stdout


def _gate(t, gid):
    return next(g for g in t["gates"] if g["id"] == gid)


def _refused_by_dumpable(t):
    """Non-dumpable after the daemon's own switch under fs.suid_dumpable=0. Exact with the pidfd
    query; before 6.16 /proc ownership cannot tell 0 from 2, and with an absolute pattern that
    decides it, so the honest answer is "unknown" with both candidates (the kernel then says 0)."""
    if PIDFD:
        assert (t["dumps"], t["blocking_gate"]) == (False, "dumpable"), t["verdict"]
    else:
        assert (t["dumps"], t["dumpable"]["candidates"]) == (None, [0, 2]), t["verdict"]
        assert "could be 0 or 2" in t["verdict"]
    assert t["dumpable"]["cause"] == "privilege-change", t["dumpable"]


def _segv_no_core(pid, cores, proc=None):
    os.kill(pid, signal.SIGSEGV)
    if proc is not None:
        proc.wait(10)
        assert proc.returncode == -signal.SIGSEGV
    else:
        L.until(lambda: not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z", f"pid {pid} to die")
    time.sleep(0.3)  # the core, if the kernel wrote one, is complete before the process is reaped
    assert glob.glob(f"{cores}/*") == [], "the kernel wrote a core the verdict said it would not"


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


# --------------------------------------------------------------------------- nginx


NGINX = """user www-data;
worker_processes 1;
daemon off;
pid {w}/nginx.pid;
error_log {w}/error.log;
{extra}events {{ worker_connections 16; }}
http {{
  access_log off;
  server {{ listen 127.0.0.1:{port}; }}
}}
"""


def _nginx(w, started, extra="", cwd=None, port=18471):
    conf = f"{w}/nginx.conf"
    with open(conf, "w") as f:
        f.write(NGINX.format(w=w, extra=extra, port=port))
    d = Daemon(["/usr/sbin/nginx", "-c", conf, "-p", w], cwd or w, f"{w}/nginx.out")
    started.append(d)
    worker = L.until(lambda: next((c for c in L.children(d.p.pid) if _uid(c) == _id("www-data")), None), "an nginx worker")
    return conf, d, worker


def test_nginx_worker_cwd_and_rlimit_lines(work):
    _need("/usr/sbin/nginx", "nginx")
    w, cores, started = work
    ro = os.path.join(w, "ro")
    os.mkdir(ro, 0o755)  # root's: www-data's workers cannot create a core here
    L.set_sysctls({"kernel.core_pattern": "core", "kernel.core_uses_pid": 0, "fs.suid_dumpable": 0})
    conf, d, worker = _nginx(w, started, cwd=ro)
    t = check(worker)
    assert (t["dumps"], t["blocking_gate"]) == (False, "core-dir"), t["verdict"]
    o = _gate(t, "core-dir")["origin"]
    assert o["kind"] == "config" and o["program"] == "nginx" and o["file"] == conf
    assert "no working_directory" in o["summary"] and ro in o["summary"]
    assert any("working_directory /var/crash;" in c for f in t["fixes"] for c in f["commands"])
    os.kill(worker, signal.SIGSEGV)
    L.until(lambda: "exited on signal 11" in open(f"{w}/error.log").read(), "nginx's master to log the crash")
    assert os.listdir(ro) == []
    d.end()

    # its own switches: worker_rlimit_core 0 is named with its line; working_directory moves the core
    wd = os.path.join(w, "wd")
    os.mkdir(wd)
    os.chown(wd, _id("www-data"), -1)
    conf, d, worker = _nginx(w, started, extra=f"worker_rlimit_core 0;\nworking_directory {wd};\n", cwd=ro)
    t = check(worker)
    assert (t["dumps"], t["blocking_gate"]) == (False, "rlimit-core"), t["verdict"]
    o = _gate(t, "rlimit-core")["origin"]
    assert (o["file"], o["line"], o["text"]) == (conf, 6, "worker_rlimit_core 0;")
    assert f"[{conf}:6]:worker_rlimit_core0;" in "".join(text(worker).split())   # wrapped anywhere
    os.kill(worker, signal.SIGSEGV)
    L.until(lambda: open(f"{w}/error.log").read().count("exited on signal 11") == 2, "the second crash logged")
    assert os.listdir(wd) == [] and os.listdir(ro) == []
    d.end()

    conf, d, worker = _nginx(w, started, extra=f"worker_rlimit_core 100m;\nworking_directory {wd};\n", cwd=ro)
    t = check(worker)
    assert t["dumps"] is True and t["core_destination"]["path"] == f"{wd}/core", t["verdict"]
    os.kill(worker, signal.SIGSEGV)
    path, size = L.wait_stable(f"{wd}/core*")
    assert path == f"{wd}/core" and size > 0


# --------------------------------------------------------------------------- haproxy


HAPROXY = """global
\tuser haproxy
\tgroup haproxy
{extra}defaults
\tmode tcp
\ttimeout connect 1s
\ttimeout client 1s
\ttimeout server 1s
listen l
\tbind 127.0.0.1:{port}
\tserver s 127.0.0.1:9
"""


def _haproxy(w, started, extra=""):
    conf = f"{w}/haproxy.cfg"
    with open(conf, "w") as f:
        f.write(HAPROXY.format(extra=extra, port=18472))
    d = Daemon(["/usr/sbin/haproxy", "-db", "-f", conf], w, f"{w}/haproxy.out")
    started.append(d)
    L.until(lambda: _uid(d.p.pid) == _id("haproxy"), "haproxy to drop to its user")
    return conf, d


def test_haproxy_user_line_then_set_dumpable(work):
    _need("/usr/sbin/haproxy", "haproxy")
    w, cores, started = work
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    conf, d = _haproxy(w, started)
    t = check(d.p.pid)
    _refused_by_dumpable(t)
    o = t["dumpable"]["origin"]
    assert (o["kind"], o["file"], o["line"], o["text"]) == ("config", conf, 2, "user haproxy")
    fx = next(f for f in t["fixes"] if "set-dumpable" in f["summary"])
    assert fx["needs_restart"] and any("set-dumpable" in c for c in fx["commands"])
    _segv_no_core(d.p.pid, cores, d.p)

    conf, d = _haproxy(w, started, extra="\tset-dumpable\n")
    t = check(d.p.pid)
    assert t["dumps"] is True and "origin" not in t["dumpable"], t["verdict"]
    os.kill(d.p.pid, signal.SIGSEGV)
    path, size = L.wait_stable(f"{cores}/core.haproxy.{d.p.pid}")
    assert path and size > 0


# --------------------------------------------------------------------------- dnsmasq, chrony, openvpn


def test_dnsmasq_user_line_in_a_conf_dir(work):
    _need("/usr/sbin/dnsmasq", "dnsmasq")
    w, cores, started = work
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    os.mkdir(f"{w}/dnsmasq.d")
    with open(f"{w}/dnsmasq.conf", "w") as f:
        f.write(f"port=18473\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n"
                f"conf-dir={w}/dnsmasq.d,*.conf\n")
    with open(f"{w}/dnsmasq.d/10-user.conf", "w") as f:
        f.write("# the service's identity\nuser=nobody\n")
    with open(f"{w}/dnsmasq.d/20-ignored.txt", "w") as f:
        f.write("user=root\n")
    d = Daemon(["/usr/sbin/dnsmasq", "-k", f"--conf-file={w}/dnsmasq.conf", f"--pid-file={w}/dnsmasq.pid"], w,
               f"{w}/dnsmasq.out")
    started.append(d)
    L.until(lambda: _uid(d.p.pid) == 65534, "dnsmasq to drop to nobody")
    t = check(d.p.pid)
    _refused_by_dumpable(t)
    o = t["dumpable"]["origin"]
    assert (o["kind"], o["file"], o["line"], o["text"]) == ("config", f"{w}/dnsmasq.d/10-user.conf", 2, "user=nobody")
    assert any("root" in a.get("text", "") and a["risk"] for f in t["fixes"] for a in f["actions"])
    _segv_no_core(d.p.pid, cores, d.p)


def test_chronyd_u_option(work):
    _need("/usr/sbin/chronyd", "chrony")
    w, cores, started = work
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    with open(f"{w}/chrony.conf", "w") as f:
        f.write(f"port 0\ncmdport 0\npidfile {w}/chronyd.pid\n")
    d = Daemon(["/usr/sbin/chronyd", "-d", "-x", "-f", f"{w}/chrony.conf", "-u", "_chrony"], w, f"{w}/chrony.out")
    started.append(d)
    L.until(lambda: _uid(d.p.pid) == _id("_chrony"), "chronyd to drop to _chrony")
    t = check(d.p.pid)
    _refused_by_dumpable(t)
    o = t["dumpable"]["origin"]
    assert (o["kind"], o["argv"], o["program"]) == ("argv", ["-u", "_chrony"], "chronyd")
    assert "option:-u_chrony" in "".join(text(d.p.pid).split())
    _segv_no_core(d.p.pid, cores, d.p)


def test_openvpn_user_line_in_its_config(work):
    _need("/usr/sbin/openvpn", "openvpn")
    w, cores, started = work
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    with open(f"{w}/vpn.conf", "w") as f:
        f.write("dev null\nlocal 127.0.0.1\nlport 18474\nproto udp\n; drop after start\nuser nobody\ngroup nogroup\n")
    d = Daemon(["/usr/sbin/openvpn", "--config", f"{w}/vpn.conf"], w, f"{w}/vpn.out")
    started.append(d)
    L.until(lambda: _uid(d.p.pid) == 65534, "openvpn to drop to nobody")
    t = check(d.p.pid)
    _refused_by_dumpable(t)
    o = t["dumpable"]["origin"]
    assert (o["kind"], o["file"], o["line"], o["text"]) == ("config", f"{w}/vpn.conf", 6, "user nobody")
    _segv_no_core(d.p.pid, cores, d.p)


# --------------------------------------------------------------------------- squid


SQUID = """http_port 127.0.0.1:18475
cache_effective_user proxy
pid_filename {w}/sq/squid.pid
cache_log {w}/sq/cache.log
access_log none
cache deny all
http_access allow localhost
{extra}"""


def test_squid_coredump_dir(work):
    _need("/usr/sbin/squid", "squid")
    w, cores, started = work
    ro, wd, sq = (os.path.join(w, n) for n in ("ro", "wd", "sq"))
    for d in (ro, wd, sq):
        os.mkdir(d, 0o755)
    for d in (wd, sq):
        os.chown(d, _id("proxy"), -1)
    L.set_sysctls({"kernel.core_pattern": "core", "kernel.core_uses_pid": 0, "fs.suid_dumpable": 0})

    def start(extra):
        with open(f"{w}/squid.conf", "w") as f:
            f.write(SQUID.format(w=w, extra=extra))
        d = Daemon(["/usr/sbin/squid", "-N", "-f", f"{w}/squid.conf"], ro, f"{w}/squid.out")
        started.append(d)
        L.until(lambda: _uid(d.p.pid) == _id("proxy") and "Accepting HTTP" in _read(f"{sq}/cache.log"), "squid to serve")
        return d

    d = start("")
    t = check(d.p.pid)
    assert t["dumpable"]["value"] == 1   # squid makes itself dumpable again after the drop (leave_suid)
    o = _gate(t, "core-dir")["origin"]
    assert o["program"] == "squid" and "no coredump_dir" in o["summary"] and ro in o["summary"]
    assert any("coredump_dir /var/spool/squid" in c for f in t["fixes"] for c in f["commands"])
    os.kill(d.p.pid, signal.SIGSEGV)
    d.p.wait(20)
    assert os.listdir(ro) == []
    d.end()
    os.unlink(f"{sq}/squid.pid") if os.path.exists(f"{sq}/squid.pid") else None

    d = start(f"coredump_dir {wd}\n")
    t = check(d.p.pid)
    assert "origin" not in _gate(t, "core-dir") and t["core_destination"]["path"] == f"{wd}/core", t["verdict"]
    os.kill(d.p.pid, signal.SIGSEGV)
    d.p.wait(20)
    path, size = L.wait_stable(f"{wd}/core*")
    assert path and size > 0, "squid's own coredump_dir: the core lands there"


def _read(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return ""


# --------------------------------------------------------------------------- fix --apply --daemon


def test_fix_apply_daemon_set_dumpable_then_core_and_rollback(work, fix_env):
    _need("/usr/sbin/haproxy", "haproxy")
    w, cores, started = work
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    conf, d = _haproxy(w, started)
    before = open(conf, "rb").read()
    os.chmod(conf, 0o640)
    plan = json.loads(L.coredoctor("fix", str(d.p.pid), "--json").stdout)
    assert any("set-dumpable" in m for m in plan["manual"])   # shown, not applied, without --daemon
    assert not any(a["kind"] == "config-line" for a in plan["actions"])
    r = L.coredoctor("fix", str(d.p.pid), "--apply", "--daemon", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["applied"] and any(a["kind"] == "config-line" for a in doc["actions"])
    # the daemon's switch instead of the host-wide one: fs.suid_dumpable stays 0
    assert not any(a["kind"] == "sysctl" for a in doc["actions"]) and L.read_sysctl("fs.suid_dumpable") == "0"
    assert open(conf).read().startswith("global\n\tset-dumpable\n\tuser haproxy\n")
    d.end()
    d = Daemon(["/usr/sbin/haproxy", "-db", "-f", conf], w, f"{w}/haproxy2.out")   # its restart
    started.append(d)
    L.until(lambda: _uid(d.p.pid) == _id("haproxy"), "haproxy to drop to its user")
    os.kill(d.p.pid, signal.SIGSEGV)
    path, size = L.wait_stable(f"{cores}/core.haproxy.{d.p.pid}")
    assert path and size > 0
    r = L.coredoctor("fix", "--rollback", doc["id"])
    assert r.returncode == 0, r.stderr
    assert open(conf, "rb").read() == before and os.stat(conf).st_mode & 0o777 == 0o640
