"""Property-based tests of the trace readers (pure, bounded: a few seconds).

- the binary decoder (trace/raw.py) on pages recorded from 6.18, truncated, bit-flipped, and on
  random bytes: events or counted bad records, never an exception;
- records built with arbitrary names and file names (trace-line syntax, newlines, invalid UTF-8)
  decode to exactly the events that were built, with their pids;
- a bad record (a string field pointing out of it, an unknown ID) between good ones: both good
  ones are still decoded;
- format files and page headers of any text: a format or one DecodeError;
- the text parser (the fallback where binary reading is not possible) on lines with arbitrary
  names: an event dict or None, never an exception.
"""
import os
import struct
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "trace")
sys.path.insert(0, FIX)
import rawpage as RP  # noqa: E402

from coredoctor.trace import events as E  # noqa: E402
from coredoctor.trace import raw as R  # noqa: E402

REC = RP.load()
BY_ID, FMT, STACK_ID = RP.formats(REC)
PAGES = RP.pages(REC)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.one_of(
    st.binary(max_size=80).filter(lambda b: b"\0" not in b),
    st.sampled_from([b"x-1 [000] ..... 1.0: sys_enter_setresuid:", b"a: b=c) (1) [1]",
                     b"x-1 (1) [000] ....\n init-1 (1) [000] ..... 2.0: sys_setresuid(ruid: 0)",
                     b"\xff\xfe=)", b"<user stack trace>", b" =>  <00007f135b1f0884>"]),
)


def _decode(pages, userstack=True):
    rr = R.RawReader(RP.decoder(REC), userstack=userstack)
    out = []
    for i, p in enumerate(pages):
        out += rr.feed([p], drained=i % 2 == 1)
    return out + rr.flush(), rr


def _check_events(evs):
    for e in evs:
        assert isinstance(e["pid"], int) and isinstance(e["ts"], float)
        assert e["kind"] in ("enter", "exit", "tp")
        if e["kind"] == "enter":
            assert all(isinstance(a, int) for a in e["args"])


@FAST
@given(st.data())
def test_recorded_pages_truncated_or_flipped(data):
    i = data.draw(st.integers(0, len(PAGES) - 1))
    cpu, page = PAGES[i]
    b = bytearray(page)
    for _ in range(data.draw(st.integers(0, 8))):
        pos = data.draw(st.integers(0, len(b) - 1))
        b[pos] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(b)))
    evs, rr = _decode([(cpu, bytes(b[:cut]))])
    _check_events(evs)


@FAST
@given(st.lists(st.binary(max_size=4096), max_size=4), st.booleans())
def test_random_pages(pages, userstack):
    evs, rr = _decode([(n % 2, p) for n, p in enumerate(pages)], userstack)
    _check_events(evs)


@FAST
@given(st.lists(st.tuples(st.integers(0, 31), st.integers(0, (1 << 27) - 1), st.binary(max_size=64)),
                max_size=30))
def test_random_entries_in_a_valid_page(entries):
    body = b"".join(struct.pack("<I", tl | d << 5) + p for tl, d, p in entries)[:4080]
    evs, rr = _decode([(0, RP.page(123, [body]))])
    _check_events(evs)


@FAST
@given(names, names, st.integers(1, 1 << 22), st.integers(1, 1 << 22), st.integers(0, 1 << 26))
def test_arbitrary_names_are_values_never_structure(comm, filename, parent, child, delta):
    f_fork, f_exec, f_exit = FMT["sched/sched_process_fork"], FMT["sched/sched_process_exec"], \
        FMT["sched/sched_process_exit"]
    ents = [RP.entry(RP.record(f_fork, parent, {"parent_pid": parent, "child_pid": child},
                               {"parent_comm": comm, "child_comm": comm}), delta),
            RP.entry(RP.record(f_exec, child, {"pid": child, "old_pid": child}, {"filename": b"/x/" + filename})),
            RP.entry(RP.record(f_exit, child, {"pid": child, "prio": 120, "group_dead": 1}, {"comm": comm[:15]}))]
    evs, rr = _decode([(0, RP.page(1, ents))], userstack=False)
    assert rr.bad == 0
    assert [(e["name"], e["pid"]) for e in evs] == [("sched_process_fork", parent), ("sched_process_exec", child),
                                                   ("sched_process_exit", child)]
    assert evs[0]["fields"]["child_pid"] == child and evs[0]["fields"]["child_comm"] == comm.decode("utf-8", "replace")
    assert evs[1]["fields"]["filename"] == ("/x/" + filename.decode("utf-8", "replace"))
    assert evs[2]["fields"]["pid"] == child and evs[2]["fields"]["group_dead"] is True


@FAST
@given(st.integers(1, 1 << 22), st.integers(0, 0xFFFFFFFF), st.binary(min_size=4, max_size=200),
       st.sampled_from(["loc", "short", "unknown"]))
def test_a_bad_record_between_good_ones(pid, loc, junk, how):
    f_exec = FMT["sched/sched_process_exec"]
    good = RP.entry(RP.record(FMT["syscalls/sys_enter_setresuid"], pid, {"ruid": 1, "euid": 2, "suid": 3}))
    if how == "loc":  # a string that points past its record
        rec = bytearray(RP.record(f_exec, pid, {"pid": pid}, {"filename": junk}))
        fl = [x for x in f_exec.fields if x.name == "filename"][0]
        off, n = loc & 0xFFFF, len(rec) + 8  # past the record and its padding to 4 bytes, from anywhere
        struct.pack_into("<I", rec, fl.offset, off | n << 16)
        bad = RP.entry(bytes(rec))
    elif how == "short":  # shorter than its format
        bad = RP.entry(struct.pack("<HBBi", f_exec.id, 0, 0, pid))
    else:
        bad = RP.entry(struct.pack("<HBBi", 65001, 0, 0, pid) + junk)
    evs, rr = _decode([(0, RP.page(0, [good, bad, good]))], userstack=False)
    assert [(e["pid"], e["args"]) for e in evs] == [(pid, [1, 2, 3])] * 2
    assert rr.bad + rr.d.unknown == 1


@FAST
@given(st.text(max_size=400))
def test_format_files_of_any_text(text):
    try:
        f = R.parse_format(text)
    except R.DecodeError:
        return
    assert isinstance(f.id, int) and "common_pid" in f.common


@FAST
@given(st.lists(st.sampled_from(list(REC["formats"].values())), min_size=1, max_size=3), st.data())
def test_mutated_format_files(texts, data):
    for text in texts:
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 40)))
        t = text[:i] + data.draw(st.text(max_size=20)) + text[j:]
        try:
            f = R.parse_format(t)
        except R.DecodeError:
            continue
        try:
            d = R.Decoder({f.id: f}, R.PageHeader(), None, None)
        except R.DecodeError:
            continue
        for cpu, p in PAGES[:2]:
            _check_events(d.page(p, cpu))


@FAST
@given(st.text(max_size=300), st.text(max_size=300))
def test_headers_of_any_text(page, event):
    for fn, t in ((R.parse_header_page, page), (R.parse_header_event, event),
                  (R.parse_header_page, REC["header_page"][:len(page)])):
        try:
            fn(t)
        except R.DecodeError:
            pass


@FAST
@given(names, st.integers(0, 1 << 22), st.sampled_from([
    "sys_setresuid(ruid: 0xffffffff, euid: 0xfffe, suid: 0xffffffff)", "sys_setresuid -> 0x0",
    "sched_process_exec: filename=/bin/x pid=5 old_pid=5", "<user stack trace>",
    "signal_deliver: sig=11 errno=0 code=1 sa_handler=0 sa_flags=0"]))
def test_text_parser_never_raises(comm, pid, body):
    c = comm.decode("utf-8", "replace")
    text = f"{c:>16}-{pid:<7} ({pid:>5}) [001] .....   12.345678: {body}\n =>  <00007f135b1f0884>\n"
    p = E.Parser(userstack=True)
    for e in p.feed(text, drained=True) + p.feed("", drained=True) + p.flush():
        assert isinstance(e, dict) and isinstance(e["pid"], int)
    for line in text.split("\n"):
        e = E.parse_line(line)
        assert e is None or isinstance(e, dict)
