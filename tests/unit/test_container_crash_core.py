"""crashes: a container's core at the host path of that time (history/cores.py find_in_container,
podman_died, container_core; report._container_core). Synthetic cores (test_elfcore's maker) and
a recorded podman events log; the real proof is tests/containers/test_container_crashes.py."""
import json
import os
import time

from test_elfcore import make_core, note, prpsinfo, prstatus

from coredoctor.history import cores, report
from coredoctor.kernel import core_pattern

T = 1796139912.0


def _core(pid, fname=b"cd-crasher"):
    return make_core(note(1, prstatus(pid=pid)) + note(3, prpsinfo(pid=pid, fname=fname)))


def _put(d, name, data, mtime=T + 1):
    p = os.path.join(d, name)
    with open(p, "wb") as f:
        f.write(data)
    os.utime(p, (mtime, mtime))
    return p


def test_core_in_own_pid_namespace_found_by_name_and_time(tmp_path):
    d = str(tmp_path / "upper" / "tmp")
    os.makedirs(d)
    crash = {"pid": 29213, "comm": "cd-crasher", "time": T, "uid": 0}
    want = _put(d, "cdcr.cd-crasher.7", _core(7))
    _put(d, "cdcr.cd-crasher.3", _core(3), mtime=T - 600)           # an older crash of that program
    _put(d, "cdcr.cd-crasher.9", _core(9, fname=b"other"))          # another program's core
    got = cores.find_in_container(d + "/cdcr.cd-crasher.*", crash, own_pid_ns=True)
    assert got["found"] is True and got["path"] == want and got["status"] == "present", got
    assert got["size"] == os.path.getsize(want)
    # sharing the host's pid namespace, the pid must be the crash's own
    got = cores.find_in_container(d + "/cdcr.cd-crasher.*", crash, own_pid_ns=False)
    assert got["found"] is False and "no ELF core of this crash" in got["why"]
    os.unlink(want)
    got = cores.find_in_container(d + "/cdcr.cd-crasher.*", crash, own_pid_ns=True)
    assert got["found"] is False, got


def test_a_symlinked_directory_in_the_container_is_not_followed(tmp_path):
    upper = tmp_path / "upper"
    upper.mkdir()
    elsewhere = tmp_path / "hostdir"
    elsewhere.mkdir()
    _put(str(elsewhere), "cdcr.cd-crasher.7", _core(7))
    os.symlink(str(elsewhere), str(upper / "tmp"))     # the container's root made /tmp a link
    crash = {"pid": 29213, "comm": "cd-crasher", "time": T, "uid": 0}
    got = cores.find_in_container(str(upper) + "/tmp/cdcr.cd-crasher.*", crash, own_pid_ns=True)
    assert got["found"] is False and "is a symlink: not followed" in got["why"], got
    assert os.path.exists(elsewhere / "cdcr.cd-crasher.7")           # nothing deleted


def test_planted_core_of_another_user_in_a_world_writable_dir(tmp_path):
    d = tmp_path / "tmp"
    d.mkdir()
    os.chmod(d, 0o1777)
    p = _put(str(d), "cdcr.cd-crasher.7", _core(7))
    os.chown(p, 4321, 4321)
    crash = {"pid": 29213, "comm": "cd-crasher", "time": T, "uid": 0}
    assert cores.find_in_container(str(d) + "/cdcr.cd-crasher.*", crash, True)["found"] is False
    assert cores.find_in_container(str(d) + "/cdcr.cd-crasher.*", crash, True, owners=(4321,))["found"] is True


CID = "9457ba4a899d6391e7f99291e6c397676420ab354eade16b5a833833c8f3493e"
OTHER = "1a79cc3e0b28c370f500975c099c0724cedb72cf7ac8edb250b24962b030b6f4"


def _ev(cid, status, t, **kw):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(t))) + ".095627598Z"
    return json.dumps(dict({"ID": cid, "Name": "cdt-rm", "Image": "localhost/img:latest", "Status": status,
                            "Time": stamp, "Type": "container", "Attributes": {}}, **kw))


def test_podman_events_tie_a_removed_container_to_its_crash(tmp_path):
    log = tmp_path / "events.log"
    lines = [_ev(CID, "start", T - 5), "not json {", _ev(OTHER, "died", T + 1, ContainerExitCode=137),
             _ev(CID, "died", T + 1, ContainerExitCode=139), _ev(CID, "remove", T + 2),
             _ev(OTHER, "died", T + 900, ContainerExitCode=139), json.dumps(["x"])]
    log.write_text("\n".join(lines) + "\n")
    crash = {"pid": 1, "time": T, "signo": 11}
    c = cores.podman_died(crash, str(log))
    assert (c["runtime"], c["id"], c["name"], c["image"]) == ("podman", CID, "cdt-rm", "localhost/img:latest")
    assert int(c["died"]) == int(T + 1) and int(c["removed"]) == int(T + 2)
    assert cores.podman_died(dict(crash, signo=6), str(log)) is None     # 134 would be SIGABRT
    # two containers died of it then: which one is not known
    log.write_text("\n".join(lines + [_ev(OTHER, "died", T + 2, ContainerExitCode=139)]) + "\n")
    assert cores.podman_died(crash, str(log)) is None
    link = tmp_path / "link.log"
    os.symlink(str(log), str(link))
    assert cores.podman_died(crash, str(link)) is None


def test_record_of_a_removed_container_says_why_no_core():
    from coredoctor.history import kmsg
    seg = kmsg.parse_line("cd-crasher[29472]: segfault at 0 ip 0000000000401000 sp 00007ffc00000000 error 6 in "
                          "cd-crasher[401000,1000]", T)
    gone = {"runtime": "podman", "id": CID, "name": "cdt-rm", "image": None, "pod": None, "namespace": None,
            "state": ["/run/libpod/events/events.log"], "format": "podman-events", "died": T + 1,
            "removed": T + 2}
    env = {"parsed": core_pattern.parse("/tmp/cdcr.%e.%p"), "signals": {"SIGSEGV": 11},
           "base_dirs": lambda c: ([], []), "instance": lambda c: None, "policy": None, "missing_dir": None,
           "gone_container": lambda c: dict(gone) if c.get("signo") == 11 else None,
           "container_core": lambda c, ct, parsed: cores.container_core(c, ct, parsed, None,
                                                                         gone=report._gone_why(ct))}
    r = report.records([seg], env)[0]
    assert r["container"]["name"] == "cdt-rm" and "died" not in r["container"]
    assert "died with exit code 139" in r["container_from"] and "was removed at" in r["container_from"]
    core = r["core"]
    assert (core["found"], core["host_path"], core["status"], core["path"]) == (False, None, "missing", None)
    assert core["container_path"] == "/tmp/cdcr.cd-crasher.*"
    assert core["why"].startswith("in container cdt-rm: podman removed the container at "), core["why"]
    assert "today's core_pattern" in core["pattern_from"]
    # on the host (no container): no host_path key, nothing claimed
    host = report.records([seg], dict(env, gone_container=lambda c: None))[0]
    assert host["container"] is None and "found" not in host["core"]


# -- systemd-nspawn without machined: the leader's argv and the init's environ ---------------

def test_nspawn_machine_named_from_the_leaders_argv():
    from coredoctor.snapshot import containers as C
    env = ["container=systemd-nspawn", "container_uuid=70f6714ca2794ee0887e91c843dc591e", "TERM=vt220"]
    argv = ["/usr/bin/systemd-nspawn", "-D", "/var/tmp/x/rootfs", "-M", "web", "--private-network",
            "--register=no", "--keep-unit", "-b"]
    c = C.nspawn_from_leader(argv, env, 4242, "/payload/system.slice/a.service")
    assert {k: c[k] for k in C.KEYS} == {"runtime": "systemd-nspawn", "id": "web", "name": "web",
                                         "image": "/var/tmp/x/rootfs", "pod": None, "namespace": None}
    assert (c["uuid"], c["leader"], c["format"]) == ("70f6714ca2794ee0887e91c843dc591e", 4242, "nspawn-leader")
    assert C.label(c) == "machine web"
    # no -M: the directory's last component (nspawn's determine_names()); --long=VALUE, clusters
    assert C.nspawn_from_leader(["nspawn", "--directory=/m/db/", "-bq"], env, 1)["name"] == "db"
    assert C.nspawn_from_leader(["nspawn", "-bMfoo", "-D/m/x"], env, 1)["name"] == "foo"
    assert C.nspawn_from_leader(["nspawn", "--machine", "m2", "-i", "/v/img.raw"], env, 1)["name"] == "m2"
    assert C.nspawn_from_leader(["nspawn", "-i", "/v/img.raw"], env, 1)["name"] == "img"
    # the payload's own command line is not nspawn's: its -M names nothing
    assert C.nspawn_from_leader(["nspawn", "-D", "/m/a", "/bin/sh", "-M", "evil"], env, 1)["name"] == "a"
    # the environ is the payload's: a uuid only with container=systemd-nspawn and well-formed
    assert C.nspawn_from_leader(argv, ["container_uuid=70f6714ca2794ee0887e91c843dc591e"], 1)["uuid"] is None
    assert C.nspawn_from_leader(argv, ["container=systemd-nspawn", "container_uuid=../../x"], 1)["uuid"] is None
    long = C.nspawn_from_leader(["nspawn", "-M", "n" * 5000], env, 1)
    assert len(long["name"]) == C.MAX_FIELD


def test_nspawn_of_a_host_process_is_none():
    from coredoctor.snapshot import containers as C
    assert C.nspawn_of(os.getpid()) is None        # this test's own ancestors: no systemd-nspawn
    assert C.nspawn_of(0x7FFFFFFF) is None         # no such process


def test_dumpable_cause_names_a_machines_users_by_the_machines_names():
    from coredoctor.kernel import dumpable as D
    parent = {"pid": 500, "comm": "ovs-ctl", "nspid": [500, 40], "dumpable": {"candidates": [1]},
              "creds": {"uid": [0, 0, 0, 0], "gid": [0, 0, 0, 0], "user": "root", "group": "root"}}
    proc = {"pid": 501, "ppid": 500, "comm": "ovs-vswitchd", "nspid": [501, 41], "exe": "/usr/sbin/x",
            "creds": {"uid": [998, 998, 998, 998], "gid": [997, 997, 997, 997], "user": "hostuser",
                      "group": "hostgroup", "cap_prm": "0"}}
    names = ({"998": "openvswitch", "0": "root"}, {"997": "hugetlbfs", "0": "root"}, 2)
    got = D.infer_cause(proc, lambda p: parent if p is proc else None, 0, 0, names=names)
    assert got["cause"] == "privilege-change" and got["to"] == "openvswitch:hugetlbfs", got
    assert "runs as openvswitch:hugetlbfs" in got["evidence"] and "hostuser" not in got["evidence"]
    host = D.infer_cause(proc, lambda p: parent if p is proc else None, 0, 0)
    assert host["to"] == "hostuser:hostgroup"
    # a process at another depth (the host's, outside the machine) keeps the host's names
    assert D._ids_name(proc["creds"], names, dict(proc, nspid=[501])) == "hostuser:hostgroup"


def test_a_crash_s_own_restart_is_tried_before_another_containers_copy():
    """Seen in CI: two containers ran the same crasher; the second one's crash (pid 10446) came
    1.2 s after the first one's restart (pid 10347), which counted as "restarted" within the
    kernel-log clock slack and, lowest pid first, stood in for the second crash's instance: the
    crash was put in the first container. The crashed program's own restart (a pid after it)
    comes first."""
    cands = [(10347, True), (9000, False), (10450, True), (10461, True), (120, True)]
    order = [p for p, r in sorted(cands, key=lambda c: cores._restart_rank(c[0], c[1], 10446))]
    assert order == [10450, 10461, 10347, 120, 9000]
    # no crashed pid known: restarts before the rest
    assert [p for p, r in sorted(cands, key=lambda c: cores._restart_rank(c[0], c[1], None))][-1] == 9000
