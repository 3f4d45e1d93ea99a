"""coredoctor metrics against real components: promtool (Debian's prometheus package) parses the
exposition, Debian's prometheus-node-exporter serves the textfile on loopback, real processes in
real unit cgroups, a real crash counted once across runs."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

import lab as L

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reads every process and creates cgroups: run as root")

HERE = os.path.dirname(os.path.abspath(__file__))
RULES_DIR = os.path.join(HERE, "..", "..", "contrib", "prometheus")
CGROUP_ROOTS = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"


def _need(tool):
    if not shutil.which(tool) and not os.path.exists(tool):
        pytest.fail(f"{tool} is not installed (run-tests installs prometheus and prometheus-node-exporter)")


def _cgroup_root():
    for r in CGROUP_ROOTS:
        if os.path.exists(os.path.join(r, "cgroup.procs")) and os.access(r, os.W_OK):
            return r
    pytest.skip("no writable cgroup hierarchy is mounted")


class Unit:
    """A process (lab victim) in the cgroup of a made-up service, removed again on close."""

    def __init__(self, name, spec, cwd):
        root = _cgroup_root()
        self.cg = os.path.join(root, "system.slice", name)
        self.made_slice = not os.path.exists(os.path.dirname(self.cg))
        os.makedirs(self.cg)
        self.v = L.Victim(spec, cwd=cwd)
        with open(os.path.join(self.cg, "cgroup.procs"), "w") as f:
            f.write(str(self.v.pid))

    def close(self):
        self.v.close()
        os.rmdir(self.cg)
        if self.made_slice:
            try:
                os.rmdir(os.path.dirname(self.cg))
            except OSError:
                pass


def _samples(text):
    """{(name, frozenset(labels)): value} of an exposition (the test's own strict reader)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, f"not a sample line (or one with a timestamp): {line!r}"
        labels = frozenset(re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def _metrics(state, *args):
    r = L.coredoctor("metrics", *args, env_extra={"COREDOCTOR_STATE_DIR": str(state)})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout


def test_exposition_is_valid_and_knows_the_services(tmp_path, saved_sysctls):
    _need("promtool")
    L.write_sysctl("kernel.core_pattern", "core")
    work = tmp_path / "work"
    work.mkdir()
    bad = Unit("coredoctor-fleet-nocore.service", {"rlimit_core": [0, None]}, str(work))
    good = Unit("coredoctor-fleet-core.service", {"rlimit_core": [None, None]}, str(work))
    try:
        text = _metrics(tmp_path / "state", "--no-crashes")
    finally:
        bad.close()
        good.close()
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    s = _samples(text)
    assert s[("coredoctor_target_would_dump",
              frozenset({("unit", "coredoctor-fleet-nocore.service"), ("container", "")}))] == 0
    assert s[("coredoctor_target_would_dump",
              frozenset({("unit", "coredoctor-fleet-core.service"), ("container", "")}))] == 1
    for fam in ("coredoctor_processes", "coredoctor_target_would_dump", "coredoctor_crashes_total",
                "coredoctor_dumpability_losses_total", "coredoctor_last_run_timestamp_seconds",
                "coredoctor_run_duration_seconds", "coredoctor_info"):
        assert f"# HELP {fam} " in text and f"# TYPE {fam} " in text
    assert "pid=" not in text
    assert s[("coredoctor_processes", frozenset({("verdict", "no_core"), ("gate", "rlimit-core")}))] >= 1
    assert any(k[0] == "coredoctor_processes" and ("verdict", "core") in k[1] for k in s)
    rel = os.uname().release
    assert s[("coredoctor_info", frozenset({("version", __import__("coredoctor").__version__),
                                            ("kernel", rel)}))] == 1
    assert abs(s[("coredoctor_last_run_timestamp_seconds", frozenset())] - time.time()) < 60


def _free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def _scrape(url, deadline):
    last = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError as e:
            last = e
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer: {last}")


def test_node_exporter_serves_the_textfile(tmp_path):
    _need(NODE_EXPORTER)
    tdir = tmp_path / "textfile"
    tdir.mkdir()
    r = L.coredoctor("metrics", "--textfile", str(tdir), env_extra={"COREDOCTOR_STATE_DIR": str(tmp_path / "st")})
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    assert sorted(os.listdir(tdir)) == ["coredoctor.prom"]  # no temporary file left
    port = _free_port()
    ne = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                           "--collector.disable-defaults", "--collector.textfile",
                           f"--collector.textfile.directory={tdir}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = _scrape(f"http://127.0.0.1:{port}/metrics", time.time() + 20)
    finally:
        ne.terminate()
        try:
            ne.wait(10)
        except subprocess.TimeoutExpired:
            ne.kill()
            ne.wait()
        ne.stderr.close()
    s = _samples(body)
    assert s[("node_textfile_scrape_error", frozenset())] == 0, body
    assert s[("node_textfile_mtime_seconds", frozenset({("file", str(tdir / "coredoctor.prom"))}))] > 0
    assert any(k[0] == "coredoctor_info" for k in s)
    assert any(k[0] == "coredoctor_processes" for k in s)


def _crash_totals(text):
    return {k: v for k, v in _samples(text).items() if k[0] == "coredoctor_crashes_total"}


def test_a_real_crash_is_counted_once_across_runs(tmp_path, saved_sysctls):
    L.write_sysctl("kernel.core_pattern", "core")
    state = tmp_path / "state"
    first = _crash_totals(_metrics(state))
    again = _crash_totals(_metrics(state))
    assert again == first, "a second run over the same logs counted crashes again"
    work = tmp_path / "w"
    work.mkdir()
    v = L.Victim({"rlimit_core": [0, None]}, cwd=str(work))
    try:
        v.send("fault")
        st = v.wait(10)
        assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == 11 and not os.WCOREDUMP(st)
    finally:
        v.close()
    deadline = time.time() + 10
    while True:
        after = _crash_totals(_metrics(state))
        if sum(after.values()) > sum(first.values()) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert sum(after.values()) == sum(first.values()) + 1, (first, after)
    grew = [k for k in after if after[k] != first.get(k, 0)]
    assert len(grew) == 1 and dict(grew[0][1])["core"] in ("missing", "unknown"), grew
    assert _crash_totals(_metrics(state)) == after
    doc = json.loads((state / "metrics.json").read_text())
    assert sum(doc["crashes"].values()) == sum(after.values())


def test_alert_rules_pass_promtool_and_a_broken_rule_fails(tmp_path):
    _need("promtool")
    r = subprocess.run(["promtool", "test", "rules", "coredoctor-rules.test.yml"], cwd=RULES_DIR,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    # the unit tests can fail: the same tests against a rule that never fires
    for f in ("coredoctor-rules.yml", "coredoctor-rules.test.yml"):
        shutil.copy(os.path.join(RULES_DIR, f), tmp_path / f)
    rules = (tmp_path / "coredoctor-rules.yml").read_text()
    (tmp_path / "coredoctor-rules.yml").write_text(rules.replace("coredoctor_target_would_dump == 0",
                                                                 "coredoctor_target_would_dump == 2"))
    r = subprocess.run(["promtool", "test", "rules", "coredoctor-rules.test.yml"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "CoredoctorServiceWouldLoseCore" in r.stdout + r.stderr


def test_shipped_units_verify():
    d = os.path.join(HERE, "..", "..", "contrib", "systemd")
    units = sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith((".service", ".timer")))
    assert any(u.endswith("coredoctor-metrics.timer") for u in units)
    for u in units:
        text = open(u).read()
        if u.endswith(".service"):
            m = re.search(r"^ExecStart=(\S+) (.*)$", text, re.M)
            assert m and m.group(1) == "/usr/sbin/coredoctor"
            args = m.group(2).split()
            # the command line the unit runs is one this coredoctor accepts
            r = L.coredoctor(*args, "--help")
            assert r.returncode == 0, (u, r.stderr)
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
        errs = [ln for ln in (r.stdout + r.stderr).splitlines()
                if ln and "/usr/sbin/coredoctor" not in ln and "Failed to" not in ln]
        assert not errs, errs


def _stop(p):
    p.terminate()
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def test_prometheus_fires_the_alert_for_a_service_that_would_lose_its_core(tmp_path, saved_sysctls):
    """node_exporter serves the textfile, a real Prometheus server on loopback scrapes it and
    evaluates the shipped rule; the rule's ``for: 15m`` is cut to 0s here (promtool's unit tests
    above hold the duration), the expression is the shipped one."""
    _need(NODE_EXPORTER)
    _need("prometheus")
    L.write_sysctl("kernel.core_pattern", "core")
    tdir = tmp_path / "textfile"
    tdir.mkdir()
    unit = "coredoctor-fleet-alert.service"
    bad = Unit(unit, {"rlimit_core": [0, None]}, str(tmp_path))
    try:
        _metrics(tmp_path / "st", "--no-crashes", "--textfile", str(tdir))
    finally:
        bad.close()
    rules = open(os.path.join(RULES_DIR, "coredoctor-rules.yml")).read()
    assert "for: 15m" in rules
    (tmp_path / "rules.yml").write_text(rules.replace("for: 15m", "for: 0s"))
    ne_port, prom_port = _free_port(), _free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{tmp_path / 'rules.yml'}]\n"
        "scrape_configs:\n"
        f"  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{ne_port}']}}]\n")
    ne = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{ne_port}",
                           "--collector.disable-defaults", "--collector.textfile",
                           f"--collector.textfile.directory={tdir}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    firing = []
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not firing:
            try:
                body = _scrape(f"http://127.0.0.1:{prom_port}/api/v1/alerts", deadline)
            except AssertionError:
                break
            alerts = json.loads(body)["data"]["alerts"]
            firing = [a for a in alerts if a["labels"].get("alertname") == "CoredoctorServiceWouldLoseCore"
                      and a["state"] == "firing" and a["labels"].get("unit") == unit]
            if not firing:
                time.sleep(0.5)
    finally:
        _stop(prom)
        _stop(ne)
    assert len(firing) == 1, "the alert did not fire for the non-dumpable service"
    assert firing[0]["labels"]["instance"] == f"127.0.0.1:{ne_port}"
