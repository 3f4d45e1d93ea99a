"""Property-based fuzzing of the input parsers (hypothesis; pure, bounded: a few seconds each).

- core_pattern: parse/expand/render/split_dir of any text with any process facts;
- explain-flags: parse_mm_flags of any text is an int of 64 bits or ValueError, and decodes;
- ELF and core headers: mutated real-shaped cores and a real executable: a result or the one
  domain error (NotACore / NotAnElf), never another exception;
- snapshots: mutated recorded fixtures through validate -> evaluate -> text and JSON
  rendering (``check --from`` in-process): exit 0/1, or one SnapshotError line -- never an
  internal error, and never an exception the model raised on a field validation let through.
"""
import contextlib
import copy
import glob
import io
import json
import os
import shutil
import struct
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from coredoctor import cli, elf, elfcore
from coredoctor.kernel import core_pattern, dumpable
from coredoctor.render import safe, text as rtext
from coredoctor.snapshot import validate

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
FIXTURES = {os.path.basename(p): json.load(open(p)) for p in sorted(glob.glob(os.path.join(FIX, "*.json")))}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: check --from runs the whole CLI three times per example
SLOW = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- core_pattern

specs = st.sampled_from(list("%pPiIugdstheEfcCFxyz%"))
pattern_text = st.lists(st.one_of(st.text(max_size=8), specs.map(lambda c: "%" + c)), max_size=20).map("".join)
patterns = st.one_of(pattern_text, pattern_text.map(lambda s: "|" + s), pattern_text.map(lambda s: "@" + s),
                     pattern_text.map(lambda s: "@@" + s))
fact = st.one_of(st.none(), st.integers(-(1 << 70), 1 << 70), st.text(max_size=20))
contexts = st.fixed_dictionaries({}, optional={k: fact for k in (
    "pid", "pid_ns", "tid", "tid_ns", "uid", "gid", "dumpable", "signo", "time", "hostname", "comm",
    "exe", "rlimit_core", "cpu", "pidfd")})


@FAST
@given(patterns, st.booleans(), contexts, st.integers(0, 1))
def test_core_pattern_parse_expand(pattern, socket_ok, ctx, uses_pid):
    parsed = core_pattern.parse(pattern, socket_ok)
    assert parsed["kind"] in ("file", "pipe", "socket")
    exp = core_pattern.expand(parsed, ctx, uses_pid)
    if exp["kind"] == "pipe":
        for arg in exp["argv"]:
            assert isinstance(core_pattern.render(arg), str)
    else:
        assert isinstance(core_pattern.render(exp["parts"]), str)
        if exp["kind"] == "file":
            d, base = core_pattern.split_dir(exp["parts"])
            assert d is None or isinstance(d, str)


@FAST
@given(st.one_of(st.integers(), st.none(), st.binary(), st.lists(st.integers())))
def test_core_pattern_rejects_non_strings(v):
    with pytest.raises(TypeError):
        core_pattern.parse(v)


# ---------------------------------------------------------------- explain-flags

@FAST
@given(st.one_of(st.text(max_size=80), st.integers(0, (1 << 64) - 1).map(str),
                 st.integers(0, (1 << 64) - 1).map(hex), st.integers(1 << 64, 1 << 300).map(hex),
                 st.text("0123456789", min_size=3000, max_size=4500)))
def test_mm_flags_text(text):
    try:
        v = dumpable.parse_mm_flags(text)
    except ValueError as e:
        assert "\n" not in str(e)
        return
    assert 0 <= v < 1 << 64
    d = dumpable.decode_mm_flags(v)
    assert d["dumpable"] in (0, 1, 2) and d["value"] == v
    assert rtext.explain_flags(safe.clean(d))


@FAST
@given(st.integers(0, (1 << 64) - 1))
def test_mm_flags_round_trip(v):
    assert dumpable.parse_mm_flags(str(v)) == v == dumpable.parse_mm_flags(hex(v))


# ---------------------------------------------------------------- ELF and core headers

def _note(ntype, desc, name=b"CORE\0"):
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def _core():
    ps = bytearray(136)
    struct.pack_into("<IIii", ps, 16, 1000, 1000, 4242, 1)
    ps[40:46] = b"victim"
    pr = bytearray(336)
    struct.pack_into("<h", pr, 12, 11)
    struct.pack_into("<i", pr, 32, 4242)
    notes = _note(1, bytes(pr)) + _note(3, bytes(ps))
    eh = bytearray(64)
    eh[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HHIQQQIHHHHHH", eh, 16, 4, 62, 1, 0, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    load_off = 4096
    ph = struct.pack("<IIQQQQQQ", 4, 0, 176, 0, 0, len(notes), 0, 4)
    ph += struct.pack("<IIQQQQQQ", 1, 5, load_off, 0x400000, 0, 4096, 4096, 4096)
    body = bytes(eh) + ph + notes
    return body + b"\0" * (load_off - len(body)) + b"\xcc" * 4096


CORE = _core()
HEADER_END = 176 + 12 + 8 + 336 + 12 + 8 + 136  # ehdr, phdrs, both notes


def _mutations(base, upto):
    """Overwrite 1-6 fields (any width, little-endian, often an extreme value) within *upto*."""
    value = st.one_of(st.sampled_from([0, 1, 55, 56, 0xFFFF, 0xFFFFFFFF, 1 << 62, (1 << 63) - 1, (1 << 64) - 1]),
                      st.integers(0, (1 << 64) - 1))
    edit = st.tuples(st.integers(0, upto - 1), st.sampled_from([1, 2, 4, 8]), value)

    def apply(edits):
        b = bytearray(base)
        for off, width, v in edits:
            off = min(off, len(b) - width)
            b[off:off + width] = (v & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        return bytes(b)
    return st.one_of(st.lists(edit, min_size=1, max_size=6).map(apply),
                     st.integers(0, len(base)).map(lambda n: base[:n]))


@pytest.fixture(scope="module")
def scratch():
    d = tempfile.mkdtemp(prefix="cdfuzz-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@FAST
@given(data=_mutations(CORE, HEADER_END))
def test_core_headers(scratch, data):
    p = os.path.join(scratch, "core")
    with open(p, "wb") as f:
        f.write(data)
    try:
        info = elfcore.read_core_info(p)
        assert isinstance(info["pid"], int)
    except elfcore.NotACore as e:
        assert "\n" not in str(e)
    r = elfcore.inspect(p)
    assert r["status"] in ("present", "truncated", "empty", "not-core") and set(r) >= {"size", "pid", "why"}


def _small_elf():
    for p in ("/usr/bin/true", "/bin/true"):
        if os.path.exists(p):
            with open(p, "rb") as f:
                return f.read()
    pytest.skip("no /usr/bin/true to mutate")


@FAST
@given(data=st.data())
def test_elf_headers(scratch, data):
    base = _small_elf()
    blob = data.draw(_mutations(base, 64 + 56 * 14))
    # the section headers too (at e_shoff, near the end of the file)
    shoff = struct.unpack_from("<Q", base, 40)[0]
    if data.draw(st.booleans()) and 0 < shoff < len(blob):
        blob = data.draw(_mutations(blob, len(blob)).filter(lambda b: len(b) == len(blob)))
    p = os.path.join(scratch, "obj")
    with open(p, "wb") as f:
        f.write(blob)
    try:
        e = elf.read_elf_path(p)
        assert e.loads is not None
    except elf.NotAnElf as e:
        assert "\n" not in str(e)


# ---------------------------------------------------------------- snapshots through check --from

def _paths(o, pre=()):
    yield pre
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _paths(v, pre + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from _paths(v, pre + (i,))


ALL_PATHS = {name: [p for p in _paths(s) if p] for name, s in FIXTURES.items()}
hostile = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 64), 1 << 64), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30), st.sampled_from(["\udcff", "x\n\x1b[2J", "0" * 30, "ffffffffffffffffff", "%h/%e", "|"]),
    st.lists(st.integers(-5, 1 << 33), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just([[[[1]]]]), st.just({}), st.just([]))


@st.composite
def mutated_snapshots(draw):
    name = draw(st.sampled_from(sorted(FIXTURES)))
    snap = copy.deepcopy(FIXTURES[name])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS[name]))
        o = snap
        try:
            for k in path[:-1]:
                o = o[k]
            if draw(st.integers(0, 5)) == 0 and isinstance(o, dict):
                o.pop(path[-1], None)
            else:
                o[path[-1]] = draw(hostile)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced a parent
    return snap


def _check_from(path, *extra):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["check", "--from", path, *extra])
    return rc, out.getvalue(), err.getvalue()


@SLOW
@given(snap=mutated_snapshots())
def test_check_from_mutated_snapshots(scratch, snap):
    p = os.path.join(scratch, "snap.json")
    with open(p, "w") as f:
        json.dump(snap, f)
    try:  # what load() will decide: the same bounded parse, then the schema
        with open(p) as f:
            validate.validate(validate.parse(f.read()))
        valid = True
    except (validate.Bad, ValueError):
        valid = False
    for extra in ((), ("--json",), ("--all",)):
        rc, out, err = _check_from(p, *extra)
        assert "internal error" not in err and "snapshot is corrupt (" not in err, err
        assert len(err.splitlines()) <= 1, err
        if valid:
            assert rc in (0, 1) or "no process" in err or "not in the snapshot" in err, (rc, err)
            if extra == ("--json",) and rc in (0, 1):
                assert json.loads(out)["schema"] == "coredoctor.check/1"
        else:
            assert rc == 2 and err.startswith("coredoctor: ") and any(
                w in err for w in ("(corrupt snapshot)", "is not a coredoctor snapshot", "is not valid JSON")), (rc, err)


@SLOW
@given(comm=st.text(max_size=40), exe=st.one_of(st.none(), st.text(max_size=60)))
@example(comm="0" * 24 + "\x1f" * 10, exe=None)  # escaped, it pushed "NOT" onto a wrapped line
def test_names_cannot_forge_text_output(scratch, comm, exe):
    """Any comm/exe (control characters, ESC, lone surrogates, line separators): the text report
    holds no raw control character but its own line breaks, and its first line is the
    escaped name -- a name cannot add, end or overwrite a line."""
    snap = copy.deepcopy(FIXTURES["dropped-suid0.json"])
    t = next(p for p in snap["processes"] if p["pid"] == snap["targets"][0])
    t["comm"], t["exe"] = comm, exe
    p = os.path.join(scratch, "names.json")
    with open(p, "w") as f:
        json.dump(snap, f)
    rc, out, err = _check_from(p)
    assert rc == 1 and err == "", err
    assert not [c for c in out if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) <= 0x9f
                or 0xd800 <= ord(c) <= 0xdfff or c in "\u2028\u2029"], out[:300]
    # the verdict is wrapped (a long escaped name moves words to indented lines): ignoring where
    # the renderer broke its lines, the first paragraph starts with the escaped name and the
    # verdict, and every line after its first is the renderer's own indented continuation
    para = out.split("\n\n", 1)[0]
    expected = f"{safe.escape(comm)} (pid {t['pid']}): a SIGSEGV now would NOT"
    assert "".join(para.split()).startswith("".join(expected.split())), out[:300]
    assert all(line.startswith("  ") for line in para.split("\n")[1:]), out[:300]
