"""The Ansible collection (contrib/ansible) against real hosts: ansible-core's ansible-playbook,
built and installed with ansible-galaxy, runs coredoctor_info and coredoctor_fix on localhost
(connection=local) and on two podman containers (a Debian 12 root with openssh-server, sshd
published on a random 127.0.0.1 port, a key made by the test), with coredoctor installed on each
the documented way (the zipapp from packaging/build-dist; copied onto the containers by the play).

Containers share the host's kernel: kernel.core_pattern and fs.suid_dumpable are the host's
everywhere (and /proc/sys is read-only inside a container). So the containers are hosts to
report on and to plan for (check mode), and the fix is applied on localhost, with the host's
sysctls, /etc/sysctl.d/90-coredoctor.conf and /var/crash saved and restored (conftest's
saved_sysctls and fix_env) even when a test fails."""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

import lab as L

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs containers and changes sysctls: run as root")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COLLECTION = os.path.join(ROOT, "contrib", "ansible", "ansible_collections", "coredoctor", "coredoctor")
sys.path.insert(0, HERE)

import sshroot  # noqa: E402

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
FLEETD = "cdfleetd"   # the container's privilege-dropping daemon (comm)
VICTIM = "cdansvictim"  # the host's
#: a daemon that drops privileges the way daemons do (no exec after it): not dumpable while
#: fs.suid_dumpable is 0
FLEETD_PY = ("import ctypes, os, time; ctypes.CDLL(None).prctl(15, b'%s', 0, 0, 0); os.setgroups([]); "
             "os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534); time.sleep(86400)" % FLEETD)
SYSCTLS = ("/proc/sys/kernel/core_pattern", "/proc/sys/fs/suid_dumpable", "/proc/sys/kernel/core_pipe_limit",
           "/proc/sys/kernel/core_uses_pid")


def _tool(name):
    p = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if not p:
        pytest.fail(f"{name} is not installed (the test extra installs ansible-core: pip install -e '.[test]')")
    return p


def _free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


class Container:
    """A podman container on its own extracted copy of the ssh root, sshd published on
    127.0.0.1:port, the daemon FLEETD running; removed (container and root) on close."""

    def __init__(self, tar, name, client_pub):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="cd-ansible-ct-", dir="/var/tmp")
        self.root = os.path.join(self.dir, "root")
        self.id = None
        os.mkdir(self.root)
        subprocess.run(["tar", "-C", self.root, "--numeric-owner", "-xf", tar], check=True)
        os.makedirs(os.path.join(self.root, "root", ".ssh"), mode=0o700, exist_ok=True)
        shutil.copy(client_pub, os.path.join(self.root, "root", ".ssh", "authorized_keys"))
        key = os.path.join(self.root, "etc", "ssh", "ssh_host_ed25519_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key], check=True)
        with open(key + ".pub") as f:
            self.host_key = " ".join(f.read().split()[:2])
        os.makedirs(os.path.join(self.root, "run", "sshd"), exist_ok=True)
        self.port = _free_port()
        r = subprocess.run(PODMAN + ["run", "-d", "--name", name, "-p", f"127.0.0.1:{self.port}:22",
                                     "--ulimit", f"nofile=1024:{_hard_nofile()}", "--ulimit", "nproc=4096:4096",
                                     "--ulimit", "core=-1:-1", "--rootfs", self.root,
                                     "/bin/sh", "-c", f"python3 -c \"{FLEETD_PY}\" & exec /usr/sbin/sshd -D -e"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"podman run {name}: {r.stderr[-2000:]}")
        self.id = r.stdout.strip().splitlines()[-1]

    def wait_ssh(self, key, known_hosts, deadline):
        last = None
        while time.time() < deadline:
            r = subprocess.run(["ssh", "-i", key, "-p", str(self.port), "-o", "BatchMode=yes",
                                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                                "-o", "ConnectTimeout=5", "root@127.0.0.1", f"pgrep -x {FLEETD}"],
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                return
            last = r.stderr.strip() or r.stdout.strip()
            time.sleep(0.3)
        logs = subprocess.run(PODMAN + ["logs", self.name], capture_output=True, text=True).stdout
        raise AssertionError(f"{self.name}: sshd on 127.0.0.1:{self.port} never answered: {last}\n{logs[-2000:]}")

    def close(self):
        if self.id:
            subprocess.run(PODMAN + ["rm", "-f", "-t", "2", self.id], capture_output=True, timeout=120)
        with open("/proc/self/mountinfo") as f:
            mounted = [ln.split()[4] for ln in f]
        if not any(m == self.root or m.startswith(self.root + "/") for m in mounted):
            shutil.rmtree(self.dir, ignore_errors=True)


def _hard_nofile():
    import resource
    h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return "-1" if h == resource.RLIM_INFINITY else str(h)


@pytest.fixture(scope="module")
def fleet():
    """The zipapp, the collection built and installed, the key, two containers, the inventory."""
    for t in ("podman", "runc", "ssh", "ssh-keygen", "mmdebstrap"):
        if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}"):
            pytest.fail(f"{t} is missing (run-tests installs podman, runc, openssh-client, mmdebstrap)")
    galaxy, playbook = _tool("ansible-galaxy"), _tool("ansible-playbook")
    work = tempfile.mkdtemp(prefix="cd-ansible-")
    cts = []
    try:
        dist = os.path.join(work, "dist")
        r = subprocess.run([sys.executable, os.path.join(ROOT, "packaging", "build-dist"), "--no-deb", "--out", dist],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        pyz = os.path.join(dist, "coredoctor.pyz")
        cfg = os.path.join(work, "ansible.cfg")  # none of the machine's or the cwd's ansible.cfg
        with open(cfg, "w") as f:
            f.write("[defaults]\n")
        env = dict(os.environ, ANSIBLE_HOME=os.path.join(work, "ansible-home"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=os.path.join(work, "ansible-tmp"),
                   ANSIBLE_COLLECTIONS_PATH=os.path.join(work, "collections"), ANSIBLE_PIPELINING="1",
                   # no ssh master left running after the test (ControlPersist)
                   ANSIBLE_SSH_ARGS="-o ControlMaster=no", ANSIBLE_RETRY_FILES_ENABLED="0",
                   ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_CONFIG=cfg)
        env.pop("PYTHONPATH", None)  # the hosts run the zipapp, not the checkout
        r = subprocess.run([galaxy, "collection", "build", "--output-path", work, COLLECTION],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        tarball = os.path.join(work, f"coredoctor-coredoctor-{__import__('coredoctor').__version__}.tar.gz")
        assert os.path.isfile(tarball), os.listdir(work)
        r = subprocess.run([galaxy, "collection", "install", "-p", env["ANSIBLE_COLLECTIONS_PATH"], tarball],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        key = os.path.join(work, "id_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "coredoctor-ansible-test", "-f", key],
                       check=True)
        tar = sshroot.tarball(log=lambda m: sys.stderr.write(m + "\n"))
        tag = f"{os.getpid()}-{int(time.time())}"
        for i in (1, 2):
            cts.append(Container(tar, f"coredoctor-ansible-ct{i}-{tag}", key + ".pub"))
        known = os.path.join(work, "known_hosts")
        with open(known, "w") as f:
            for c in cts:
                f.write(f"[127.0.0.1]:{c.port} {c.host_key}\n")
        deadline = time.time() + 60
        for c in cts:
            c.wait_ssh(key, known, deadline)
        interp = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        inv = os.path.join(work, "inventory.ini")
        with open(inv, "w") as f:
            f.write(f"localhost ansible_connection=local ansible_python_interpreter={interp} coredoctor_path={pyz}\n")
            for i, c in enumerate(cts, 1):
                f.write(f"ct{i} ansible_host=127.0.0.1 ansible_port={c.port} ansible_user=root "
                        f"ansible_ssh_private_key_file={key} ansible_python_interpreter=/usr/bin/python3 "
                        f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'\n")
        f = {"work": work, "env": env, "inventory": inv, "playbook": playbook, "pyz": pyz, "containers": cts,
             "doc": _tool("ansible-doc")}
        _play(f, INSTALL, name="install.yml")
        yield f
    finally:
        for c in cts:
            c.close()
        shutil.rmtree(work, ignore_errors=True)


def _play(fleet, text, *args, name="play.yml", timeout=300):
    """Run a playbook; returns (stdout, {host: {var: value}}) of what its last play dumped."""
    path = os.path.join(fleet["work"], name)
    out = os.path.join(fleet["work"], "out")
    shutil.rmtree(out, ignore_errors=True)
    os.mkdir(out)
    with open(path, "w") as f:
        f.write(text.replace("@OUT@", out))
    t0 = time.monotonic()
    env = dict(fleet["env"])
    if os.environ.get("COREDOCTOR_STATE_DIR"):  # fix_env's private journal, for the local host's fixes
        env["COREDOCTOR_STATE_DIR"] = os.environ["COREDOCTOR_STATE_DIR"]
    r = subprocess.run([fleet["playbook"], "-i", fleet["inventory"], path, *args], capture_output=True, text=True,
                       env=env, timeout=timeout)
    sys.stderr.write(f"ansible-playbook {name} {' '.join(args)}: {time.monotonic() - t0:.1f} s\n")
    fatal = [ln[:3000] for ln in r.stdout.splitlines() if ln.startswith(("fatal:", "failed:", "ERROR", "[ERROR"))]
    assert r.returncode == 0, "\n".join(fatal) + "\n" + r.stdout[-3000:] + r.stderr[-3000:]
    res = {}
    for n in os.listdir(out):
        with open(os.path.join(out, n)) as f:
            res[n[:-len(".json")]] = json.load(f)
    return r.stdout, res


#: dumps what the fleet playbook registered, on the controller, also in check mode
DUMP = """
- name: dump
  hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        content: "{{ {'report': coredoctor_report | default(None), 'fixed': coredoctor_fixed | default(None),
                      'extra': coredoctor_extra | default(None)} | to_json }}"
        dest: "@OUT@/{{ inventory_hostname }}.json"
      delegate_to: localhost
      check_mode: false
"""

INSTALL = """
- name: install coredoctor the documented way (the zipapp)
  hosts: all:!localhost
  gather_facts: false
  tasks:
    - ansible.builtin.file:
        path: /usr/local/lib/coredoctor
        state: directory
        mode: "0755"
      check_mode: false
    - ansible.builtin.copy:
        src: "{{ hostvars['localhost'].coredoctor_path }}"
        dest: /usr/local/lib/coredoctor/coredoctor.pyz
        mode: "0644"
      check_mode: false
"""


def _host_state(fleet, victim_pid):
    """Everything a fix could change, byte for byte: host sysctls, sysctl.d and /var/crash on the
    host and in each container's root, the victim's limits, the fix journal."""
    def tree(root):
        out = {}
        for rel in ("etc/sysctl.d", "var/crash"):
            d = os.path.join(root, rel)
            if not os.path.lexists(d):
                out[rel] = None
                continue
            st = os.lstat(d)
            out[rel] = {"mode": stat.S_IMODE(st.st_mode), "entries": {}}
            for n in sorted(os.listdir(d)):
                p = os.path.join(d, n)
                with open(p, "rb") as f:
                    out[rel]["entries"][n] = (stat.S_IMODE(os.lstat(p).st_mode), f.read())
        return out

    state = {p: open(p, "rb").read() for p in SYSCTLS}
    state["host"] = tree("/")
    for c in fleet["containers"]:
        state[c.name] = tree(c.root)
    with open(f"/proc/{victim_pid}/limits", "rb") as f:
        state["limits"] = f.read()
    jd = os.path.join(os.environ["COREDOCTOR_STATE_DIR"], "fixes")
    state["journal"] = sorted(os.listdir(jd)) if os.path.isdir(jd) else []
    return state


@pytest.fixture
def victim(fix_env, tmp_path):
    """A privilege-dropping process on the host: not dumpable while fs.suid_dumpable is 0."""
    L.write_sysctl("kernel.core_pattern", "core")
    L.write_sysctl("fs.suid_dumpable", "0")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    os.chmod(cwd, 0o755)
    v = L.Victim({"comm": VICTIM, "setgroups": [], "setresgid": [65534] * 3, "setresuid": [65534] * 3},
                 cwd=str(cwd))
    try:
        yield v
    finally:
        v.close()


def test_ansible_doc_shows_both_modules(fleet):
    for m in ("coredoctor_info", "coredoctor_fix"):
        r = subprocess.run([fleet["doc"], f"coredoctor.coredoctor.{m}"], capture_output=True, text=True,
                           env=fleet["env"], timeout=120)
        assert r.returncode == 0 and "ERROR" not in r.stderr, r.stderr
        assert f"coredoctor.coredoctor.{m}" in r.stdout
        for part in ("OPTIONS", "EXAMPLES", "RETURN VALUES", "coredoctor", "check mode"):
            assert part in r.stdout, (m, part)
    r = subprocess.run([fleet["doc"], "--json", "coredoctor.coredoctor.coredoctor_fix",
                        "coredoctor.coredoctor.coredoctor_info"], capture_output=True, text=True, env=fleet["env"],
                       timeout=120)
    docs = json.loads(r.stdout)
    # the documented options are the modules' argument_spec
    fix, info = docs["coredoctor.coredoctor.coredoctor_fix"], docs["coredoctor.coredoctor.coredoctor_info"]
    assert set(fix["doc"]["options"]) == {"target", "pid", "signal", "how", "rollback", "coredoctor"}
    assert {"fix", "id", "actions", "needs_restart", "restored", "cmd"} <= set(fix["return"])
    assert set(info["doc"]["options"]) == {"target", "pid", "unit", "container", "signal", "how", "coredoctor"}
    assert {"check", "summary", "all_dump", "cmd"} <= set(info["return"])


def test_check_mode_reports_and_plans_on_every_host_and_changes_nothing(fleet, victim):
    before = _host_state(fleet, victim.pid)
    ct1 = fleet["containers"][0]
    extra = f"""
- name: the container selector, from the host (coredoctor check --container)
  hosts: localhost
  gather_facts: false
  tasks:
    - coredoctor.coredoctor.coredoctor_info:
        coredoctor: "{{{{ coredoctor_path }}}}"
        container: ["{ct1.id[:12]}"]
      register: by_id
    - coredoctor.coredoctor.coredoctor_info:
        coredoctor: "{{{{ coredoctor_path }}}}"
        container: ["{ct1.name}"]
      register: by_name
    - coredoctor.coredoctor.coredoctor_info:
        coredoctor: "{{{{ coredoctor_path }}}}"
        container: ["no-such-container-{ct1.name}"]
      register: by_nothing
      ignore_errors: true
    - ansible.builtin.set_fact:
        coredoctor_extra: "{{{{ {{'id': by_id, 'name': by_name, 'nothing': by_nothing}} }}}}"
"""
    stdout, res = _play(fleet, "- import_playbook: coredoctor.coredoctor.fleet\n" + extra + DUMP,
                        "--check", "--diff", "-e", json.dumps({"coredoctor_names": [VICTIM, FLEETD]}),
                        name="check.yml")
    assert _host_state(fleet, victim.pid) == before  # check mode changed nothing, anywhere
    assert set(res) == {"localhost", "ct1", "ct2"}
    for host, r in res.items():
        rep = r["report"]
        assert rep["changed"] is False and rep["check"]["schema"] == "coredoctor.check/1"
        blocked = {p["comm"] for p in rep["summary"]["by_gate"].get("dumpable", [])}
        assert (VICTIM if host == "localhost" else FLEETD) in blocked, (host, rep["summary"])
        assert rep["summary"]["total"] == len(rep["check"]["targets"]) > 0
        fx = r["fixed"]
        assert fx["changed"] is True and fx["id"] is None, (host, fx)
        assert fx["fix"]["applied"] is False
        kinds = {(a["kind"], a.get("key") or a.get("path")) for a in fx["actions"]}
        assert {("sysctl", "kernel.core_pattern"), ("sysctl", "fs.suid_dumpable"),
                ("file", "/etc/sysctl.d/90-coredoctor.conf")} <= kinds, (host, kinds)
        sd = next(d for d in fx["diff"] if "fs.suid_dumpable" in d["before_header"])
        assert (sd["before"], sd["after"]) == ("0\n", "2\n")
        cp = next(d for d in fx["diff"] if "kernel.core_pattern" in d["before_header"])
        assert cp["before"] == "core\n" and cp["after"].startswith("/")
        comms = {t["comm"] for t in fx["fix"]["targets"]}
        assert comms <= {VICTIM, FLEETD} and comms, comms
    # the containers' reports are their own processes: sshd and the daemon, not the host's
    for host in ("ct1", "ct2"):
        assert VICTIM not in {t["comm"] for t in res[host]["report"]["check"]["targets"]}
    # the diff is shown, and the fleet summary names each container by the gate that blocks it
    assert "+fs.suid_dumpable = 2" in stdout and "-0\n+2" in stdout
    m = re.search(r"The fleet, by blocking gate\].*?\n(.*?)\n\n", stdout, re.S)
    assert m and re.search(rf"dumpable: ct1 \([^)]*{FLEETD}", m.group(1)), stdout[-4000:]
    assert re.search(rf"dumpable: ct2 \([^)]*{FLEETD}", m.group(1))
    # the container selector kept exactly the processes of ct1 (its sshd and its daemon)
    extra = res["localhost"]["extra"]
    sel = extra["id"]["check"]["targets"]
    assert {t["comm"] for t in sel} >= {"sshd", FLEETD}
    for t in sel:
        with open(f"/proc/{t['pid']}/cgroup") as f:
            assert ct1.id in f.read()
    # ... because coredoctor check was asked for it (--container), which also knows the name
    assert extra["id"]["cmd"][2:] == ["check", "--json", "--container", ct1.id[:12], "--signal", "SIGSEGV"], \
        extra["id"]["cmd"]
    assert extra["name"]["cmd"][2:6] == ["check", "--json", "--container", ct1.name]
    assert sorted(t["pid"] for t in extra["name"]["check"]["targets"]) == sorted(t["pid"] for t in sel)
    # a word that names no container fails the task with coredoctor's line
    nothing = extra["nothing"]
    assert nothing["failed"] is True and nothing["rc"] == 2, nothing
    assert nothing["msg"].startswith("coredoctor exited 2: ") and "no-such-container-" in nothing["msg"]


def test_apply_is_idempotent_and_rollback_restores(fleet, victim, saved_sysctls):
    before = _host_state(fleet, victim.pid)
    prlimit_refused = False
    names = json.dumps({"coredoctor_names": [VICTIM]})
    _, plan = _play(fleet, "- import_playbook: coredoctor.coredoctor.fleet\n" + DUMP, "--limit", "localhost",
                    "--check", "-e", names, name="plan.yml")
    planned = plan["localhost"]["fixed"]["actions"]
    assert _host_state(fleet, victim.pid) == before

    _, res = _play(fleet, "- import_playbook: coredoctor.coredoctor.fleet\n" + DUMP, "--limit", "localhost",
                   "-e", names, name="apply.yml")
    fx = res["localhost"]["fixed"]
    assert fx["changed"] is True and fx["fix"]["applied"] is True and fx["id"], fx
    assert fx["actions"] == planned  # it did what the plan said ...
    for a in planned:                 # ... and the host now is what the plan said
        if a["kind"] == "sysctl":
            path = "/proc/sys/" + a["key"].replace(".", "/")
            assert open(path).read().rstrip("\n") == a["value"], a
        elif a["kind"] == "file":
            assert open(a["path"]).read() == a["content"]
            assert stat.S_IMODE(os.stat(a["path"]).st_mode) == int(a["mode"], 8)
        elif a["kind"] == "mkdir":
            assert stat.S_IMODE(os.stat(a["path"]).st_mode) == int(a["mode"], 8)
        elif a["kind"] == "prlimit":
            assert a["pid"] == victim.pid
            line = next(ln for ln in open(f"/proc/{victim.pid}/limits") if ln.startswith("Max core file size"))
            if line.split()[4:6] != ["unlimited", "unlimited"]:
                # root without CAP_SYS_RESOURCE (this machine) may not raise another user's live
                # limit: the fix says so, and the persistent change still applies at the next start
                assert any(f"pid {victim.pid}" in e and "CAP_SYS_RESOURCE" in e for e in fx["fix"]["errors"]), fx
                prlimit_refused = True
    assert {"sysctl", "file"} <= {a["kind"] for a in planned}
    assert fx["needs_restart"] and fx["needs_restart"][0]["pid"] == victim.pid
    jd = os.path.join(os.environ["COREDOCTOR_STATE_DIR"], "fixes")
    assert os.listdir(jd) == [fx["id"] + ".json"]  # journaled where the task's environment said

    _, again = _play(fleet, "- import_playbook: coredoctor.coredoctor.fleet\n" + DUMP, "--limit", "localhost",
                     "-e", names, name="apply2.yml")
    fx2 = again["localhost"]["fixed"]
    assert fx2["changed"] is False, fx2
    if prlimit_refused:  # planned again, refused again: tried, and nothing changed
        assert [a["kind"] for a in fx2["actions"]] == ["prlimit"] and len(fx2["fix"]["errors"]) == 1, fx2
    else:
        assert fx2["actions"] == [] and fx2["id"] is None, fx2
        assert os.listdir(jd) == [fx["id"] + ".json"]

    rollback = """
- hosts: localhost
  gather_facts: false
  tasks:
    - coredoctor.coredoctor.coredoctor_fix:
        rollback: "%s"
        coredoctor: "{{ coredoctor_path }}"
      register: coredoctor_fixed
""" % fx["id"]
    _, rb = _play(fleet, rollback + DUMP, "--limit", "localhost", "--check", name="rollback-check.yml")
    assert rb["localhost"]["fixed"]["changed"] is True
    assert open("/proc/sys/fs/suid_dumpable").read().strip() == "2"  # check mode: still applied
    _, rb = _play(fleet, rollback + DUMP, "--limit", "localhost", name="rollback.yml")
    r = rb["localhost"]["fixed"]
    assert r["changed"] is True and r["fix"]["state"] == "rolled-back" and r["restored"], r
    after = _host_state(fleet, victim.pid)
    after["journal"] = before["journal"]  # the journal keeps the rolled-back entry
    assert after == before  # sysctls, sysctl.d, /var/crash, the victim's limit: as before the fix
    _, rb = _play(fleet, rollback + DUMP, "--limit", "localhost", name="rollback2.yml")
    assert rb["localhost"]["fixed"]["changed"] is False


def test_a_target_that_names_nothing_fails_with_coredoctors_line(fleet):
    play = """
- hosts: ct1
  gather_facts: false
  tasks:
    - coredoctor.coredoctor.coredoctor_info:
        target: [no-such-process-anywhere]
        coredoctor: /usr/local/lib/coredoctor/coredoctor.pyz
      register: coredoctor_extra
      ignore_errors: true
""" + DUMP
    _, res = _play(fleet, play, "--limit", "ct1,localhost", name="bad.yml")
    e = res["ct1"]["extra"]
    assert e["failed"] is True and e["rc"] == 2, e
    assert e["msg"].startswith("coredoctor exited 2: ") and "no-such-process-anywhere" in e["msg"]
    assert "Traceback" not in e.get("stderr", "")
