"""origin/daemons.py: the config parsers (line numbers, sections, includes), argv options, and the
finder on snapshot sections shaped like snapshot/daemonconf.py's (recorded from real daemons)."""
import pytest

from coredoctor import origin as O
from coredoctor.origin import daemons as D
from coredoctor.snapshot import validate

NGINX = """# comment ; {
user  www-data;
worker_processes 1;
events { worker_connections 16; }
http {
  include /etc/nginx/mime.types;
  server { user "not main"; }
}
working_directory /var/crash/ngx;  # trailing
"""


def test_nginx_statements_carry_line_section_and_text():
    st = D.statements("nginx", NGINX)
    by = {(s.words[0], s.section): s for s in st}
    assert by[("user", "")].line == 2 and by[("user", "")].words == ["user", "www-data"]
    assert by[("user", "http/server")].words == ["user", "not main"]
    assert by[("working_directory", "")].line == 9
    assert by[("worker_connections", "events")].line == 4
    nd = D.by_program("nginx")
    assert D.includes(nd, st, "/etc/nginx/nginx.conf") == [(6, "glob", "/etc/nginx/mime.types")]


def test_haproxy_sections_and_dnsmasq_keyvalue():
    st = D.statements("words", "global\n\tuser haproxy\n\tset-dumpable\nlisten x\n\tuser other\n")
    assert [(s.words[0], s.section, s.line) for s in st] == [
        ("global", "global", 1), ("user", "global", 2), ("set-dumpable", "global", 3), ("listen", "listen", 4),
        ("user", "listen", 5)]
    kv = D.statements("keyvalue", "# x\nuser=dnsmasq\nconf-dir=/etc/dnsmasq.d/,*.conf\nbogus-priv\n")
    assert [(s.words, s.line) for s in kv] == [(["user", "dnsmasq"], 2),
                                              (["conf-dir", "/etc/dnsmasq.d/,*.conf"], 3), (["bogus-priv"], 4)]
    dd = D.by_program("dnsmasq")
    assert D.includes(dd, kv, "/etc/dnsmasq.conf") == [(3, "dir", "/etc/dnsmasq.d,*.conf")]
    assert D.dir_entries("/d,*.conf", ["b.conf", "a.conf", ".x.conf", "c.txt"]) == ("/d", ["a.conf", "b.conf"])
    assert D.dir_entries("/d,.dpkg-old", ["a", "a.dpkg-old", "b~"]) == ("/d", ["a"])


def test_argv_options_every_spelling():
    assert D.argv_option(["d", "--user", "a:b"], ["--user"]) == (1, ["--user", "a:b"], "a:b")
    assert D.argv_option(["d", "--user=x"], ["-u", "--user"]) == (1, ["--user=x"], "x")
    assert D.argv_option(["d", "-unobody", "-u", "root"], ["-u"]) == (2, ["-u", "root"], "root")
    assert D.argv_option(["d", "--", "-u", "root"], ["-u"]) is None
    assert D.config_paths(D.by_program("nginx"), ["nginx", "-c", "x.conf"], "/srv") == [("/srv/x.conf", "argv")]
    assert D.config_paths(D.by_program("haproxy"), ["haproxy"], "/") == [("/etc/haproxy/haproxy.cfg", "default")]


def test_match_needs_exe_and_argv():
    assert D.match("/usr/sbin/nginx", "nginx", ["nginx: worker process"]).program == "nginx"
    assert D.match("/usr/sbin/dnsmasq", "dnsmasq", ["/usr/sbin/dnsmasq", "-k"]).program == "dnsmasq"
    assert D.match("/tmp/evil", "nginx", ["bash"]) is None          # a comm alone is no match
    assert D.match("/tmp/evil", "evil", ["nginx"]) is None          # an argv[0] alone is none either


def _snap(pid, program, argv, files, wrappers=None, procs=()):
    return {"sysctl": {"kernel.core_pattern": "core"},
            "daemons": {"procs": {str(pid): {"program": program, "argv": argv, "conf_argv": argv,
                                              "files": [{"path": p, "key": p} for p in files]}},
                        "files": {p: {"text": t, "error": None, "truncated": False} for p, t in files.items()},
                        "wrappers": wrappers or {}, "skipped": 0},
            "processes": list(procs)}


def _proc(pid, user, uid, ppid=1, comm="x"):
    return {"pid": pid, "ppid": ppid, "comm": comm, "cwd": "/", "creds": {"user": user, "uid": [uid] * 4}}


def _tgt(cause="privilege-change"):
    return {"dumpable": {"cause": cause}, "gates": []}


def test_ovs_user_option_via_ovs_ctl():
    argv = ["ovs-vswitchd", "unix:/db.sock", "-vconsole:emer", "--no-chdir", "--log-file=/l", "--pidfile=/p",
            "--detach", "--monitor", "--user", "openvswitch:hugetlbfs"]
    w = {"/usr/share/openvswitch/scripts/ovs-ctl": {"lines": [[156, 'set "$@" --user "$OVS_USER"'],
                                                            [226, 'x --user "$OVS_USER"']]}}
    f = D.find(_snap(7, "ovs-vswitchd", argv, {}, w), _proc(7, "openvswitch", 990), _tgt())
    o = f.origins["dumpable"]
    assert o["kind"] == "argv" and o["argv"] == ["--user", "openvswitch:hugetlbfs"]
    assert o["via"][0]["program"] == "ovs-ctl" and o["via"][0]["line"] == 226
    assert o["via"][0]["argv"] == ["--ovs-user=openvswitch:hugetlbfs"]
    assert any("root" in x["text"] and x["risk"] for fx in f.fixes for x in fx["actions"])
    # the option names another user than the one it runs as: not the origin
    assert "dumpable" not in D.find(_snap(7, "ovs-vswitchd", argv, {}, w), _proc(7, "other", 5), _tgt()).origins
    # no credential change: nothing to explain
    assert "dumpable" not in D.find(_snap(7, "ovs-vswitchd", argv, {}, w), _proc(7, "openvswitch", 990),
                                    _tgt(None)).origins


def test_ovs_monitor_limit_after_first_core():
    argv = ["ovs-vswitchd", "--no-chdir", "--detach", "--monitor"]
    exe = "/usr/sbin/ovs-vswitchd"
    parent = dict(_proc(6, "root", 0, comm="monitor"), limits={"core": [0, 0]}, exe=exe)
    child = dict(_proc(7, "root", 0, ppid=6, comm="ovs-vswitchd"), exe=exe)
    f = D.find(_snap(7, "ovs-vswitchd", argv, {}, procs=[parent]), child, _tgt(None))
    assert f.origins["rlimit-core"]["kind"] == "inherited" and "pid 6" in f.origins["rlimit-core"]["summary"]
    parent["limits"] = {"core": [0, None]}
    assert "rlimit-core" not in D.find(_snap(7, "ovs-vswitchd", argv, {}, procs=[parent]), child, _tgt(None)).origins
    parent.update(limits={"core": [0, 0]}, exe="/usr/bin/other")      # a parent that is another program
    assert "rlimit-core" not in D.find(_snap(7, "ovs-vswitchd", argv, {}, procs=[parent]), child, _tgt(None)).origins


def test_config_lines_name_file_and_line():
    hap = "global\n\tchroot /var/lib/haproxy\n\tuser haproxy\n\tgroup haproxy\n"
    f = D.find(_snap(9, "haproxy", ["haproxy", "-f", "/h.cfg"], {"/h.cfg": hap}), _proc(9, "haproxy", 101), _tgt())
    o = f.origins["dumpable"]
    assert (o["kind"], o["file"], o["line"], o["text"]) == ("config", "/h.cfg", 3, "user haproxy")
    assert f.origins["core-dir"]["line"] == 2
    edit = [a for fx in f.fixes for a in fx["actions"] if a["kind"] == "config-line"]
    assert [(a["path"], a["line"], a["replace"], a["section"]) for a in edit] == [
        ("/h.cfg", "set-dumpable", None, "global")]
    # set-dumpable in place: haproxy makes itself dumpable again, so no drop origin
    f2 = D.find(_snap(9, "haproxy", ["haproxy"], {"/h.cfg": hap + "\tset-dumpable\n"}), _proc(9, "haproxy", 101),
                _tgt())
    assert "dumpable" not in f2.origins
    # dnsmasq: argv first, the config line after it; the compiled-in default when nothing names one
    f3 = D.find(_snap(4, "dnsmasq", ["dnsmasq", "-u", "dnsmasq"], {"/c": "user=dnsmasq\n"}), _proc(4, "dnsmasq", 5),
                _tgt())
    assert f3.origins["dumpable"]["argv"] == ["-u", "dnsmasq"] and f3.origins["dumpable"]["via"][0]["line"] == 1
    f4 = D.find(_snap(4, "dnsmasq", ["dnsmasq"], {"/c": "port=53\n"}), _proc(4, "nobody", 65534), _tgt())
    assert "CHUSER" in f4.origins["dumpable"]["source"]


def test_nginx_worker_limit_and_cwd():
    conf = "user www-data;\nworker_rlimit_core 0;\nevents {}\n"
    f = D.find(_snap(3, "nginx", ["nginx: worker process"], {"/n.conf": conf}), _proc(3, "www-data", 33), _tgt(None))
    assert f.origins["rlimit-core"]["line"] == 2 and f.origins["core-dir"]["kind"] == "config"
    assert "dumpable" not in D.find(_snap(3, "nginx", ["nginx: worker process"], {"/n.conf": conf}),
                                    _proc(3, "www-data", 33), _tgt()).origins   # workers re-enable it
    reps = [(a["path"], a["line"], a["replace"], a["expect"]) for fx in f.fixes for a in fx["actions"]
            if a["kind"] == "config-line"]
    assert ("/n.conf", "worker_rlimit_core 500m;", 2, "worker_rlimit_core 0;") in reps


def test_finder_is_first_and_attach_survives_garbage():
    assert O.FINDERS[0] is D.find
    t = {"dumpable": {"cause": "privilege-change"}, "gates": [{"id": "dumpable", "status": "fail"}], "fixes": []}
    for bad in ({"daemons": {"procs": {"5": {"program": "nginx", "argv": 3}}}},
                {"daemons": {"procs": {"5": {"program": "nope"}}}}, {"daemons": None}, {}):
        O.attach(bad, _proc(5, "x", 1), t)
    assert "origin" not in t["dumpable"]


def test_validate_has_rows_for_the_section():
    for k in ("daemons", "daemons.procs.*.argv[]", "daemons.files.*.text", "daemons.wrappers.*.lines[]"):
        assert k in validate.FIELDS


def test_config_line_edits_exactly_or_refuses():
    from coredoctor.kernel import remedies as R
    hap = "global\n\tuser haproxy\ndefaults\n\tmode tcp\n"
    a = R.config_line("haproxy", "/h", "set-dumpable", "w", section="global")
    assert R.edit_text(hap, a) == "global\n\tset-dumpable\n\tuser haproxy\ndefaults\n\tmode tcp\n"
    b = R.config_line("nginx", "/n", "worker_rlimit_core 500m;", "w", replace=2, expect="worker_rlimit_core 0;")
    assert R.edit_text("user x;\n  worker_rlimit_core 0;\n", b) == "user x;\n  worker_rlimit_core 500m;\n"
    with pytest.raises(ValueError):
        R.edit_text("user x;\nworker_rlimit_core 1;\n", b)      # the file changed since check
    with pytest.raises(ValueError):
        R.edit_text("defaults\n", a)
    c = R.config_line("nginx", "/n", "working_directory /var/crash;", "w")
    assert R.edit_text("user x;", c) == "working_directory /var/crash;\nuser x;"
    assert R.identity(b) == ("config-line", "/n", "worker_rlimit_core 500m;")
    assert R.commands(a) and "fix --apply --daemon" in R.commands(a)[0]


def test_cwd_origin_only_for_a_relative_pattern():
    conf = "user www-data;\nevents {}\n"
    snap = _snap(3, "nginx", ["nginx: worker process"], {"/n.conf": conf})
    assert "core-dir" in D.find(snap, _proc(3, "www-data", 33), _tgt(None)).origins
    snap["sysctl"]["kernel.core_pattern"] = "/var/crash/core.%e"
    assert "core-dir" not in D.find(snap, _proc(3, "www-data", 33), _tgt(None)).origins


def _fixture_with_daemons():
    import json
    import os
    fx = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "dropped-suid0.json")
    snap = json.load(open(fx))
    pid = snap["targets"][0]
    snap["daemons"] = {
        "procs": {str(pid): {"program": "ovs-vswitchd", "conf_argv": ["ovs-vswitchd"],
                             "argv": ["ovs-vswitchd", "--no-chdir", "--detach", "--monitor", "--user", "nobody:nogroup"],
                             "files": [{"path": "/c", "key": "/c", "how": "default", "from": None, "line": None}]}},
        "files": {"/c": {"text": "x", "error": None, "truncated": False}},
        "wrappers": {"/usr/share/openvswitch/scripts/ovs-ctl": {"lines": [[226, 'set "$@" --user "$OVS_USER"']]}},
        "skipped": 0}
    return snap, pid


def test_validate_accepts_the_section_and_names_a_bad_field():
    import copy
    snap, pid = _fixture_with_daemons()
    validate.validate(snap)
    for path, bad in ((("procs", str(pid), "argv"), "nope"), (("files", "/c", "text"), 5),
                      (("wrappers", "/usr/share/openvswitch/scripts/ovs-ctl", "lines"), [[1, 2, 3]]),
                      (("procs", str(pid), "files"), [{"path": "/x"}] * 33)):
        s = copy.deepcopy(snap)
        d = s["daemons"]
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = bad
        with pytest.raises(validate.Bad):
            validate.validate(s)
