"""Property-based fuzzing of the daemons' config parsers and finder (origin/daemons.py): any text,
in every syntax, gives statements whose line numbers are in the text and whose first word is
non-empty, includes are absolute paths, and the finder on any config text and argv returns origins
of the documented shape (never an exception)."""
from hypothesis import HealthCheck, given, settings, strategies as st

from coredoctor import origin as O
from coredoctor.origin import daemons as D

CHARS = st.characters(blacklist_categories=("Cs",))
TEXT = st.one_of(st.text(CHARS, max_size=400),
                 st.lists(st.sampled_from(["user nobody;", "user=nobody", "\tuser haproxy", "global", "{", "}",
                                           "include /x/*.conf;", "conf-dir=/d,*.conf", "'", '"', "\\", "#", ";",
                                           "worker_rlimit_core 0;", "working_directory /w;", "set-dumpable",
                                           "coredump_dir none", "cache_effective_user proxy", "\n", " "]),
                          max_size=40).map("".join))
ARGV = st.lists(st.one_of(st.sampled_from(["-u", "--user", "--user=x", "-c", "-f", "--", "--monitor",
                                           "--detach", "--no-chdir", "nobody", "-unobody"]), st.text(CHARS, max_size=20)),
                max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(syntax=st.sampled_from(["nginx", "words", "keyvalue"]), text=TEXT)
def test_statements_of_any_text(syntax, text):
    n = len(text.splitlines()) or 1
    for s in D.statements(syntax, text):
        assert 1 <= s.line <= n + text.count("\r") + 1
        assert s.words and isinstance(s.words[0], str)
    for d in D.DAEMONS:
        if d.syntax == syntax:
            for line, kind, spec in D.includes(d, D.statements(syntax, text), "/etc/x/x.conf"):
                assert kind in ("glob", "dir") and spec.startswith("/")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prog=st.sampled_from([d.program for d in D.DAEMONS]), text=TEXT, argv=ARGV,
       user=st.sampled_from(["nobody", "x", "root", "haproxy", "proxy"]), cause=st.sampled_from([None, "privilege-change"]))
def test_finder_on_any_config(prog, text, argv, user, cause):
    snap = {"daemons": {"procs": {"5": {"program": prog, "argv": [prog] + argv, "files": [{"path": "/c", "key": "/c"}]}},
                        "files": {"/c": {"text": text, "error": None, "truncated": False}}, "wrappers": {}}}
    proc = {"pid": 5, "ppid": 1, "comm": prog, "cwd": "/", "creds": {"user": user, "uid": [7, 7, 7, 7]}}
    found = D.find(snap, proc, {"dumpable": {"cause": cause}, "gates": []})
    for key, o in found.origins.items():
        assert key in ("dumpable", "rlimit-core", "core-dir", "core-file")
        assert o["kind"] in O.KINDS and o["summary"] and o["source"]
        assert o["line"] is None or 1 <= o["line"]
    for f in found.fixes:
        assert f["summary"] and isinstance(f["commands"], list)
