"""What a trace cannot witness, said instead of left blank (issue 15): a kernel that writes no
user stacks (arm64: no CONFIG_USER_STACKTRACE_SUPPORT, so options/userstacktrace records
nothing), a stack walk that found no frame, and a ring buffer that was full and lost events
(the per-CPU ``stats`` counters) -- with the switch that keeps them (``--buffer-kb``)."""
import os
import sys
import time

from coredoctor.render.trace import line
from coredoctor.trace import raw as R
from coredoctor.trace import run as TR
from coredoctor.trace.events import Parser
from coredoctor.trace.transitions import Tracker

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures", "trace"))
import rawpage as RP  # noqa: E402
from test_trace_events import FMT, REC, PrctlKernel, _setresuid, _stack  # noqa: E402


def _gid_drop(ts, stack_lines=""):
    """setresgid(-1, 65534, -1) of a root task as tracefs prints it (text), with *stack_lines*
    after its entry event."""
    return (f" actor-300 (  300) [000] .....   {ts:.6f}: sys_setresgid(rgid: 0xffffffff, egid: 0xfffe, "
            f"sgid: 0xffffffff)\n{stack_lines}"
            f" actor-300 (  300) [000] .....   {ts + 1e-6:.6f}: sys_setresgid -> 0x0\n")


class GidKernel(PrctlKernel):
    def __init__(self):
        super().__init__()
        self.gid = [0, 65534, 0, 65534]  # as read at confirmation: after the drop

    def read_creds(self, pid, tid=None):
        c = super().read_creds(pid, tid)
        if c is not None:
            c["gid"] = list(self.gid)
        return c


def _drop_record(text, stack_note=None):
    k = GidKernel()
    tr = Tracker(kernel=k, use_pidfd=False)
    tr.stack_note = stack_note
    tr.attach(300, creds_override={"uid": [0] * 4, "gid": [0] * 4, "cap_prm": 0, "cap_eff": 0,
                                   "owner": [0, 0], "tgid": 300, "comm": "actor"})
    p = Parser(userstack=True)
    tr.handle(p.feed(text) + p.flush())
    out = tr.confirm(final=True)
    ch = [r for r in out if r["event"] == "dumpable-change"]
    assert len(ch) == 1, out
    return ch[0], p


def test_raw_reader_counts_stacks_and_events_that_came_without_one():
    """arm64's kernel: the event is followed by the next event of its CPU, never by a stack."""
    rr = R.RawReader(RP.decoder(REC), userstack=True)
    pg = RP.page(1000, [_setresuid(5, [0, 1, 0]), _setresuid(5, [0, 2, 0]), _setresuid(5, [0, 3, 0])])
    out = rr.feed([(0, pg)], drained=True) + rr.feed([], drained=True)
    assert [e["args"] for e in out] == [[0, 1, 0], [0, 2, 0], [0, 3, 0]]
    assert (rr.stacks, rr.stackless) == (0, 3)
    note = TR.kernel_writes_no_stacks(rr, "aarch64")
    assert note is not None and note.startswith("unknown: this kernel writes no user stack records")
    assert "CONFIG_USER_STACKTRACE_SUPPORT, which arm64 does not select" in note and "3 events" in note
    x86 = TR.kernel_writes_no_stacks(rr, "x86_64")
    assert x86 is not None and "arm64" not in x86
    # once the tracer knows, no event waits for a stack any more: given out at the first drained read
    rr.userstack = False
    assert [e["args"] for e in rr.feed([(0, RP.page(5000, [_setresuid(5, [0, 4, 0])]))], drained=True)] == [[0, 4, 0]]
    # a kernel that writes stacks: never concluded, however many events came without one
    rr2 = R.RawReader(RP.decoder(REC), userstack=True)
    pg = RP.page(1000, [_setresuid(6, [0, 1, 0]), _stack(6, [0x4000]), _setresuid(6, [0, 2, 0]),
                        _setresuid(6, [0, 3, 0]), _setresuid(6, [0, 4, 0])])
    rr2.feed([(0, pg)], drained=True)
    rr2.feed([], drained=True)
    assert rr2.stacks == 1 and rr2.stackless == 3 and TR.kernel_writes_no_stacks(rr2, "aarch64") is None
    # one stackless event is not enough to say it of the kernel
    rr3 = R.RawReader(RP.decoder(REC), userstack=True)
    rr3.feed([(0, RP.page(1000, [_setresuid(7, [0, 1, 0])]))], drained=True)
    rr3.feed([], drained=True)
    assert rr3.stackless == 1 and TR.kernel_writes_no_stacks(rr3, "aarch64") is None
    assert FMT  # the recorded formats are those of a kernel with ftrace/user_stack


def test_text_parser_counts_the_same():
    p = Parser(userstack=True)
    p.feed(_gid_drop(5.0) + _gid_drop(6.0))
    p.flush()
    assert (p.stacks, p.stackless) == (0, 4) and TR.kernel_writes_no_stacks(p, "aarch64") is not None
    p = Parser(userstack=True)
    p.feed(_gid_drop(5.0, " actor-300 (  300) [000] .....   5.000001: <user stack trace>\n =>  <0000aaaa00001000>\n"))
    p.flush()
    assert p.stacks == 1 and TR.kernel_writes_no_stacks(p, "aarch64") is None


def test_a_transition_without_a_stack_says_why():
    note = TR.NO_KERNEL_STACKS.format(n=2, arch=", which arm64 does not select")
    r, _ = _drop_record(_gid_drop(time.monotonic() - 1), stack_note=note)
    assert (r["syscall"], r["before"], r["after"]) == ("setresgid", 1, 0)
    assert r["stack"] == [] and r["stack_note"] == note
    text = line(r)
    assert "\n" in text and "stack unknown: this kernel writes no user stack records" in text
    assert all(len(x) <= 100 for x in text.split("\n")[1:]), text  # the note's lines fit 100 columns
    # a stack record that came empty: the walk found no frame
    r, _ = _drop_record(_gid_drop(time.monotonic() - 1, " actor-300 (  300) [000] .....   0.1: <user stack trace>\n"))
    assert r["stack"] == [] and "found no frame" in r["stack_note"], r
    # no stack record with this one event, on a kernel not known to write none
    r, _ = _drop_record(_gid_drop(time.monotonic() - 1))
    assert r["stack"] == [] and r["stack_note"].startswith("unknown: no user stack record came with this event")
    # a stack: no note, and the text shows the stack instead
    r, _ = _drop_record(_gid_drop(time.monotonic() - 1, " actor-300 (  300) [000] .....   0.1: <user stack trace>\n"
                                                        " =>  <0000aaaa00001000>\n"))
    assert r["stack"] == ["0xaaaa00001000"] and r["stack_note"] is None
    assert "stack unknown" not in line(r) and "0xaaaa00001000" in line(r)


def test_a_full_ring_buffer_is_a_missing_witness_with_its_switch():
    quiet = {"entries": 5, "overrun": 0, "commit_overrun": 0, "dropped_events": 0}
    assert TR.lost_of(quiet) == 0 and TR.lost_notice(quiet, 0, 8192) is None
    full = dict(quiet, dropped_events=1200, overrun=3)
    n = TR.lost_notice(full, 0, 64)
    assert n is not None and n["event"] == "notice" and n["kind"] == "events-lost"
    assert (n["lost"], n["lost_total"], n["buffer_kb"], n["switch"]) == (1203, 1203, 64, "buffer_size_kb")
    assert "lost 1203 event(s)" in n["what"] and "--buffer-kb" in n["what"] and "now 64 KiB per CPU" in n["what"]
    assert "dropped events 1200" in n["what"] and "may be missing" in n["what"]
    assert TR.lost_notice(full, 1203, 64) is None  # said once
    more = TR.lost_notice(dict(full, dropped_events=1300), 1203, 64)
    assert more is not None and (more["lost"], more["lost_total"]) == (100, 1303)
    assert line(n) == "note: " + n["what"]
    summ = {"event": "summary", "dumpable_changes": 1, "cred_changes": 0, "fatal_signals": 0, "events": 9,
            "lost": 1203, "buffer_kb": 64}
    text = line(summ)
    assert text.endswith("(raise --buffer-kb, tracefs buffer_size_kb, now 64 KiB per CPU)"), text
    assert "raise --buffer-kb" not in line(dict(summ, lost=0))


def test_events_still_unread_at_the_stop_are_a_missing_witness():
    from coredoctor.trace import run as R
    n = R.unread_notice(117786, 3.0)
    assert (n["event"], n["kind"], n["unread"]) == ("notice", "events-unread", 117786)
    assert n["what"].startswith("117786 event(s) were still unread") and "for 3 s" in n["what"]
