"""coredoctor.origin.attach: origins land on failing/warned gates and the dumpability cause only,
the first finder to name a key wins, a finder broken by a malformed entry is skipped, and the
text report shows the origin with its chain."""
import pytest

from coredoctor import origin as O
from coredoctor.render import text


def _target():
    return {"verdict": "no core", "exe": "/x", "unit": None, "fixes": [],
            "dumpable": {"value": 0, "source": "pidfd", "cause": "privilege-change", "candidates": [0]},
            "core_destination": {"kind": "file", "path": "/core", "handler": None},
            "gates": [{"id": "signal", "status": "pass", "evidence": "e"},
                      {"id": "dumpable", "status": "fail", "evidence": "dumpable 0"},
                      {"id": "rlimit-core", "status": "warn", "evidence": "soft 0"}]}


@pytest.fixture
def finders(monkeypatch):
    lst = []
    monkeypatch.setattr(O, "FINDERS", lst)
    return lst


def test_attach_puts_origins_where_the_model_failed(finders):
    opt = O.origin("argv", "its own --user option", "ovs-vswitchd(8)", program="ovs-vswitchd",
                   argv=["--user", "openvswitch:hugetlbfs"],
                   via=[O.origin("environment", "OVS_USER_ID", "ovs-ctl(8)", file="/etc/sysconfig/openvswitch",
                                 line=3, text='OVS_USER_ID="openvswitch:hugetlbfs"')])
    fix = {"summary": "a drop-in", "commands": [], "needs_restart": True, "actions": []}
    finders.append(lambda s, p, t: O.Found({"dumpable": opt, "signal": opt, "rlimit-core": opt}, [fix]))
    finders.append(lambda s, p, t: O.Found({"dumpable": O.origin("unit", "User=", "systemd.exec(5)"),
                                            "rlimit-core": opt["via"][0]}, [fix]))
    t = _target()
    O.attach({}, {"pid": 5}, t)
    assert t["dumpable"]["origin"]["argv"] == ["--user", "openvswitch:hugetlbfs"]
    # the later finder's origin is appended to the chain, after the first one's own via
    assert [(x["kind"], x["summary"]) for x in t["dumpable"]["origin"]["via"]] == \
        [("environment", "OVS_USER_ID"), ("unit", "User=")]
    assert "origin" not in t["gates"][0]            # a passing gate gets none
    assert t["gates"][2]["origin"]["summary"] == "its own --user option"
    assert t["gates"][2]["origin"]["via"][0]["summary"] == "OVS_USER_ID"
    assert t["gates"][1]["origin"] == t["dumpable"]["origin"]   # the dumpable gate and the cause: one origin
    assert t["fixes"] == [fix]                      # once, though two finders gave it
    out = text.target_report(t)
    assert "from: its own --user option: --user openvswitch:hugetlbfs" in out
    assert "via: OVS_USER_ID [/etc/sysconfig/openvswitch:3]" in out


def test_a_broken_finder_is_skipped(finders):
    def broken(s, p, t):
        return s["units"]["x"]
    finders.append(broken)
    finders.append(lambda s, p, t: O.Found({"rlimit-core": O.origin("limits", "LimitCORE=0", "systemd.exec(5)")}, []))
    t = _target()
    O.attach({}, {"pid": 5}, t)
    assert t["gates"][2]["origin"]["summary"] == "LimitCORE=0"


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        O.origin("guess", "x", "y")
