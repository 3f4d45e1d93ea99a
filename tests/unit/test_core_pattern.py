from coredoctor.kernel import core_pattern as cp

CTX = {"pid": 4242, "pid_ns": 7, "tid": 4242, "tid_ns": 7, "uid": 1000, "gid": 100, "dumpable": 1,
       "signo": 11, "hostname": "web/1", "comm": "a/b", "exe": "/usr/sbin/ovs-vswitchd", "rlimit_core": 0}


def test_parse_kinds():
    assert cp.parse("core")["kind"] == "file"
    assert cp.parse("/var/crash/core")["absolute"] is True
    assert cp.parse("|/bin/false")["helper"] == "/bin/false"
    assert cp.parse("|   /x  %p")["tokens"] == ["/x", "%p"]
    assert cp.parse("|")["valid"] is False
    # '@' is a socket only where the kernel lists it in core_modes (6.16+)
    assert cp.parse("@/run/x.sock", socket_supported=False)["kind"] == "file"
    s = cp.parse("@@/run/systemd/coredump-kernel", socket_supported=True)
    assert (s["kind"], s["path"], s["protocol"]) == ("socket", "/run/systemd/coredump-kernel", "request")
    assert cp.parse("@relative", socket_supported=True)["valid"] is False


def test_expand_specifiers():
    e = cp.expand(cp.parse("/c/%p.%P.%i.%I.%u.%g.%d.%s.%h.%e.%E.%f.%c.%%.%z"), CTX)
    assert cp.render(e["parts"]) == "/c/7.4242.7.4242.1000.100.1.11.web!1.a!b.!usr!sbin!ovs-vswitchd.ovs-vswitchd.0.%."


def test_unknown_values_and_trailing_percent():
    e = cp.expand(cp.parse("/c/core.%t.%C%"), CTX)
    assert e["parts"] == ["/c/core.", None, ".", None]
    assert cp.render(e["parts"]) == "/c/core.*.*"


def test_core_uses_pid_only_without_p():
    assert cp.render(cp.expand(cp.parse("core"), CTX, core_uses_pid=1)["parts"]) == "core.7"
    assert cp.render(cp.expand(cp.parse("core.%p"), CTX, core_uses_pid=1)["parts"]) == "core.7"
    assert cp.render(cp.expand(cp.parse("core.%%p"), CTX, core_uses_pid=1)["parts"]) == "core.%p.7"


def test_pipe_tokens_expand_separately():
    e = cp.expand(cp.parse("|/lib/systemd/systemd-coredump %P %u %g %s %t 9223372036854775808 %h"), CTX)
    assert [cp.render(a) for a in e["argv"]] == ["/lib/systemd/systemd-coredump", "4242", "1000", "100", "11", "*",
                                               "9223372036854775808", "web!1"]


def test_split_dir():
    assert cp.split_dir(["/var/crash/core.", None]) == ("/var/crash", ["core.", None])
    assert cp.split_dir(["core.", None]) == (".", ["core.", None])
    assert cp.split_dir(["cores/sub/core"]) == ("cores/sub", ["core"])
    assert cp.split_dir(["/", None, "/core"])[0] is None
    assert cp.split_dir(["/core"]) == ("/", ["core"])


def test_unit_from_cgroup():
    from coredoctor.snapshot.proc import _unit_from_cgroup
    v1 = "9:name=systemd:/system.slice/openvswitch-switch.service\n4:memory:/x\n0::/\n"
    assert _unit_from_cgroup(v1)[0] == "openvswitch-switch.service"
    v2 = "0::/system.slice/nginx.service\n"
    assert _unit_from_cgroup(v2) == ("nginx.service", "/system.slice/nginx.service")
    hybrid = "9:name=systemd:/\n0::/user.slice/user-0.slice/session-3.scope\n"
    assert _unit_from_cgroup(hybrid)[0] == "session-3.scope"
    assert _unit_from_cgroup("0::/\n") == (None, "/")
