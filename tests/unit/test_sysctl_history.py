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
