"""trace/events.py on tracefs text recorded on the two kernels (6.18 here, Debian 12's 6.1 in
qemu), and the transition state machine on those events."""
import os

from coredoctor.trace.events import Parser, parse_line, signed_ret
from coredoctor.trace.transitions import Tracker

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "trace")


def _events(name, chunk=None):
    with open(os.path.join(FIX, name)) as f:
        text = f.read()
    p = Parser()
    out = []
    if chunk:
        for i in range(0, len(text), chunk):
            out += p.feed(text[i:i + chunk])
    else:
        out += p.feed(text)
    return out + p.flush(), p


def test_618_lines():
    evs, p = _events("linux-6.18.txt")
    assert p.unparsed == 0
    sr = [e for e in evs if e.get("syscall") == "setresuid"]
    assert sr[0]["kind"] == "enter" and sr[0]["args"] == [0xFFFFFFFF, 65534, 0xFFFFFFFF]
    assert sr[0]["argnames"] == ["ruid", "euid", "suid"] and sr[0]["tgid"] == 6081
    assert sr[1]["kind"] == "exit" and sr[1]["ret"] == 0
    assert sr[0]["ustack"] == [0x7F135B1F0884]
    sg = [e for e in evs if e.get("syscall") == "setgroups"][0]
    assert sg["args"][0] == 0  # printed as a bare 0 by 6.18
    ex = [e for e in evs if e.get("name") == "sched_process_exit"][0]
    assert ex["fields"]["group_dead"] == "true"
    dl = [e for e in evs if e.get("name") == "signal_deliver"][0]
    assert dl["fields"]["sa_handler"] == 0x556E1B967E40 and dl["fields"]["sa_flags"] == 0x14000000


def test_61_lines_hex_without_prefix_and_no_group_dead():
    evs, p = _events("linux-6.1.txt")
    assert p.unparsed == 0
    sr = [e for e in evs if e.get("syscall") == "setresuid"]
    assert sr[0]["args"] == [0xFFFFFFFF, 0xFFFE, 0xFFFFFFFF]  # "ruid: ffffffff, euid: fffe"
    ex = [e for e in evs if e.get("name") == "sched_process_exit"]
    assert ex and "group_dead" not in ex[0]["fields"]
    dl = [e for e in evs if e.get("name") == "signal_deliver" and e["fields"]["sig"] == 11][0]
    assert dl["fields"]["sa_handler"] == 0 and dl["fields"]["code"] == 0


def test_any_chunking_gives_the_same_events():
    whole, _ = _events("linux-6.18.txt")
    for n in (1, 7, 100, 4095):
        assert _events("linux-6.18.txt", n)[0] == whole


def test_odd_lines():
    assert parse_line("# tracer: nop") is None
    e = parse_line("  <...>-12    [000] d..2.   1.000001: signal_deliver: sig=9 errno=0 code=0 sa_handler=0 sa_flags=0")
    assert e["comm"] is None and e["pid"] == 12 and e["tgid"] is None
    e = parse_line(" my-prog-name-5 (    5) [001] .....   2.5: sys_setuid(uid: 0x3e8)")
    assert e["comm"] == "my-prog-name" and e["args"] == [1000]
    assert signed_ret("0xfffffffffffffff2") == -14


class RecordedKernel:
    """The kernel state as read during the 6.1 recording (no pidfd: /proc ownership only)."""

    def __init__(self):
        self.creds = {"uid": [0, 0, 0, 0], "gid": [0, 0, 0, 0], "cap_prm": 0x1FFFFFFFFFF, "cap_eff": 0x1FFFFFFFFFF,
                      "owner": [0, 0], "tgid": 144, "comm": "python3"}

    def read_creds(self, pid, tid=None):
        return dict(self.creds) if pid == 144 else None

    def read_dumpable(self, pid, creds=None, use_pidfd=True, pfd=None):
        return {"value": None, "candidates": [0, 2], "source": "proc-owner", "evidence": "recorded"}

    def suid_dumpable(self):
        return 0

    def open_pidfd(self, pid):
        return None

    def exit_status(self, pfd):
        return None

    def exe_facts(self, path, pid=None):
        return {"mode": 0o100755, "uid": 0, "gid": 0, "setuid": False, "setgid": False, "fcaps": False}

    def zombie_status(self, pid):
        return 11  # killed by SIGSEGV, no 0x80: no core


def test_tracker_on_recorded_61_events():
    evs, _ = _events("linux-6.1.txt")
    k = RecordedKernel()
    tr = Tracker(kernel=k, use_pidfd=False)
    tr.attach(144, dumpable_override={"value": 1, "candidates": [1], "source": "proc-owner"})
    tr.handle([e for e in evs if e["pid"] == 144 and e["ts"] > 10])
    k.creds = dict(k.creds, uid=[0, 65534, 0, 65534])
    out = tr.confirm(final=True)
    ch = [r for r in out if r["event"] == "dumpable-change"]
    assert len(ch) == 1 and ch[0]["syscall"] == "setresuid" and (ch[0]["before"], ch[0]["after"]) == (1, 0)
    assert ch[0]["confirmed"]["note"].startswith("not read") or ch[0]["confirmed"]["agrees"] is True
    fs = [r for r in out if r["event"] == "fatal-signal"]
    assert len(fs) == 1 and fs[0]["signal"] == "SIGSEGV" and fs[0]["how"] == "kill"
    assert fs[0]["dumped"] is False and fs[0]["outcome_source"].startswith("/proc/PID/stat")


class DaemonKernel:
    """A root daemon started by a shell script, read back after it dropped to uid/gid 990."""

    def __init__(self):
        self.comm = {100: "ovs-ctl", 101: "ovs-vswitchd"}

    def read_creds(self, pid, tid=None):
        if pid not in self.comm:
            return None
        ids = [0] * 4 if pid == 100 else [990] * 4
        return {"uid": ids, "gid": ids, "cap_prm": 0, "cap_eff": 0, "owner": [0, 0], "tgid": pid,
                "comm": self.comm[pid]}

    def read_dumpable(self, pid, creds=None, use_pidfd=True, pfd=None):
        return {"value": 1 if pid == 100 else 0, "candidates": [1 if pid == 100 else 0], "source": "pidfd",
                "evidence": "synthetic"}

    def suid_dumpable(self):
        return 0

    def open_pidfd(self, pid):
        return None

    def exe_facts(self, path, pid=None):
        return {"mode": 0o100755, "uid": 0, "gid": 0, "setuid": False, "setgid": False, "fcaps": False}


def test_names_come_from_the_kernels_fields_not_the_stale_header():
    """tracefs prints each line's comm from its saved_cmdlines cache, refreshed only at a context
    switch: a child that execs and drops privileges within one time slice is printed under the
    shell's name. The records must still name the daemon (seen in CI with the real OVS)."""
    text = "".join(line + "\n" for line in (
        " ovs-ctl-100 (  100) [000] .....   5.000100: sched_process_fork: comm=ovs-ctl pid=100 "
        "child_comm=ovs-ctl child_pid=101",
        " ovs-ctl-101 (  101) [001] .....   5.000200: sched_process_exec: filename=/usr/sbin/ovs-vswitchd "
        "pid=101 old_pid=101",
        " ovs-ctl-101 (  101) [001] .....   5.000300: sys_setresgid(rgid: 0x3de, egid: 0x3de, sgid: 0x3de)",
        " ovs-ctl-101 (  101) [001] .....   5.000301: sys_setresgid -> 0x0",
        " ovs-ctl-101 (  101) [001] .....   5.000400: sys_setresuid(ruid: 0x3de, euid: 0x3de, suid: 0x3de)",
        " ovs-ctl-101 (  101) [001] .....   5.000401: sys_setresuid -> 0x0",
    ))
    p = Parser()
    evs = p.feed(text) + p.flush()
    assert p.unparsed == 0 and [e["comm"] for e in evs] == ["ovs-ctl"] * 6
    tr = Tracker(kernel=DaemonKernel(), use_pidfd=False)
    tr.attach(100)
    tr.handle(evs)
    out = [r for r in tr.confirm(final=True) if r["event"] == "dumpable-change"]
    assert [(r["comm"], r["pid"], r["syscall"], r["before"], r["after"]) for r in out] == [
        ("ovs-vswitchd", 101, "setresgid", 1, 0), ("ovs-vswitchd", 101, "setresuid", 0, 0)]
    assert out[1]["confirmed"]["agrees"] is True


def test_a_task_first_seen_mid_run_is_named_by_proc():
    k = DaemonKernel()
    tr = Tracker(kernel=k, use_pidfd=False)
    p = Parser()
    evs = p.feed(" <...>-101 (  101) [001] .....   5.0003: sys_setresuid(ruid: 0x3de, euid: 0x3de, suid: 0x3de)\n"
                 " <...>-101 (  101) [001] .....   5.0004: sys_setresuid -> 0x0\n") + p.flush()
    tr.handle(evs)
    assert tr.tasks[101].comm == "ovs-vswitchd"


class PrctlKernel:
    """A root process whose dumpable flag is whatever the test last set: the kernel as read at
    confirmation time, which may already be past the events handled so far."""

    def __init__(self):
        self.dumpable = 1
        self.uid = [0] * 4

    def read_creds(self, pid, tid=None):
        if pid != 300:
            return None
        return {"uid": list(self.uid), "gid": [0] * 4, "cap_prm": 0, "cap_eff": 0, "owner": [0, 0], "tgid": 300,
                "comm": "actor"}

    def read_dumpable(self, pid, creds=None, use_pidfd=True, pfd=None):
        return {"value": self.dumpable, "candidates": [self.dumpable], "source": "pidfd", "evidence": "test"}

    def suid_dumpable(self):
        return 0

    def open_pidfd(self, pid):
        return None


def _syscall(ts, name, args, tid=300):
    p = Parser()
    a = ", ".join(f"a{i}: {v:#x}" for i, v in enumerate(args))
    return p.feed(f" actor-{tid} (  300) [000] .....   {ts:.6f}: sys_{name}({a})\n"
                  f" actor-{tid} (  300) [000] .....   {ts + 1e-6:.6f}: sys_{name} -> 0x0\n") + p.flush()


def _changes(recs):
    return [(r["args"][:2], r["after"], r["confirmed"]["agrees"]) for r in recs if r["event"] == "dumpable-change"]


def test_a_disagreement_explained_by_a_later_change_is_not_called_one():
    """The kernel is read after each batch: a task that changed again meanwhile shows the later
    value (seen in the 6.1 guest: prctl 0 read after prctl 1). Held, then explained, in order."""
    import time
    k = PrctlKernel()
    tr = Tracker(kernel=k, use_pidfd=False)
    tr.attach(300)
    t0 = time.monotonic() - 0.5  # event times: before the kernel is read
    tr.handle(_syscall(t0, "prctl", [4, 0]))
    k.dumpable = 1  # prctl(PR_SET_DUMPABLE, 1) ran before the kernel was read, its events not yet
    assert tr.confirm() == []  # held: neither emitted nor called a disagreement
    tr.handle(_syscall(t0 + 0.001, "prctl", [4, 1]))
    out = tr.confirm()
    assert _changes(out) == [([4, 0], 0, None), ([4, 1], 1, True)]
    note = out[0]["confirmed"]["note"]
    assert note.startswith("the process changed again (prctl at ") and "the kernel shows dumpable 1" in note
    from coredoctor.render.trace import line
    assert line(out[0]).endswith("[not confirmed: it changed again before the kernel was read]")
    assert line(out[1]).endswith("[kernel agrees: pidfd 1]")


def test_a_disagreement_nothing_explains_stands_once_the_buffer_was_emptied(monkeypatch):
    import time
    from coredoctor.trace import transitions
    monkeypatch.setattr(transitions, "HOLD", 0.0)
    k = PrctlKernel()
    tr = Tracker(kernel=k, use_pidfd=False)
    tr.attach(300)
    t0 = time.monotonic() - 0.5
    tr.handle(_syscall(t0, "prctl", [4, 0]))
    k.dumpable = 1
    assert tr.confirm() == []
    tr.drained(t0 - 1)  # a drain that began before the read proves nothing
    assert tr.confirm() == []
    # a change traced after the read (its trace time is later) does not explain what was read
    tr.handle(_syscall(time.monotonic() + 0.5, "prctl", [4, 1]))
    tr.drained(time.monotonic())
    out = tr.confirm()
    assert _changes(out) == [([4, 0], 0, False), ([4, 1], 1, True)]
    assert out[0]["confirmed"]["note"] == "the kernel shows dumpable 1; no later change of the process was traced"
    assert out[1]["before"] == 0  # the model's value when prctl(1) came, not the reading's
    assert tr.procs[300].dumpable["source"] == "pidfd"  # confirmed since
    assert "mismatch" not in out[0]["confirmed"]
    from coredoctor.render.trace import line
    assert line(out[0]).endswith("[KERNEL DISAGREES (pidfd): the kernel shows dumpable 1; no later change of "
                                 "the process was traced]")


def test_an_unexplained_disagreement_leaves_the_kernels_value_for_what_follows(monkeypatch):
    import time
    from coredoctor.trace import transitions
    monkeypatch.setattr(transitions, "HOLD", 0.0)
    k = PrctlKernel()
    tr = Tracker(kernel=k, use_pidfd=False)
    tr.attach(300)
    tr.handle(_syscall(time.monotonic() - 0.5, "prctl", [4, 0]))
    k.dumpable = 1  # the model said 0: a path the rules do not know
    assert tr.confirm() == []
    tr.drained(time.monotonic())
    assert _changes(tr.confirm()) == [([4, 0], 0, False)]
    assert tr.procs[300].dumpable == {"value": 1, "candidates": [1], "source": "pidfd"}


def test_a_credential_mismatch_is_explained_only_by_the_same_task():
    import time
    k = PrctlKernel()
    tr = Tracker(kernel=k, use_pidfd=False)
    tr.attach(300, tids=[300, 301])
    t0 = time.monotonic() - 0.5
    tr.handle(_syscall(t0, "setresuid", [0, 65534, 0]))
    k.uid = [0, 0, 0, 0]  # the task went back to euid 0: its setresuid is still in the buffer
    assert tr.confirm() == []
    tr.handle(_syscall(t0 + 0.001, "setresuid", [0, 65534, 0], tid=301))  # another thread's
    assert [r for r in tr.confirm() if r["tid"] == 300] == []
    out = tr.confirm(final=True)
    first = [r for r in out if r["tid"] == 300][0]
    assert first["confirmed"]["agrees"] is False and first["confirmed"]["creds"]["uid"] == [0, 0, 0, 0]
    assert first["confirmed"]["note"].startswith("the kernel shows uid [0, 0, 0, 0]")


EV = " actor-300 (  300) [000] .....   5.000100: sys_setresgid(rgid: 0xffffffff, egid: 0xfffe, sgid: 0xffffffff)\n"
STACK = " actor-300 (  300) [000] .....   5.000101: <user stack trace>\n =>  <00007f135b1f0884>\n"


def test_an_event_read_before_its_stack_waits_one_drained_read_for_it():
    """The kernel commits an event's user stack as its own entry right after it: a reader that
    empties the buffer in between must not emit the event stackless (seen in the 6.1 guest)."""
    p = Parser(userstack=True)
    assert p.feed(EV, drained=True) == [] and p.holding  # kept: its stack may not be committed yet
    out = p.feed(STACK, drained=True)
    assert not p.holding
    assert [(e["syscall"], e["ustack"]) for e in out] == [("setresgid", [0x7F135B1F0884])]
    # a stack that never comes: the event is given out at the next drained read
    assert p.feed(EV, drained=True) == []
    out = p.feed("", drained=True)
    assert [e["syscall"] for e in out] == ["setresgid"] and "ustack" not in out[0]
    # without user stacks recorded, nothing waits
    assert [e["syscall"] for e in Parser().feed(EV, drained=True)] == ["setresgid"]
