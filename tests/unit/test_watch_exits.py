"""coredoctor watch's exits without a usable tracer, on a stand-in for the tracefs instance (the
real instance is proven in tests/fleet/test_watch.py): no tracefs -> exit 3 saying what is
unknown; a kernel with none of the events -> exit 3 and the instance closed; the reader failing
-> exit 1, the instance closed, the stop entry sent; signal handlers restored each time."""

import errno
import io
import json
import signal

import pytest

from coredoctor.trace import tracefs
from coredoctor.watch import run as WR
from coredoctor.watch import sinks


class FakeInstance:
    made = []

    def __init__(self, missing=(), fail_read=False, **kw):
        self.missing, self.fail_read = list(missing), fail_read
        self.closed = False
        self.stale_removed = []
        self.name, self.path = "coredoctor-0", "/nonexistent/instances/coredoctor-0"
        FakeInstance.made.append(self)

    def _write(self, rel, value):
        raise OSError(errno.ENOENT, "no trace_clock")

    def setup(self, **kw):
        self.setup_args = kw

    def raw_decoder(self):
        return None, "stand-in"

    def open_pipe(self, wake_fd=None):
        pass

    def read(self, timeout=0.1, size=0):
        if self.fail_read:
            raise OSError(errno.EIO, "Input/output error")
        return "", True

    def stats(self):
        return {"entries": 0, "overrun": 0, "commit_overrun": 0, "dropped_events": 0}

    def close(self):
        self.closed = True


@pytest.fixture
def sink(monkeypatch, tmp_path):
    out = io.StringIO()
    monkeypatch.setattr(sinks, "open_sink", lambda kind, **kw: sinks.JsonLines(out))
    monkeypatch.setattr(WR, "attach_all", lambda tracker: 0)
    monkeypatch.setenv("COREDOCTOR_STATE_DIR", str(tmp_path / "state"))
    FakeInstance.made = []
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    yield out
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before


def _entries(out):
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_no_tracefs_is_exit_3_and_names_what_is_unknown(sink, monkeypatch):
    def refuse(**kw):
        raise tracefs.TracefsError("tracefs is not mounted and mounting it failed: permission denied")
    monkeypatch.setattr(tracefs, "Instance", refuse)
    with pytest.raises(WR.Unsupported) as ei:
        WR.run(config="/dev/null")
    assert ei.value.exit_code == WR.EXIT_UNSUPPORTED == 3
    assert "fatal signals are unknown" in str(ei.value) and "permission denied" in str(ei.value)


def test_a_kernel_without_the_events_is_exit_3_and_the_instance_is_closed(sink, monkeypatch):
    every = [ev for _what, evs in WR.NEEDS for ev in evs]
    monkeypatch.setattr(tracefs, "Instance", lambda **kw: FakeInstance(missing=every))
    with pytest.raises(WR.Unsupported, match="none of the events"):
        WR.run(config="/dev/null")
    assert FakeInstance.made[0].closed


def test_some_events_missing_is_a_notice_per_unknown_family(sink, monkeypatch):
    monkeypatch.setattr(tracefs, "Instance", lambda **kw: FakeInstance(missing=["syscalls/sys_exit_prctl"]))
    assert WR.run(config="/dev/null", duration=0.3) == 0
    inst = FakeInstance.made[0]
    assert inst.closed and inst.setup_args["host"] is True
    kinds = [(e["COREDOCTOR_EVENT"], e.get("COREDOCTOR_NOTICE_KIND")) for e in _entries(sink)]
    assert kinds == [("watch-notice", "unknown"), ("watch-notice", "reader"), ("watch-started", None),
                     ("watch-stopped", None)], kinds
    assert "prctl(PR_SET_DUMPABLE) are unknown" in _entries(sink)[0]["MESSAGE"]


def test_the_reader_failing_is_exit_1_and_removes_the_instance(sink, monkeypatch):
    monkeypatch.setattr(tracefs, "Instance", lambda **kw: FakeInstance(fail_read=True))
    with pytest.raises(WR.ReaderFailed, match="the trace reader failed: Input/output error") as ei:
        WR.run(config="/dev/null")
    assert ei.value.exit_code == WR.EXIT_READER == 1
    assert FakeInstance.made[0].closed
    stopped = [e for e in _entries(sink) if e["COREDOCTOR_EVENT"] == "watch-stopped"]
    assert stopped and "error: coredoctor watch: the trace reader failed" in stopped[0]["COREDOCTOR_REASON"]


def test_a_bad_config_is_refused_before_anything_is_traced(sink, monkeypatch, tmp_path):
    monkeypatch.setattr(tracefs, "Instance", lambda **kw: FakeInstance())
    conf = tmp_path / "watch.conf"
    conf.write_text("interval = never\n")
    with pytest.raises(WR.UsageError, match="watch.conf:1: interval"):
        WR.run(config=str(conf))
    assert FakeInstance.made == []
    with pytest.raises(WR.UsageError, match="no such file"):
        WR.run(config=str(tmp_path / "absent.conf"))


class ListSink:
    def __init__(self):
        self.got = []

    def send(self, e):
        self.got.append(e)


def _watch_with_units(units, **cfg):
    w = WR.Watch(ListSink(), None, WR.parse_config("\n".join(f"{k} = {v}" for k, v in cfg.items())),
                 False, 60.0, None, False)
    import time
    for pid, (unit, container) in units.items():  # as looked up just now: not read again
        w.units[pid] = (unit, container, time.monotonic() + 3600)
    return w


def test_record_counts_losses_per_unit_and_honours_ignored_units():
    from test_watch_entries import fatal, loss
    w = _watch_with_units({1: ("a.service", ""), 2: ("noisy.service", ""), 3: (None, ""),
                           4: ("docker-x.scope", "0123456789ab")}, **{"ignore-unit": "noisy.service"})
    for pid in (1, 1, 2, 3, 4):
        w.record(loss(pid=pid, tid=pid))
    w.record(loss(pid=1, tid=1, before=0, before_candidates=[0]))   # not a loss: already 0
    w.record(fatal(pid=2, tid=2))                                   # the ignored unit's crash too
    w.record(fatal(pid=3, tid=3))
    assert w.pending_losses == {"a.service": 2, "docker-x.scope": 1}   # the unit label: its scope
    assert w.stats["losses"] == 5 and w.stats["losses_logged"] == 3
    assert [(e["kind"], e["fields"]["COREDOCTOR_PID"]) for e in w.sink.got] == [
        ("dumpability-lost", "1"), ("dumpability-lost", "1"), ("dumpability-lost", "4"), ("crash-no-core", "3")]


@pytest.mark.parametrize("argv, says", [
    (["--interval", "nan"], "--interval must be a number of seconds above 1"),
    (["--duration", "-1"], "--duration must be a number of seconds above 0"),
    (["--buffer-kb", "1"], "--buffer-kb must be between 64 and 2097152"),
    (["--log-socket", "/x"], "--log-socket wants --log journal or --log syslog"),
])
def test_cli_refuses_bad_options_in_one_line(argv, says, capsys):
    import os
    from coredoctor import cli
    assert cli.main(["watch", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    if os.geteuid() == 0:  # a user is told to be root first
        assert says in err, err


def test_units_come_from_the_events_before_the_tracker_sees_them():
    """cgroup_attach_task names the service of a task that may be gone by the time /proc could
    be read; a fork child starts in its parent's; another hierarchy's move changes nothing."""
    from coredoctor.trace.transitions import Tracker
    w = _watch_with_units({10: ("parent.service", "")})
    tr = Tracker(kernel=None, use_pidfd=False)
    w.observe([{"kind": "tp", "name": "cgroup_attach_task", "pid": 5, "fields":
                {"pid": 77, "dst_path": "/system.slice/short.service", "dst_root": 9}},
               {"kind": "tp", "name": "cgroup_attach_task", "pid": 5, "fields":
                {"pid": 77, "dst_path": "/process_api/abc", "dst_root": 4}},      # memory hierarchy
               {"kind": "tp", "name": "cgroup_attach_task", "pid": 5, "fields":
                {"pid": 78, "dst_path": "/system.slice/docker-" + "a" * 64 + ".scope", "dst_root": 0}},
               {"kind": "tp", "name": "sched_process_fork", "pid": 10, "tgid": 10,
                "fields": {"child_pid": 11, "child_comm": "worker"}},
               {"kind": "enter", "pid": 10, "syscall": "setuid"}], tr)
    assert w.unit_of(77, fresh=False) == ("short.service", "")
    assert w.unit_of(78, fresh=False) == ("docker-" + "a" * 64 + ".scope", "a" * 12)
    assert w.unit_of(11, fresh=False) == ("parent.service", "")
    assert w.unit_of(12, fresh=False) == (None, "")
