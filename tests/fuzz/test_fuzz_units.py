"""Property-based fuzzing of the unit-file, environment-file and limits.conf parsers and the
units finder (hypothesis; pure, bounded): any text gives settings whose file:line point at a
real line of that text, or nothing -- never an exception."""
from hypothesis import HealthCheck, given, settings, strategies as st

from coredoctor import origin as O
from coredoctor.origin import unitfile as U, units as UN

PIECES = ["[Service]", "[Unit]", "[Manager]", "User=", "ExecStart=", "Environment=", "EnvironmentFile=",
          "LimitCORE=", "WorkingDirectory=", "DefaultLimitCORE=", "\\", "\n", " ", "#", ";", "\"", "'", "=",
          "$", "${", "}", "%", "%i", "%n", "-", "@", ":", "+", "!", "A", "0", "infinity", "* soft core 0",
          "\t", "\x00", "é", "\r"]
texts = st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=60).map("".join)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(texts)
def test_unit_file_settings_point_at_their_lines(text):
    lines = text.split("\n")
    for s in U.parse(text, "/u"):
        assert 1 <= s.line <= len(lines)
        assert s.text.split("\n")[0] == lines[s.line - 1]
        assert s.key and "=" not in s.key
    U.merge([("/u", text), ("/d", text)])


@FAST
@given(texts, st.text(max_size=30))
def test_env_words_limits_never_raise(text, unit):
    for e in U.env_file(text, "/e"):
        assert U.norm("/e") == e.file and e.line >= 1 and e.name
    U.split_words(text)
    U.exec_words(text, {"A": text[:10]}, unit or "x.service")
    U.specifiers(text, unit or "x.service")
    U.limit_value(text)
    U.limits([("/l", text)], "root", ["root"], "core")


@FAST
@given(texts, texts, texts)
def test_finder_on_any_unit_text(unit_text, dropin, env_text):
    proc = {"pid": 7, "ppid": 1, "nspid": [7], "unit": "t.service", "comm": "t",
            "creds": {"uid": [5] * 4, "gid": [5] * 4, "user": "u", "group": "g"},
            "limits": {"core": [0, None], "fsize": [None, None]}}
    rec = {"unit": "t.service", "root": "/", "files": [
        {"path": "/etc/systemd/system/t.service", "text": unit_text, "kind": "unit"},
        {"path": "/etc/systemd/system/t.service.d/a.conf", "text": dropin, "kind": "dropin"}],
        "env": {"/e": env_text}, "system": [{"path": "/etc/systemd/system.conf", "text": dropin}]}
    snap = {"processes": [proc], "units": {"0:t.service": rec}, "sysctl": {"kernel.core_pattern": "core"},
            "limits_conf": [{"path": "/etc/security/limits.conf", "text": env_text}]}
    t = {"dumpable": {"cause": "privilege-change"}, "fixes": [],
         "gates": [{"id": g, "status": "fail"} for g in ("dumpable", "rlimit-core", "rlimit-fsize", "core-dir")]}
    found = UN.find(snap, proc, t)
    for o in found.origins.values():
        assert o["kind"] in O.KINDS and o["summary"]
