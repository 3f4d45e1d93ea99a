"""origin.unitfile (the pure unit-file, environment-file and limits.conf parser) and origin.units
(the finder): the file:line that decided, on snapshot records laid out like RHEL's
ovs-vswitchd.service (openvswitch rhel/usr_lib_systemd_system_ovs-vswitchd.service.in, with the
--ovs-user=${OVS_USER_ID} ExecStart of the releases before the useropts file)."""
import pytest

from coredoctor import origin as O
from coredoctor.origin import unitfile as U, units as UN

OVS_UNIT = """[Unit]
Description=Open vSwitch Forwarding Unit

[Service]
Type=forking
Restart=on-failure
Environment=XDG_RUNTIME_DIR=/var/run/openvswitch
EnvironmentFile=/etc/openvswitch/default.conf
EnvironmentFile=-/etc/sysconfig/openvswitch
EnvironmentFile=-/run/openvswitch/useropts
ExecStart=/usr/share/openvswitch/scripts/ovs-ctl \\
          --no-ovsdb-server --no-monitor --system-id=random \\
          --ovs-user=${OVS_USER_ID} \\
          start $OPTIONS
TimeoutSec=300
"""
DEFAULT_CONF = 'OVS_USER_ID="root:root"\n'
SYSCONFIG = '# local\nOPTIONS=""\nOVS_USER_ID="openvswitch:hugetlbfs"\n'
UNIT = "ovs-vswitchd.service"


def _proc(pid=40, unit=UNIT, user="openvswitch", group="hugetlbfs", uid=990, gid=991, core=(0, None), ppid=1,
          nspid=None):
    return {"pid": pid, "ppid": ppid, "comm": "ovs-vswitchd", "unit": unit, "nspid": nspid or [pid],
            "creds": {"uid": [uid] * 4, "gid": [gid] * 4, "user": user, "group": group},
            "limits": {"core": list(core), "fsize": [None, None]}}


def _snap(files, env=None, procs=None, system=None, limits=None, pattern="core", key=f"0:{UNIT}"):
    rec = {"unit": key.split(":", 1)[1], "root": "/", "masked": False, "manager_pid": None, "manager_comm": None,
           "files": files, "env": env or {}, "env_errors": {p: "missing" for p, t in (env or {}).items() if t is None},
           "system": system or []}
    return {"processes": procs or [_proc()], "units": {key: rec}, "limits_conf": limits or [],
            "sysctl": {"kernel.core_pattern": pattern}}


def _target(*bad, cause="privilege-change"):
    return {"dumpable": {"cause": cause}, "fixes": [],
            "gates": [{"id": g, "status": "fail", "evidence": ""} for g in bad]}


def _f(path, text, kind="unit"):
    return {"path": path, "text": text, "links": [], "error": None, "kind": kind}


OVS_FILES = [_f(f"/usr/lib/systemd/system/{UNIT}", OVS_UNIT)]
OVS_ENV = {"/etc/openvswitch/default.conf": DEFAULT_CONF, "/etc/sysconfig/openvswitch": SYSCONFIG,
           "/run/openvswitch/useropts": None}


# --------------------------------------------------------------------------- the parser


def test_parse_continuation_comments_sections():
    text = "# c\n[Service]\n; c\nExecStart=/bin/a \\\n# skipped\n  b \\\n  c\nUser = nobody \n[Install]\nUser=x\n"
    st = U.parse(text, "/u")
    assert [(s.section, s.key, s.value, s.line) for s in st] == [
        ("Service", "ExecStart", "/bin/a  b  c", 4), ("Service", "User", "nobody", 8), ("Install", "User", "x", 10)]


def test_merge_dropins_later_wins_and_empty_resets_lists():
    eff = U.merge([("/u", "[Service]\nUser=a\nEnvironment=A=1\nExecStart=/x\nLimitCORE=0\n"),
                   ("/d/10.conf", "[Service]\nUser=b\nEnvironment=\nEnvironment=B=2\nExecStart=\nExecStart=/y\n")])
    assert eff["User"][0].value == "b" and eff["User"][0].file == "/d/10.conf"
    assert [s.value for s in eff["Environment"]] == ["B=2"]
    assert [s.value for s in eff["ExecStart"]] == ["/y"] and eff["LimitCORE"][0].line == 5


def test_words_quotes_and_escapes():
    assert U.split_words('A=1 "B=two words" \'C=x y\' D=a\\ b') == ["A=1", "B=two words", "C=x y", "D=a b"]


def test_environment_files_override_environment_and_each_other():
    eff = U.merge([("/u", OVS_UNIT)])
    env, files = U.environment(eff, OVS_ENV, UNIT)
    v = env["OVS_USER_ID"]
    assert (v.value, v.file, v.line) == ("openvswitch:hugetlbfs", "/etc/sysconfig/openvswitch", 3)
    assert v.via.value == "-/etc/sysconfig/openvswitch" and v.via.line == 9
    assert [(o.value, o.file, o.line) for o in v.overridden] == [("root:root", "/etc/openvswitch/default.conf", 1)]
    assert [(p, miss) for _, p, miss in files] == [("/etc/openvswitch/default.conf", False),
                                                    ("/etc/sysconfig/openvswitch", False),
                                                    ("/run/openvswitch/useropts", True)]
    assert env["XDG_RUNTIME_DIR"].file == "/u" and env["XDG_RUNTIME_DIR"].via is None


def test_exec_words_expansion_prefixes_specifiers():
    env = {"V": "one two", "U": "a:b"}
    pre, w = U.exec_words("-@/bin/x --u=${U} $V %n %i ${NOPE}x", env, "t@inst.service")
    assert pre == "-@"
    assert [x.word for x in w] == ["/bin/x", "--u=a:b", "one", "two", "t@inst.service", "inst", "x"]
    assert w[1].names == ("U",) and w[2].names == ("V",)
    _, w = U.exec_words(":/bin/x ${U}", env, "t.service")
    assert [x.word for x in w] == ["/bin/x", "${U}"]


def test_limit_values_and_limits_conf_precedence():
    assert U.limit_value("0") == (0, 0) and U.limit_value("infinity") == (None, None)
    assert U.limit_value("1K:infinity") == (1024, None) and U.limit_value("x") is None
    files = [("/etc/security/limits.conf", "* soft core 0\n@adm soft core 5\n"),
             ("/etc/security/limits.d/a.conf", "* soft core 7\nbob - core 2 # bob\n* soft core 9\n")]
    got = U.limits(files, "bob", ["adm"], "core")
    assert (got["soft"].value, got["soft"].line, got["hard"].value) == (2048, 2, 2048)
    got = U.limits(files, "eve", ["adm"], "core")
    assert (got["soft"].value, got["soft"].file) == (5 * 1024, "/etc/security/limits.conf")
    got = U.limits(files, "eve", [], "core")
    assert (got["soft"].value, got["soft"].line) == (9 * 1024, 3)


def test_manager_of_names_the_machines_init():
    init = {"pid": 100, "ppid": 1, "nspid": [100, 1]}
    mid = {"pid": 150, "ppid": 100, "nspid": [150, 20]}
    p = {"pid": 200, "ppid": 150, "nspid": [200, 33], "unit": "a.service"}
    by = {x["pid"]: x for x in (init, mid, p)}
    assert U.manager_of(by, p) is init and U.unit_key(by, p) == "100:a.service"
    assert U.unit_key(by, {"pid": 5, "nspid": [5], "unit": "b.service"}) == "0:b.service"


# --------------------------------------------------------------------------- the finder


def test_ovs_layout_names_execstart_and_the_winning_environment_file_line():
    snap = _snap(OVS_FILES, OVS_ENV)
    found = UN.find(snap, snap["processes"][0], _target("dumpable"))
    o = found.origins["dumpable"]
    assert (o["kind"], o["file"], o["line"]) == ("unit", f"/usr/lib/systemd/system/{UNIT}", 11)
    assert o["argv"] == ["--ovs-user=openvswitch:hugetlbfs"]
    env = o["via"][0]
    assert (env["kind"], env["file"], env["line"]) == ("environment", "/etc/sysconfig/openvswitch", 3)
    assert "overriding 'root:root' from /etc/openvswitch/default.conf:1" in env["summary"]
    assert env["via"] == []  # one flat chain: what fed the variable's line follows it
    chain = [(x["file"], x["line"], x["summary"]) for x in o["via"][1:]]
    assert chain[0][:2] == (f"/usr/lib/systemd/system/{UNIT}", 9)  # EnvironmentFile=-/etc/sysconfig/openvswitch
    assert chain[1][:2] == ("/etc/openvswitch/default.conf", 1)     # the value it overrides
    assert "/run/openvswitch/useropts is missing (allowed by '-')" in chain[2][2]
    # the variable alone, for other finders
    v = UN.variable(snap, snap["processes"][0], "OVS_USER_ID")
    assert dict(v, via=[]) == env and v["via"] == o["via"][1:]
    assert UN.variable(snap, snap["processes"][0], "NOPE") is None


def test_without_sysconfig_the_default_conf_line_decides():
    env = dict(OVS_ENV, **{"/etc/sysconfig/openvswitch": None})
    snap = _snap(OVS_FILES, env, procs=[_proc(user="root", group="root", uid=0, gid=0)])
    v = UN.variable(snap, snap["processes"][0], "OVS_USER_ID")
    assert (v["file"], v["line"], v["text"]) == ("/etc/openvswitch/default.conf", 1, 'OVS_USER_ID="root:root"')
    assert any("/etc/sysconfig/openvswitch is missing" in x["summary"] for x in v["via"])


def test_user_dropin_limitcore_workingdirectory():
    files = [_f("/etc/systemd/system/t.service", "[Service]\nUser=nobody\nLimitCORE=infinity\nExecStart=/bin/t\n"),
             _f("/etc/systemd/system/t.service.d/50-x.conf", "[Service]\nLimitCORE=0\nWorkingDirectory=/srv\n",
                "dropin")]
    snap = _snap(files, procs=[_proc(unit="t.service", user="nobody")], key="0:t.service")
    found = UN.find(snap, snap["processes"][0], _target("dumpable", "rlimit-core", "core-dir"))
    o = found.origins
    assert (o["dumpable"]["file"], o["dumpable"]["line"], o["dumpable"]["text"]) == \
        ("/etc/systemd/system/t.service", 2, "User=nobody")
    assert (o["rlimit-core"]["file"], o["rlimit-core"]["line"]) == ("/etc/systemd/system/t.service.d/50-x.conf", 2)
    assert (o["core-dir"]["file"], o["core-dir"]["text"]) == \
        ("/etc/systemd/system/t.service.d/50-x.conf", "WorkingDirectory=/srv")
    [fx] = found.fixes
    assert fx["actions"][0]["kind"] == "manual" and fx["needs_restart"]
    assert any("90-coredoctor-cwd.conf" in c for c in fx["commands"])
    assert "systemctl restart t.service" in fx["commands"]


def test_defaults_system_conf_and_working_directory():
    files = [_f("/lib/systemd/system/t.service", "[Service]\nExecStart=/bin/t\n")]
    system = [{"path": "/etc/systemd/system.conf", "text": "[Manager]\n#DefaultLimitCORE=\n", "links": [],
               "error": None},
              {"path": "/etc/systemd/system.conf.d/c.conf", "text": "[Manager]\nDefaultLimitCORE=0:infinity\n",
               "links": [], "error": None}]
    snap = _snap(files, procs=[_proc(unit="t.service", user="root", uid=0, gid=0)], system=system,
                 key="0:t.service")
    o = UN.find(snap, snap["processes"][0], _target("rlimit-core", "core-dir", cause=None)).origins
    assert "dumpable" not in o
    assert (o["rlimit-core"]["file"], o["rlimit-core"]["line"]) == ("/etc/systemd/system.conf.d/c.conf", 2)
    assert o["core-dir"]["line"] is None and "starts system services in /" in o["core-dir"]["summary"]
    snap["sysctl"]["kernel.core_pattern"] = "/var/crash/core"
    assert "core-dir" not in UN.find(snap, snap["processes"][0], _target("core-dir", cause=None)).origins


def test_a_machine_unit_says_where_and_proposes_no_host_dropin():
    files = [_f("/etc/systemd/system/m.service", "[Service]\nWorkingDirectory=/w\nExecStart=/bin/m\n")]
    init = dict(_proc(pid=300, unit="init.scope", nspid=[300, 1]), comm="systemd")
    p = _proc(pid=310, unit="m.service", ppid=300, nspid=[310, 25])
    snap = _snap(files, procs=[init, p], key="300:m.service")
    snap["units"]["300:m.service"].update(manager_pid=300, manager_comm="systemd", root="/proc/300/root")
    found = UN.find(snap, p, _target("core-dir", cause=None))
    assert "files in the root of pid 300, systemd" in found.origins["core-dir"]["summary"]
    # the drop-in goes inside the machine, written from its own mount namespace
    [fx] = found.fixes
    assert fx["actions"][0]["kind"] == "manual" and fx["needs_restart"]
    assert all(c.startswith("nsenter -t 300 -m -p -- ") for c in fx["commands"])
    assert "/proc/300/root" not in " ".join(fx["commands"]) and "WorkingDirectory=/var/crash" in fx["commands"][0]
    assert fx["commands"][-1] == "nsenter -t 300 -m -p -- systemctl restart m.service"
    # the host's unit of the same name is another record
    assert UN.unit_of(snap, dict(p, nspid=[310])) is None


def test_inherited_limit_walks_to_the_session_and_its_limits_d_line():
    limits = [{"path": "/etc/security/limits.conf", "text": "# none\n", "links": [], "error": None},
              {"path": "/etc/security/limits.d/x.conf", "text": "cduser soft core 1\n", "links": [],
               "error": None}]
    root_sh = _proc(pid=10, unit=None, user="root", group="root", uid=0, gid=0, core=(0, None))
    runuser = _proc(pid=11, unit=None, ppid=10, user="root", group="root", uid=0, gid=0, core=(1024, None))
    shell = _proc(pid=12, unit=None, ppid=11, user="cduser", group="cduser", uid=1500, gid=1500, core=(1024, None))
    victim = _proc(pid=13, unit=None, ppid=12, user="cduser", group="cduser", uid=1500, gid=1500, core=(1024, None))
    for x in (root_sh, runuser, shell, victim):
        x["comm"] = {10: "bash", 11: "runuser", 12: "sh", 13: "victim"}[x["pid"]]
    snap = _snap([], procs=[root_sh, runuser, shell, victim], limits=limits)
    o = UN.find(snap, victim, _target("rlimit-core", cause=None)).origins["rlimit-core"]
    assert o["kind"] == "inherited" and o["program"] == "runuser" and "pid 11" in o["summary"]
    [ln] = o["via"]
    assert (ln["kind"], ln["file"], ln["line"]) == ("limits", "/etc/security/limits.d/x.conf", 1)
    # a limits line that does not give the value the process has is not named
    limits[1]["text"] = "cduser soft core 2\n"
    o = UN.find(snap, victim, _target("rlimit-core", cause=None)).origins["rlimit-core"]
    assert o["via"] == []


def test_attach_puts_the_unit_after_a_daemon_origin(monkeypatch):
    daemon = O.origin("argv", "its --user option", "ovs-vswitchd(8)", argv=["--user", "openvswitch:hugetlbfs"])
    monkeypatch.setattr(O, "FINDERS", [lambda s, p, t: O.Found({"dumpable": daemon}, []), UN.find])
    snap = _snap(OVS_FILES, OVS_ENV)
    t = _target("dumpable")
    O.attach(snap, snap["processes"][0], t)
    o = t["dumpable"]["origin"]
    assert o["kind"] == "argv"
    assert [(x["kind"], x["line"]) for x in o["via"][:2]] == [("unit", 11), ("environment", 3)]


def test_finders_table_holds_the_units_finder():
    assert UN.find in O.FINDERS


@pytest.mark.parametrize("bad", [{"units": {"0:ovs-vswitchd.service": {"unit": 5}}},
                                 {"units": {"0:ovs-vswitchd.service": {"unit": UNIT, "files": [{"text": 3}]}}},
                                 {"limits_conf": [{"path": "/x", "text": None}]}])
def test_malformed_records_do_not_crash_attach(bad):
    snap = dict(_snap(OVS_FILES, OVS_ENV), **bad)
    t = _target("dumpable", "rlimit-core")
    O.attach(snap, snap["processes"][0], t)  # a broken record: no origin, no traceback
    assert "origin" not in t["dumpable"] or t["dumpable"]["origin"]["kind"] in ("unit", "inherited", "limits")


def test_a_machine_process_is_matched_by_the_machines_own_user_names():
    # uid 999 is openvswitch in the machine, another user on the host: the machine's names decide
    init = dict(_proc(pid=300, unit="init.scope", nspid=[300, 1], user="root", group="root", uid=0, gid=0),
                comm="systemd")
    p = _proc(pid=310, ppid=300, nspid=[310, 25], user="systemd-timesync", group="systemd-timesync",
              uid=999, gid=998)
    snap = _snap(OVS_FILES, OVS_ENV, procs=[init, p], key=f"300:{UNIT}")
    snap["units"][f"300:{UNIT}"].update(manager_pid=300, manager_comm="systemd",
                                         users={"999": "openvswitch"}, groups={"998": "hugetlbfs"})
    o = UN.find(snap, p, _target("dumpable")).origins["dumpable"]
    assert (o["line"], o["argv"]) == (11, ["--ovs-user=openvswitch:hugetlbfs"])
    assert o["summary"].endswith("(files in the root of pid 300, systemd)")
    del snap["units"][f"300:{UNIT}"]["users"], snap["units"][f"300:{UNIT}"]["groups"]
    assert "dumpable" not in UN.find(snap, p, _target("dumpable")).origins
