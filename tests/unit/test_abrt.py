"""ABRT (RHEL 7/8's |/usr/libexec/abrt-hook-ccpp): the snapshot reader on config trees written
here (ABRT is not packaged in Debian) and the policy rules of coredoctor.kernel.abrt, through
check's handler-policy gate."""
import os

import pytest

from coredoctor.kernel import abrt as A, core_pattern, handlers, predicates
from coredoctor.snapshot import abrt as S, handlers as SH

RHEL8 = "|/usr/libexec/abrt-hook-ccpp %s %c %p %u %g %t %P %I %h"


def tree(tmp_path, files, pidfile=None):
    for rel, text in files.items():
        p = tmp_path / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if pidfile is not None:
        p = tmp_path / "var/run/abrt/abrtd.pid"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"{pidfile}\n")
    (tmp_path / "var/spool/abrt").mkdir(parents=True, exist_ok=True)
    return str(tmp_path)


def test_parse_conf():
    got = S.parse_conf('# c\nMakeCompatCore = yes\n  SaveFullCore=no  \nDumpLocation = "/var/x"\nnoequals\n= v\n')
    assert got == {"MakeCompatCore": "yes", "SaveFullCore": "no", "DumpLocation": "/var/x"}
    many = "".join(f"K{i} = {i}\n" for i in range(1000))
    assert len(S.parse_conf(many)) == 256
    assert len(S.parse_conf("K = " + "x" * 10000)["K"]) == 4096


def test_read_abrt_merges_defaults_and_etc(tmp_path):
    root = tree(tmp_path, {
        "/usr/share/abrt/conf.d/plugins/CCpp.conf": "MakeCompatCore = yes\nSaveFullCore = yes\n",
        "/etc/abrt/plugins/CCpp.conf": "SaveFullCore = no\n",
        "/etc/abrt/abrt.conf": "MaxCrashReportsSize = 1000\n",
        "/var/run/abrt/saved_core_pattern": "core.%p\n",
    }, pidfile=os.getpid())
    rec = S.read_abrt(root)
    assert rec["ccpp"] == {"MakeCompatCore": "yes", "SaveFullCore": "no"}
    assert rec["abrt"] == {"MaxCrashReportsSize": "1000"}
    assert rec["files"] == ["/etc/abrt/abrt.conf", "/usr/share/abrt/conf.d/plugins/CCpp.conf",
                            "/etc/abrt/plugins/CCpp.conf"]
    assert rec["daemon"] == {"pidfile": "/var/run/abrt/abrtd.pid", "pid": os.getpid(), "running": True}
    assert rec["saved_core_pattern"] == "core.%p" and rec["free_bytes"] > 0


def test_read_abrt_does_not_follow_a_symlinked_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("DumpLocation = /leak\n")
    root = tree(tmp_path, {})
    (tmp_path / "etc/abrt").mkdir(parents=True)
    os.symlink(secret, tmp_path / "etc/abrt/abrt.conf")
    assert S.read_abrt(root)["abrt"] == {}


def test_read_handler_reads_abrt_for_the_hook(tmp_path):
    root = tree(tmp_path, {"/etc/abrt/abrt.conf": "DumpLocation = /var/spool/abrt\n"})
    facts = SH.read_handler(core_pattern.parse(RHEL8), abrt_root=root)
    assert facts["abrt"]["abrt"] == {"DumpLocation": "/var/spool/abrt"}
    assert handlers.identify("/usr/libexec/abrt-hook-ccpp") == "abrt"


def _rec(ccpp=None, pkg=None, conf=None, running=True, free=1 << 40, saved=None):
    return {"abrt": conf or {}, "ccpp": ccpp or {}, "pkgdata": pkg or {}, "files": [],
            "daemon": {"pidfile": "/var/run/abrt/abrtd.pid", "pid": 5, "running": running},
            "saved_core_pattern": saved, "free_bytes": free}


@pytest.mark.parametrize("rec,exe,sig,soft,status,words", [
    (_rec(), "/usr/bin/app", "SIGSEGV", None, "pass", "ccpp-<date>-<pid>/coredump"),
    (_rec(running=False, ccpp={"MakeCompatCore": "no"}), "/usr/bin/app", "SIGSEGV", None, "fail",
     "abrtd is not running"),
    (_rec(running=False), "/usr/bin/app", "SIGSEGV", None, "warn", "compat core into the process's cwd as 'core'"),
    (_rec(running=False, saved="core.%p"), "/usr/bin/app", "SIGSEGV", 0, "fail", "the core is dropped"),
    (_rec(ccpp={"MakeCompatCore": "no"}), "/usr/bin/app", "SIGQUIT", None, "fail", "no problem directory for SIGQUIT"),
    (_rec(free=100 << 20), "/usr/bin/app", "SIGSEGV", None, "fail", "MaxCrashReportsSize = 5000 (6271 MiB)"),
    (_rec(conf={"MaxCrashReportsSize": "0"}, free=0), "/usr/bin/app", "SIGSEGV", None, "pass", "coredump"),
    (_rec(), "/usr/share/doc/x/demo", "SIGSEGV", None, "fail", "BlackListedPaths entry '/usr/share/doc/*'"),
    (_rec(), "/usr/bin/example-server", "SIGSEGV", None, "fail", "'*/example*'"),
    (_rec(), "/usr/local/bin/app", "SIGSEGV", None, "fail", "ProcessUnpackaged = no"),
    (_rec(pkg={"ProcessUnpackaged": "yes"}), "/usr/local/bin/app", "SIGSEGV", None, "pass", "coredump"),
    (_rec(ccpp={"SaveFullCore": "no"}), "/usr/bin/app", "SIGSEGV", None, "fail", "only a core_backtrace"),
    (_rec(), "/usr/sbin/abrtd", "SIGSEGV", None, "pass", "/var/spool/abrt/abrtd-coredump"),
])
def test_policy_rules(rec, exe, sig, soft, status, words):
    st, ev, fix = handlers.policy("abrt", {"abrt": rec}, [], soft, 4096, None, exe=exe, signal=sig)
    assert st == status and words in ev, ev
    assert "abrt" in ev and "[" in ev     # each answer cites ABRT's source
    if st == "fail" and "SIGQUIT" not in ev and "dropped" not in ev:
        assert fix and fix["commands"], (st, ev)


def test_every_rule_cites_abrt():
    assert {r["id"] for r in A.RULES} == A.RULE_IDS
    assert all(r["source"].startswith("abrt ") for r in A.RULES)


def test_the_handler_policy_gate_names_abrt_s_rule():
    w = {"parsed": core_pattern.parse(RHEL8), "kind": "pipe", "signal": "SIGSEGV",
         "snap": {"handler": {"abrt": _rec(running=False, ccpp={"MakeCompatCore": "no"})}},
         "proc": {"pid": 7, "exe": "/usr/bin/app", "limits": {"core": [None, None]}, "mem": {}},
         "kernel": {"page_size": 4096}}
    r = predicates.handler_policy(w)
    assert r["status"] == "fail" and "abrtd is not running" in r["evidence"]
    assert any("systemctl enable --now abrtd.service" in c for f in r["fixes"] for a in f["actions"]
               for c in a.get("commands", []))


def test_check_from_a_snapshot_of_a_rhel8_host_names_abrt_s_rule(tmp_path):
    """A snapshot of a live process, moved to a RHEL 8 host whose ABRT tree the test wrote
    (abrtd down, MakeCompatCore = no): check --from says no core and why, in ABRT's words."""
    import json
    import subprocess
    import sys
    from coredoctor import snapshot
    root = tree(tmp_path, {"/etc/abrt/plugins/CCpp.conf": "MakeCompatCore = no\n"})
    snap = snapshot.take([os.getpid()], with_parents=False)
    snap["sysctl"]["kernel.core_pattern"] = RHEL8
    snap["handler"] = {"helper": {"path": "/usr/libexec/abrt-hook-ccpp", "exists": True, "regular": True,
                                  "mode": 0o100755, "executable": True},
                       "abrt": S.read_abrt(root)}
    for p in snap["processes"]:
        p["limits"]["core"] = [None, None]
        p["dumpable"].update(value=1, candidates=[1])
        p.pop("runtime", None)
        p["sig"]["caught"] = "0" * 16
    f = tmp_path / "snap.json"
    f.write_text(json.dumps(snap))
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")
    r = subprocess.run([sys.executable, "-m", "coredoctor", "check", "--from", str(f), "--json"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=src), timeout=60)
    t = json.loads(r.stdout)["targets"][0]
    g = next(g for g in t["gates"] if g["id"] == "handler-policy")
    assert t["dumps"] is False and t["blocking_gate"] == "handler-policy", (t["verdict"], r.stderr)
    assert "abrtd is not running (no pid file)" in g["evidence"]
    assert any("systemctl enable --now abrtd.service" in c for fx in t["fixes"] for c in fx["commands"])
