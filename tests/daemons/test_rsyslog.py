"""A real rsyslogd, started with a private configuration: kernel messages read from /dev/kmsg (imkmsg,
which does not consume them) go to two files of ours in both line formats, and messages on a private
log socket (not /dev/log) go to a third (daemon.*) and a fourth (every facility, like Debian's
/var/log/syslog). A real segfault must then be found in the files by
syslog.read() with the right pid and signal; daemon lines sent by logger(1) as systemd-coredump and
systemd would send them must come back classified."""
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import coredumpd as CD
import lab as L
from coredoctor.history import syslog
from coredoctor.history.kmsg import read_kmsg

RSYSLOGD = "/usr/sbin/rsyslogd"

CONF = """
global(workDirectory="{d}/work")
module(load="imkmsg")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{d}/log.sock")
kern.*   action(type="omfile" file="{d}/kern.log" template="RSYSLOG_TraditionalFileFormat")
kern.*   action(type="omfile" file="{d}/kern-rfc3339.log" template="RSYSLOG_FileFormat")
daemon.* action(type="omfile" file="{d}/daemon.log" template="RSYSLOG_TraditionalFileFormat")
*.*      action(type="omfile" file="{d}/syslog" template="RSYSLOG_TraditionalFileFormat")
"""


def _wait_for(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


@pytest.fixture
def rsyslog():
    L.require_installed(RSYSLOGD, "rsyslog")
    d = tempfile.mkdtemp(prefix="cdsyslog-", dir="/tmp")
    os.mkdir(os.path.join(d, "work"))
    conf = os.path.join(d, "rsyslog.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(d=d))
    err = open(os.path.join(d, "stderr"), "w")
    p = subprocess.Popen([RSYSLOGD, "-n", "-f", conf, "-i", os.path.join(d, "rsyslogd.pid")],
                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        if not _wait_for(lambda: os.path.exists(os.path.join(d, "log.sock")) or p.poll() is not None, 10) \
                or p.poll() is not None:
            pytest.fail("rsyslogd did not start: " + open(os.path.join(d, "stderr")).read()[-2000:])
        yield d
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # the rsyslogd we started (-n: it does not fork)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        err.close()
        shutil.rmtree(d, ignore_errors=True)


def _segfault_logged_by_kernel(tries=3):
    """Fault a victim for real; the kernel's segfault line is rate-limited (printk_ratelimit(): 10 in
    5 s), so try again after the window when the kernel did not print it."""
    for _ in range(tries):
        L.kernel_log_room(1)
        v = L.Victim({"rlimit_core": [0, None]})
        try:
            v.fault()
        finally:
            v.close()
        if _wait_for(lambda: [e for e in read_kmsg() if e["pid"] == v.pid and e["event"] == "fault"], 3):
            return v.pid
        time.sleep(5.5)
    pytest.fail("the kernel printed no segfault line (debug.exception-trace off?)")


def test_real_segfault_found_in_rsyslog_files(saved_sysctls, rsyslog):
    L.set_sysctls({"kernel.core_pattern": "core", "kernel.core_uses_pid": 0, "fs.suid_dumpable": 0})
    started = time.time()
    pid = _segfault_logged_by_kernel()
    for name in ("kern.log", "kern-rfc3339.log"):
        path = os.path.join(rsyslog, name)

        def found():
            return [e for e in syslog.read([path]) if e["pid"] == pid] if os.path.exists(path) else []
        evs = _wait_for(found, 10)
        assert [e["event"] for e in evs] == ["fault"], (name, evs)
        e = evs[0]
        assert e["signal"] == "SIGSEGV" and e["comm"].startswith("python"), e
        assert e["source"] == "syslog:" + path
        # RFC 3164 has whole seconds in local time, RFC 3339 fractions and an offset: both wall clock
        assert started - 2 <= e["time"] <= time.time() + 1, (name, e["time"], started)
    # the traditional format has no year: it came from the file's mtime
    assert time.localtime(e["time"]).tm_year == time.localtime().tm_year


def test_daemon_lines_through_rsyslog(rsyslog):
    logger = shutil.which("logger")
    if logger is None:
        pytest.skip("logger(1) is not installed (bsdutils)")
    sock = os.path.join(rsyslog, "log.sock")
    msgs = [("systemd-coredump", 4321, "Process 4242 (crashy) of user 0 terminated abnormally with signal 11/SEGV, "
             "processing..."),
            ("systemd-coredump", 4321, "Process 4242 (crashy) of user 0 dumped core.\n\nStack trace of thread 4242:\n"
             "#0  0x00007f0000000001 raise (libc.so.6 + 0x3cad8)"),
            ("systemd", 1, "crashy.service: Main process exited, code=dumped, status=11/SEGV"),
            ("systemd", 1, "crashy.service: Failed with result 'core-dump'."),
            ("systemd", 1, "other.service: Main process exited, code=killed, status=15/TERM")]  # a stop
    for tag, pid, msg in msgs:
        subprocess.run([logger, "-u", sock, "-p", "daemon.notice", "-t", tag, f"--id={pid}", msg], check=True,
                       timeout=10)
    path = os.path.join(rsyslog, "daemon.log")

    def ours():  # daemon.log also gets the daemon-facility records user space wrote to /dev/kmsg
        if not os.path.exists(path):
            return []
        return [e for e in syslog.read([path]) if e.get("hpid") == 4321 or e.get("unit") in ("crashy.service",
                                                                                                "other.service")]
    evs = _wait_for(lambda: len(ours()) >= 4 and ours(), 10) or ours()
    assert [(e["event"], e["pid"], e.get("unit"), e.get("dumped")) for e in evs] == [
        ("handler-called", 4242, None, None), ("handler-stored", 4242, None, None),
        ("unit-result", None, "crashy.service", True), ("unit-result", None, "crashy.service", True)]
    assert evs[1]["signal"] == "SIGSEGV" and evs[1]["hpid"] == 4321  # linked to the line before
    assert evs[1]["stack"][0] == "Stack trace of thread 4242:"  # rsyslog wrote the newlines as #012
    assert all(abs(e["time"] - time.time()) < 60 for e in evs)


@pytest.fixture
def coredump_listener(saved_sysctls):
    """The real systemd-coredump behind a socket we activate by hand (no systemd as PID 1 here); its
    own messages go to /dev/kmsg, as they do wherever there is no journal."""
    with CD.service() as cd:
        cd.start()
        yield cd.ours


def test_real_systemd_coredump_lines_through_rsyslog(coredump_listener, rsyslog):
    """systemd-coredump refuses a core for RLIMIT_CORE=0 (%c in the pattern) and says so in the kernel
    log; rsyslogd writes it as a kernel line; syslog.read gives the crashed pid and the gate."""
    L.set_sysctls({"kernel.core_pattern": f"|{CD.HELPER} %P %u %g %s %t %c %h", "fs.suid_dumpable": 0,
                   "kernel.core_pipe_limit": 16})
    v = L.Victim({"rlimit_core": [0, None]})
    coredump_listener.append(v.pid)
    try:
        v.fault()
    finally:
        v.close()
    path = os.path.join(rsyslog, "daemon.log")  # the records' facility is daemon

    def found():
        return [e for e in syslog.read([path]) if e["pid"] == v.pid] if os.path.exists(path) else []
    evs = _wait_for(found, 15)
    assert [(e["event"], e["gate"]) for e in evs] == [("handler-refused", "rlimit-core")], evs
    assert evs[0]["comm"].startswith("python") and evs[0]["ident"] == "systemd-coredump"
    assert evs[0]["hpid"] not in (None, v.pid) and abs(evs[0]["time"] - time.time()) < 60
    assert not glob.glob(f"{CD.STORE}/core.*.{v.pid}.*")  # and indeed nothing was stored


def test_planted_lines_beside_a_real_crash(saved_sysctls, rsyslog):
    """An unprivileged user plants lines with logger(1): a kernel segfault line forged under the tag
    "kernel" (rsyslogd gives a message from its socket facility user, even when it asks for kern, so
    it lands in syslog and not in kern.log), one forged as kernel[PID], and a systemd-coredump line
    with a 4,400-digit pid. `crashes` reads the files beside a real crash: the real one is listed as
    the kernel's, the forged one is marked as not the kernel's word, the bad line is skipped and
    counted, and nothing fails."""
    logger = shutil.which("logger")
    if logger is None:
        pytest.skip("logger(1) is not installed (bsdutils)")
    L.set_sysctls({"kernel.core_pattern": "core", "kernel.core_uses_pid": 0, "fs.suid_dumpable": 0})
    sock = os.path.join(rsyslog, "log.sock")
    os.chmod(sock, 0o666)
    os.chmod(rsyslog, 0o755)
    pid = _segfault_logged_by_kernel()
    big = "9" * 4400
    seg = " segfault at 0 ip 00007f3499585ad8 sp 00007ffda54d0ab8 error 4 in libc.so.6[167ad8,7f3499444000+156000]"
    planted = [["-p", "kern.err", "-t", "kernel", f"cdforged[4194300]:{seg}"],
               ["-t", "kernel", "--id", f"cdtagged[4194299]:{seg}"],
               ["--size", "8000", "-p", "daemon.err", "-t", "systemd-coredump",
                f"Process {big} (x) of user 0 dumped core."]]  # logger cuts at 1 KiB without --size
    for args in planted:  # as nobody: what any user may do
        subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", logger, "-u", sock, *args],
                       check=True, timeout=10)
    logs = [os.path.join(rsyslog, n) for n in ("kern.log", "syslog", "daemon.log")]

    def all_there():
        text = "".join(open(p, errors="replace").read() for p in logs if os.path.exists(p))
        return all(os.path.exists(p) for p in logs) and f"[{pid}]: segfault" in text and "cdforged" in text \
            and "cdtagged" in text and big in text
    assert _wait_for(all_there, 10), "rsyslogd did not write every line"
    assert "cdforged" not in open(logs[0]).read()  # facility user: not in kern.log
    r = L.coredoctor("crashes", "--json", "--source", "syslog", *[a for p in logs for a in ("--log", p)])
    assert r.returncode == 0 and "Traceback" not in r.stderr and r.stderr == "", r.stderr
    doc = json.loads(r.stdout)
    recs = {c["pid"]: c for c in doc["crashes"]}
    real = recs[pid]
    assert real["signal"] == "SIGSEGV" and real["untrusted"] is None
    assert f"syslog:{logs[0]}" in real["sources"]
    forged = recs[4194300]
    assert "not the kernel's word" in forged["untrusted"] and forged["sources"] == [f"syslog:{logs[1]}"]
    assert 4194299 not in recs  # kernel[PID]: a process's tag, skipped
    assert doc["skipped"]["log"] >= 3, doc["skipped"]  # kernel[PID] in syslog, 4,400 digits in daemon.log and syslog
    assert any("4400 digits" in w for w in doc["skipped_why"]["log"]), doc["skipped_why"]
    text = L.coredoctor("crashes", "--source", "syslog", *[a for p in logs for a in ("--log", p)])
    assert text.returncode == 0 and "Not the kernel's word (1): cdforged[4194300]" in text.stdout
    assert "Skipped as unreadable or untrusted: log " in text.stdout
