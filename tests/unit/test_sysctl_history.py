"""history/sysctl_history: the value of a sysctl at an old crash, from the fix journal."""
from coredoctor.history.sysctl_history import changes, value_at


def _entry(fid, created, pairs, state="applied", rolled_back=None, done=True):
    return {"id": fid, "created": created, "state": state, "rolled_back": rolled_back,
            "actions": [{"action": {"kind": "sysctl", "key": k, "value": new}, "prior": {"value": old}, "done": done}
                        for k, old, new in pairs] + [{"action": {"kind": "mkdir", "path": "/var/crash"},
                                                      "prior": {"existed": True}, "done": True}]}


def test_applied_then_rolled_back_then_applied_again():
    es = [_entry("B", 200.0, [("fs.suid_dumpable", "0", "2")]),
          _entry("A", 100.0, [("kernel.core_pattern", "core", "/var/crash/core.%e.%p"),
                              ("fs.suid_dumpable", "0", "2")], state="rolled-back", rolled_back=150.0)]
    sd = changes(es, "fs.suid_dumpable")
    assert [(c["time"], c["before"], c["after"], c["fix"], c["how"]) for c in sd] == [
        (100.0, "0", "2", "A", "applied"), (150.0, "2", "0", "A", "rolled back"), (200.0, "0", "2", "B", "applied")]
    assert value_at(sd, 50.0, "2") == ("0", sd[0])
    assert value_at(sd, 120.0, "2") == ("2", sd[1])
    assert value_at(sd, 170.0, "2") == ("0", sd[2])
    assert value_at(sd, 250.0, "2") == ("2", None)
    assert value_at(sd, None, "2") == ("2", None)
    cp = changes(es, "kernel.core_pattern")
    assert value_at(cp, 99.0, "core") == ("core", cp[0]) and value_at(cp, 160.0, "core") == ("core", None)


def test_actions_not_known_to_have_run_and_no_ops_are_left_out():
    es = [_entry("K", 100.0, [("fs.suid_dumpable", "0", "2")], state="applying", done=False),
          _entry("S", 120.0, [("fs.suid_dumpable", "2", "2")])]
    assert changes(es, "fs.suid_dumpable") == []
    assert changes([], "fs.suid_dumpable") == [] and changes(None, "x") == []


def test_a_kernel_line_is_ordered_against_a_fix_by_the_kernel_logs_sequence_not_its_clock():
    """printk's local_clock() may run ahead of CLOCK_MONOTONIC (the emulated arm64 guest: 0.7 s at
    8 s uptime, more under load): a crash logged before the fix can carry a time after it. Where
    the fix journaled the log's position (boot_id, next_seq) and the crash is a kernel line of
    the same boot, the sequence numbers order them; otherwise the times do, as before."""
    e = dict(_entry("F", 100.0, [("fs.suid_dumpable", "0", "2")]), kmsg={"boot_id": "b1", "next_seq": 500})
    sd = changes([e], "fs.suid_dumpable")
    assert sd[0]["kmsg"] == {"boot_id": "b1", "next_seq": 500}
    # logged (seq 499) before the fix, though its clock says 100.7 s: the value then was 0
    assert value_at(sd, 100.7, "2", kmsg_seq=499, boot_id="b1") == ("0", sd[0])
    assert value_at(sd, 100.7, "2") == ("2", None)  # by the clock alone: today's value
    # logged after the fix (seq 500 and on): today's value, whatever the clock says
    assert value_at(sd, 99.0, "2", kmsg_seq=500, boot_id="b1") == ("2", None)
    # another boot's sequence numbers say nothing: the times decide
    assert value_at(sd, 100.7, "2", kmsg_seq=499, boot_id="b2") == ("2", None)
    assert value_at(sd, 99.0, "2", kmsg_seq=10, boot_id="b2") == ("0", sd[0])
    # a journal written before positions were kept, or a crash not seen in the kernel log: time
    old = changes([_entry("G", 100.0, [("fs.suid_dumpable", "0", "2")])], "fs.suid_dumpable")
    assert old[0]["kmsg"] is None and value_at(old, 100.7, "2", kmsg_seq=499, boot_id="b1") == ("2", None)
    assert value_at(sd, 100.7, "2", kmsg_seq=None, boot_id="b1") == ("2", None)
    bad = changes([dict(e, kmsg={"boot_id": "b1", "next_seq": "500"})], "fs.suid_dumpable")  # not a number
    assert value_at(bad, 100.7, "2", kmsg_seq=499, boot_id="b1") == ("2", None)


def test_a_kernel_log_that_overwrote_its_oldest_records_is_a_missing_witness():
    """printk's ring buffer numbers records from 0 at boot: an oldest record numbered above 0 means
    the buffer was full and older lines -- crashes among them -- are gone; crashes says so and
    names the switch (log_buf_len=)."""
    import time
    from coredoctor.history import witness
    from coredoctor.render.text import crashes_report
    t = time.time() - 3600
    full = witness.kernel_log({"debug.exception-trace": 1}, "x86_64",
                              position={"boot_id": "b", "next_seq": 90000, "first_seq": 41234, "first_time": t})
    assert full["overwritten"] == {"records": 41234, "oldest_kept": t}
    assert "first 41234 records of this boot were overwritten" in full["note"]
    assert [s["command"] for s in full["switches"]] == ["log_buf_len=4M on the kernel command line"]
    both = witness.kernel_log({"debug.exception-trace": 0}, "aarch64", position={"first_seq": 7, "first_time": t})
    assert [s["command"] for s in both["switches"]] == ["sysctl -w debug.exception-trace=1", "auditctl -e 1",
                                                        "log_buf_len=4M on the kernel command line"]
    whole = witness.kernel_log({"debug.exception-trace": 1}, "x86_64", position={"first_seq": 0, "first_time": t})
    assert "overwritten" not in whole and whole["note"] is None and whole["switches"] == []
    assert "overwritten" not in witness.kernel_log({"debug.exception-trace": 1}, "x86_64", position=None)
    out = crashes_report({"crashes": [], "read": {"kmsg": "read (0 events)"}, "kernel_log": full}).splitlines()
    said = [ln for ln in out if "oldest records overwritten" in ln]
    assert said and "log_buf_len=4M" in " ".join(out) and all(len(ln) <= 100 for ln in out), out
    assert "overwritten" not in crashes_report({"crashes": [], "read": {"kmsg": "read (0 events)"},
                                                "kernel_log": whole})


def test_the_kernel_log_position_of_this_host():
    """Read for real: this boot's id, and a next_seq past every record held."""
    import os
    import pytest
    from coredoctor.history import kmsg
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("/dev/kmsg is not readable here")
    pos = kmsg.position()
    assert pos is not None and pos["boot_id"] == kmsg.boot_id()
    seqs = [e["seq"] for e in kmsg.read_kmsg() if isinstance(e.get("seq"), int)]
    assert all(s < pos["next_seq"] for s in seqs) and pos["first_seq"] <= pos["next_seq"]
    assert kmsg.position(path="/nonexistent/kmsg") is None
