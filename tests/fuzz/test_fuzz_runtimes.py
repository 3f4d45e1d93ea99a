"""Property-based tests of the runtime and ABRT parsers against hostile input: /proc/PID/environ
and cmdline (any user sets them), ELF objects (any user can run a crafted binary and make it
catch SIGSEGV), ABRT's configuration files and a snapshot's runtime record (check --from).

Contracts: parse_environ keeps only the table's variables, each bounded; elf.markers returns
markers of the asked names or raises NotAnElf/OSError, nothing else; parse_conf returns a
bounded str->str map; runtimes.decide and kernel.abrt.decide answer any record without raising.
"""
import os
import struct
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from coredoctor import elf, runtimes as RT
from coredoctor.kernel import abrt as A
from coredoctor.snapshot import abrt as S
from coredoctor.snapshot.proc import runtime as reader

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.sampled_from(list(RT.ENV_NAMES) + ["PATH", "SECRET", "", "GOTRACEBACK ", "gotraceback"])
values = st.one_of(st.text(max_size=600), st.sampled_from(["crash", "-XX:-CreateCoredumpOnCrash", "1", ""]))
env_items = st.lists(st.tuples(names, values).map(lambda kv: f"{kv[0]}={kv[1]}".encode("utf-8", "surrogatepass")
                                                   ), max_size=20)
junk = st.binary(max_size=400)


@FAST
@given(env_items, junk)
def test_parse_environ(items, tail):
    env = reader.parse_environ(b"\0".join(items) + b"\0" + tail)
    assert set(env) <= set(RT.ENV_NAMES)
    assert all(isinstance(v, str) and len(v) <= RT.ENV_MAX for v in env.values())


@FAST
@given(st.lists(st.one_of(st.text(max_size=60), st.sampled_from(list(RT.ARGV_NAMES))), max_size=80))
def test_argv_words(argv):
    got = RT.argv_words(argv)
    assert len(got) <= RT.ARGV_MAX and set(got) <= set(RT.ARGV_NAMES)


def _elf_like(draw_bytes, head_fields):
    (phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx) = head_fields
    head = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, shoff, 0, 64,
                                                            phentsize, phnum, shentsize, shnum, shstrndx)
    return head + draw_bytes


small = st.integers(0, 600)
elf_fields = st.tuples(small, small, st.sampled_from([0, 1, 48, 56, 64, 65535]), st.integers(0, 12),
                       st.sampled_from([0, 1, 40, 64, 65535]), st.integers(0, 12), st.integers(0, 14))


@FAST
@given(st.binary(max_size=1500), elf_fields)
def test_elf_markers_on_crafted_objects(body, fields):
    data = _elf_like(body, fields)
    with tempfile.NamedTemporaryFile(dir="/tmp") as f:
        f.write(data)
        f.flush()
        fd = os.open(f.name, os.O_RDONLY)
        try:
            try:
                got = elf.markers(fd, [".go.buildinfo"], ["rust_begin_unwind", "Py_InitializeEx"], ["Go"])
            except (elf.NotAnElf, OSError):
                return
        finally:
            os.close(fd)
    assert set(got) <= {"section:.go.buildinfo", "symbol:rust_begin_unwind", "symbol:Py_InitializeEx", "note:Go"}


@FAST
@given(st.lists(st.one_of(st.text(max_size=200),
                          st.tuples(st.sampled_from(["MakeCompatCore", "SaveFullCore", "DumpLocation",
                                                     "MaxCrashReportsSize", "ProcessUnpackaged",
                                                     "BlackListedPaths", "x" * 300]),
                                    st.text(max_size=5000)).map(lambda kv: f"{kv[0]} = {kv[1]}")),
                max_size=40))
def test_abrt_parse_conf_and_decide(lines):
    conf = S.parse_conf("\n".join(lines))
    assert len(conf) <= 256 and all(isinstance(k, str) and isinstance(v, str) and len(v) <= 4096
                                    for k, v in conf.items())
    rec = {"abrt": conf, "ccpp": conf, "pkgdata": conf, "daemon": {"running": True}, "free_bytes": 1 << 30}
    st_, ev, fix = A.decide(rec, "/usr/local/bin/x", "SIGSEGV", None)
    assert st_ in ("pass", "fail", "warn") and isinstance(ev, str)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
                           lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c,
                                                                                        max_size=4)),
                           max_leaves=12)


@FAST
@given(st.one_of(json_values, st.fixed_dictionaries({
    "markers": st.lists(st.one_of(st.sampled_from(list(RT.MARKERS)), json_values), max_size=5),
    "env": st.one_of(json_values, st.dictionaries(st.sampled_from(list(RT.ENV_NAMES)), json_values, max_size=4)),
    "env_known": json_values, "argv": json_values})),
    st.sampled_from(["SIGSEGV", "SIGABRT", "SIGQUIT", "SIGBUS"]), st.sampled_from(["fault", "kill"]))
def test_runtimes_decide_on_any_record(rec, sig, how):
    ans = RT.decide(rec, sig, how)
    assert ans is None or ans[0] in ("pass", "fail", "unknown")


@FAST
@given(json_values, st.one_of(st.none(), st.text(max_size=40)), st.sampled_from(["SIGSEGV", "SIGQUIT", None]))
def test_abrt_decide_on_any_record(rec, exe, sig):
    st_, ev, _fix = A.decide(rec if isinstance(rec, dict) else {}, exe, sig, None)
    assert st_ in ("pass", "fail", "warn") and isinstance(ev, str)
