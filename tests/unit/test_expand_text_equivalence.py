"""core_pattern._expand_text scans with str.find (and returns at once for text without '%'): it
gives exactly what the character-by-character scan of format_corename() gives, for any text."""
from hypothesis import given, settings, strategies as st

from coredoctor.kernel import core_pattern as cp


def _reference(text, ctx):
    # the scan as it was: one character at a time (fs/coredump.c format_corename's loop)
    parts, i, n, buf = [], 0, len(text), ""
    while i < n:
        ch = text[i]
        if ch != "%":
            buf += ch
            i += 1
            continue
        i += 1
        if i >= n:
            break
        spec = text[i]
        i += 1
        if spec == "%":
            buf += "%"
            continue
        v = cp._value(spec, ctx)
        if v is None:
            if buf:
                parts.append(buf)
                buf = ""
            parts.append(None)
        else:
            buf += v
    if buf:
        parts.append(buf)
    return parts


CTXS = [
    {"pid": 42, "pid_ns": 7, "tid": 42, "tid_ns": 7, "uid": 1000, "gid": 1000, "dumpable": 1, "signo": 11,
     "hostname": "h/x", "comm": "a%b", "exe": "/usr/bin/x y", "rlimit_core": 0},
    {"pid": 42, "pid_ns": 7, "tid": None, "tid_ns": None, "uid": 0, "gid": 0, "dumpable": None, "signo": None,
     "hostname": None, "comm": None, "exe": None, "rlimit_core": 18446744073709551615, "mode": "pipe"},
]


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet="%pPiIuUgdsthecEfCF/ab.\\-é", max_size=40), st.sampled_from(CTXS))
def test_same_parts_as_the_character_scan(text, ctx):
    assert cp._expand_text(text, ctx) == _reference(text, ctx)


def test_plain_text_and_empty():
    assert cp._expand_text("core", CTXS[0]) == ["core"]
    assert cp._expand_text("", CTXS[0]) == []
    assert cp._expand_text("/var/crash/core.%p.%e", CTXS[0]) == ["/var/crash/core.7.a%b"]  # %p: the pid in its own namespace
    assert cp._expand_text("x%", CTXS[0]) == ["x"]
