"""The socket-handler gate (kernel.predicates.socket_handler) rule by rule, on recorded facts,
and the snapshot's walk of the socket path (snapshot.handlers.walk_from_root) on a real tree.
The real kernel's outcome for each rule: tests/crashlab/test_socket_real.py."""
import os
import socket

import pytest

from coredoctor.kernel import core_pattern, handlers, predicates
from coredoctor.snapshot import handlers as sh


def world(pattern, handler):
    return {"parsed": core_pattern.parse(pattern, socket_supported=True), "snap": {"handler": handler},
            "sysctl": {"kernel.core_pattern": pattern}, "facts": {"persisted": {}, "files": {}}}


def lookup(**kw):
    d = {"reached": True, "error": None, "at": "/run/c.sock", "symlink": None, "final": "socket", "root": "/proc/1/root",
         "same_mntns": True}
    d.update(kw)
    return d


STREAM = [{"type": "stream", "netns": 1, "via_pid": 1, "init_net": True}]

CASES = [
    ("listening", "@/run/c.sock", {"lookup": lookup(), "listeners": STREAM}, "pass", "init_net"),
    ("other-netns", "@/run/c.sock", {"lookup": lookup(), "listeners": [dict(STREAM[0], init_net=False)]},
     "pass", "another network namespace"),
    ("request", "@@/run/c.sock", {"lookup": lookup(), "listeners": STREAM}, "pass", "coredump_ack"),
    ("missing", "@/run/c.sock", {"lookup": lookup(reached=False, error="ENOENT", final=None), "listeners": []},
     "fail", "failed -2"),
    ("mntns", "@/run/c.sock", {"lookup": lookup(reached=False, error="ENOENT", final=None), "listeners": STREAM},
     "fail", "another mount namespace"),
    ("dir-symlink", "@/run/l/c.sock", {"lookup": lookup(reached=False, error="ELOOP", symlink="/run/l",
                                                        final=None), "listeners": STREAM}, "fail", "-40"),
    ("last-symlink", "@/run/c.sock", {"lookup": lookup(final="symlink"), "listeners": STREAM}, "fail", "-111"),
    ("regular-file", "@/run/c.sock", {"lookup": lookup(final="file"), "listeners": []}, "fail", "regular file"),
    ("not-listening", "@/run/c.sock", {"lookup": lookup(), "listeners": [], "listening_known": True},
     "fail", "no server listens"),
    ("seqpacket", "@/run/c.sock", {"lookup": lookup(), "listeners": [dict(STREAM[0], type="seqpacket")]},
     "fail", "-91"),
    ("space", "@/run/a b.sock", {"lookup": lookup(), "listeners": STREAM}, "fail", "contain spaces"),
    # a snapshot of an older coredoctor: only its own view of the path
    ("old-missing", "@/run/c.sock", {"exists": False}, "fail", "does not exist"),
    ("old-listening", "@/run/c.sock", {"exists": True, "listening": "stream", "listening_known": True},
     "pass", "init_net"),
    ("old-unknown", "@/run/c.sock", {"exists": True, "listening": None, "listening_known": False},
     "unknown", "could not be read"),
]


@pytest.mark.parametrize("cid,pattern,facts,status,word", CASES, ids=[c[0] for c in CASES])
def test_socket_rules(cid, pattern, facts, status, word):
    r = predicates.socket_handler(world(pattern, facts))
    assert r["status"] == status, r
    assert word in r["evidence"], r["evidence"]
    if status == "fail":
        assert r.get("fixes") and r.get("reason"), r


def test_symlink_fix_sets_the_real_path():
    w = world("@/run/l/c.sock", {"lookup": lookup(reached=False, error="ELOOP", symlink="/run/l", final=None,
                                                  resolved="/srv/real/c.sock"), "listeners": STREAM})
    r = predicates.socket_handler(w)
    acts = [a for a in r["fixes"][0]["actions"] if a["kind"] == "sysctl"]
    assert acts[0]["key"] == "kernel.core_pattern" and acts[0]["value"] == "@/srv/real/c.sock"


@pytest.mark.parametrize("path,rule", [("rel", "path-written"), ("/a/../b", "path-written"),
                                       ("/" + "x" * 107, "path-written"), ("/a b", "path-space"),
                                       ("/" + "x" * 106, None), ("/a/..b", None)])
def test_path_rules(path, rule):
    got = handlers.socket_path_problem(path)
    assert (got[0] if got else None) == rule


def test_every_rule_cites_the_kernel():
    assert len(handlers.SOCKET_RULE_IDS) == len(handlers.SOCKET_RULES)
    for r in handlers.SOCKET_RULES:
        assert r["kernel"] and r["when"] and r["fix"], r
        assert any(fn in r["kernel"] for fn in ("coredump_", "unix_find", "check_coredump_socket",
                                                "kernel_connect", "path sockets", "sock_alloc_file")), r


def test_walk_from_root(tmp_path):
    root = str(tmp_path)
    os.makedirs(root + "/srv/real")
    os.symlink("real", root + "/srv/via")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(root + "/srv/real/c.sock")
        w = sh.walk_from_root("/srv/real/c.sock", root)
        assert (w["reached"], w["final"], w["error"]) == (True, "socket", None)
        w = sh.walk_from_root("/srv/via/c.sock", root)
        assert (w["error"], w["symlink"], w["resolved"]) == ("ELOOP", "/srv/via", "/srv/real/c.sock")
        os.symlink("/srv/real/c.sock", root + "/srv/last")
        assert sh.walk_from_root("/srv/last", root)["final"] == "symlink"
        w = sh.walk_from_root("/srv/nope/c.sock", root)
        assert (w["error"], w["at"]) == ("ENOENT", "/srv/nope")
    finally:
        s.close()
