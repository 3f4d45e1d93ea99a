"""The one /proc reader and its error model, on a fake procfs tree (COREDOCTOR_PROCFS / an
explicit root): a whole process, a zombie, a kernel thread, a process that vanished before the
first read and one that vanished mid-read; the caller that decides (snapshot.take, the tracer)
catches them once. Target resolution over the same tree, with the one unit rule."""
import io
import os

import pytest

from coredoctor.errors import (AccessDenied, KernelThread, NoSuchProcess, ProcessGone, UsageError,
                               ZombieProcess, proc_error)
from coredoctor.snapshot import proc, targets
from coredoctor.snapshot.proc import base, task
from coredoctor.trace import reads

# the fake processes run as this user; as root the status files are given to it (the owner of
# /proc/PID/status tells dumpability, task_dump_owner())
ME_UID, ME_GID = (1000, 1000) if os.geteuid() == 0 else (os.geteuid(), os.getegid())

LIMITS = ("Limit                     Soft Limit           Hard Limit           Units     \n"
          "Max file size             unlimited            unlimited            bytes     \n"
          "Max core file size        0                    unlimited            bytes     \n")


def _status(name, state="S (sleeping)", vm=True, kthread="0", ppid=1, uid=None, gid=None, threads=1):
    u = ME_UID if uid is None else uid
    g = ME_GID if gid is None else gid
    lines = [f"Name:\t{name}", "Umask:\t0022", f"State:\t{state}", "Tgid:\t0", f"PPid:\t{ppid}",
             "TracerPid:\t0", f"Uid:\t{u}\t{u}\t{u}\t{u}", f"Gid:\t{g}\t{g}\t{g}\t{g}", "Groups:\t",
             f"Kthread:\t{kthread}"]
    if vm:
        lines += ["VmSize:\t    1000 kB", "VmRSS:\t     500 kB", "RssAnon:\t     100 kB", "RssShmem:\t       0 kB"]
    lines += [f"Threads:\t{threads}", "SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000",
              "SigCgt:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000",
              "CoreDumping:\t0"]
    return "\n".join(lines) + "\n"


def _stat(pid, comm, state="S", flags=0x400000, exit_code=0):
    rest = [state, "1", str(pid), str(pid), "0", "-1", str(flags)] + ["0"] * 12 + ["12345"] + ["0"] * 29 + \
        [str(exit_code)]
    return f"{pid} ({comm}) " + " ".join(rest) + "\n"


def _make(root, pid, name, files=None, **kw):
    d = root / str(pid)
    d.mkdir()
    content = {"status": _status(name, **kw), "stat": _stat(pid, name), "comm": name + "\n",
               "limits": LIMITS, "coredump_filter": "00000033\n",
               "cgroup": f"0::/system.slice/{name}.service\n"}
    content.update(files or {})
    for fname, text in content.items():
        if text is not None:
            (d / fname).write_text(text)
    if os.geteuid() == 0:
        os.chown(d / "status", ME_UID, ME_GID)
    os.symlink(f"/usr/bin/{name}", d / "exe")
    os.symlink("/", d / "cwd")
    return d


@pytest.fixture
def fake(tmp_path, monkeypatch):
    root = tmp_path / "proc"
    root.mkdir()
    monkeypatch.setenv("COREDOCTOR_PROCFS", str(root))
    monkeypatch.setenv("COREDOCTOR_DISABLE", "pidfd,ptrace")
    return root


def test_a_whole_process(fake):
    _make(fake, 100, "nginx")
    p = proc.read_process(100)
    assert (p["pid"], p["comm"], p["ppid"], p["state"]) == (100, "nginx", 1, "S")
    assert p["creds"]["uid"] == [ME_UID] * 4 and p["proc_owner"] == [ME_UID, ME_GID]
    assert p["limits"] == {"core": [0, None], "fsize": [None, None]}  # from the limits file: not the live root
    assert p["unit"] == "nginx.service" and p["cgroup"] == "/system.slice/nginx.service"
    assert p["coredump_filter"] == "00000033" and p["exe"] == "/usr/bin/nginx" and p["cwd"] == "/"
    # the owner of status is the process's own euid:egid: dumpable 1, by the one chain
    assert p["dumpable"]["value"] == 1 and p["dumpable"]["source"] == "proc-owner"


def test_a_file_some_kernels_lack_is_none(fake):
    _make(fake, 101, "old", files={"coredump_filter": None, "cgroup": None})
    p = proc.read_process(101)
    assert p["coredump_filter"] is None and p["unit"] is None


def test_zombie(fake):
    _make(fake, 200, "defunct", state="Z (zombie)", vm=False)
    with pytest.raises(ZombieProcess) as e:
        proc.read_process(200)
    assert isinstance(e.value, NoSuchProcess)  # psutil's hierarchy: a zombie is a NoSuchProcess
    assert (e.value.pid, e.value.name) == (200, "defunct")
    assert "defunct (pid 200)" in str(e.value) and "is a zombie" in str(e.value)


def test_kernel_thread(fake):
    _make(fake, 2, "kthreadd", vm=False, kthread="1", ppid=0)
    with pytest.raises(KernelThread) as e:
        proc.read_process(2)
    assert not isinstance(e.value, NoSuchProcess)
    assert (e.value.pid, e.value.name) == (2, "kthreadd") and "kernel thread" in str(e.value)


def test_kernel_thread_without_the_kthread_line(fake):
    st = _status("kworker/0:1", vm=False, ppid=2).replace("Kthread:\t0\n", "")
    _make(fake, 30, "kworker", files={"status": st})
    with pytest.raises(KernelThread):
        proc.read_process(30)


def test_vanished_before_the_first_read(fake):
    with pytest.raises(NoSuchProcess) as e:
        proc.read_process(300)
    assert not isinstance(e.value, (ProcessGone, ZombieProcess))
    assert e.value.pid == 300 and e.value.name is None and "no such process: pid 300" in str(e.value)


def test_vanished_mid_read(fake):
    _make(fake, 301, "shortlived", files={"limits": None})  # status was there, limits is not
    with pytest.raises(ProcessGone) as e:
        proc.read_process(301)
    assert (e.value.pid, e.value.name) == (301, "shortlived")
    assert "shortlived (pid 301) exited while it was being checked" in str(e.value)


def test_no_mm_while_exiting_is_gone(fake):
    _make(fake, 302, "exiting", state="R (running)", vm=False)
    with pytest.raises(ProcessGone):
        proc.read_process(302)


def test_error_mapping(tmp_path):
    (tmp_path / "7").mkdir()
    # a ROOT/PID that is still there but refuses: AccessDenied with pid, name and what
    e = proc_error(PermissionError(13, "denied"), 7, "status", "sshd", root=str(tmp_path))
    assert isinstance(e, AccessDenied) and (e.pid, e.name, e.what) == (7, "sshd", "status")
    assert "sshd (pid 7)" in str(e)
    # a refusal for a pid that is no longer there means it is gone
    e = proc_error(PermissionError(13, "denied"), 8, "status", "sshd", root=str(tmp_path))
    assert isinstance(e, ProcessGone) and e.name == "sshd"
    e = proc_error(FileNotFoundError(2, "x"), 5, first=True)
    assert type(e) is NoSuchProcess and e.pid == 5
    assert isinstance(proc_error(ProcessLookupError(3, "x"), 5, comm="a"), ProcessGone)
    other = OSError(5, "EIO")
    assert proc_error(other, 5) is other


def test_take_catches_once_and_counts(fake):
    from coredoctor import snapshot
    _make(fake, 100, "nginx")
    _make(fake, 200, "defunct", state="Z (zombie)", vm=False)
    _make(fake, 2, "kthreadd", vm=False, kthread="1", ppid=0)
    _make(fake, 301, "shortlived", files={"limits": None})
    snap = snapshot.take(None)
    assert snap["targets"] == [100]
    assert snap["skipped"] == {"gone": 1, "no_mm": 2, "denied": 0}
    with pytest.raises(ZombieProcess):
        snapshot.take([200])  # a named target: strict
    assert snapshot.take([200, 100], strict=False)["skipped"]["no_mm"] == 1


def test_stat_parser_reads_after_the_last_parenthesis():
    hostile = "a) Z 1 2 3 (b"
    st = base.parse_stat(_stat(9, hostile, state="Z", flags=0x200, exit_code=0x8b))
    assert st["state"] == "Z" and st["ppid"] == 1 and st["starttime"] == 12345
    assert st["flags"] & base.PF_DUMPCORE and st["exit_code"] == 0x8b
    assert base.parse_stat("garbage") is None and base.parse_stat("1 (x) S 1") is None


def test_task_reads_raise_and_the_tracer_catches(fake):
    _make(fake, 400, "worker", files={"stat": _stat(400, "worker", state="Z", flags=0x200, exit_code=0x8b)})
    c = task.read_creds(400)
    assert c["uid"] == [ME_UID] * 4 and c["comm"] == "worker" and c["owner"] == [ME_UID, ME_GID]
    assert task.zombie_status(400) == 0x8b and task.zombie_dumpcore(400) is True
    d = task.read_dumpable(400, c, use_pidfd=False)
    assert d["value"] == 1 and d["source"] == "proc-owner"
    assert task.open_pidfd(400) is None  # a fake root has no pidfds
    for f in (task.read_creds, task.zombie_status, task.zombie_dumpcore):
        with pytest.raises(NoSuchProcess):
            f(401)
    with pytest.raises(NoSuchProcess):
        task.read_dumpable(401, None, use_pidfd=False)
    # the tracer's one catch: a gone task is no answer
    assert reads.read_creds(401) is None and reads.zombie_status(401) is None
    assert reads.read_dumpable(401, None, False) is None
    assert reads.read_creds(400)["comm"] == "worker"


def test_comms_and_tids(fake):
    d = _make(fake, 500, "multi")
    (d / "task").mkdir()
    for t in (500, 501):
        (d / "task" / str(t)).mkdir()
    _make(fake, 501 + 1, "other")
    assert proc.comms() == {500: "multi", 502: "other"}
    assert proc.tids(500) == [500, 501]
    with pytest.raises(NoSuchProcess):
        proc.tids(999)


def test_targets_one_unit_rule(fake):
    _make(fake, 10, "nginx")
    _make(fake, 11, "nginx", files={"cgroup": "0::/system.slice/nginx.service/worker\n"})
    # a scope inside a service: by the unit rule the process belongs to the scope only
    _make(fake, 12, "app", files={"cgroup": "0::/user.slice/user@0.service/app.slice/run-1.scope\n"})
    _make(fake, 13, "averyveryverylo")  # the kernel cut its name to 15 characters
    assert targets.find((), ["nginx.service", "run-1.scope", "user@0.service"]) == {
        "nginx.service": [10, 11], "run-1.scope": [12], "user@0.service": []}
    assert targets.resolve_live(["nginx.service"]) == [10, 11]
    assert targets.resolve_live(["averyveryverylongname-extra", "12"]) == [12, 13]
    assert targets.resolve_live([], [], True) is None
    with pytest.raises(UsageError, match="no unit 'user@0.service' is running"):
        targets.resolve_live(["user@0.service"])
    with pytest.raises(UsageError, match="no process named 'nope' is running"):
        targets.resolve_live(["nope"])
    with pytest.raises(UsageError, match="no such process: pid 77"):
        targets.resolve_live(["77"])
    with pytest.raises(UsageError, match="--all takes no other targets"):
        targets.resolve_live(["10"], [], True)
    with pytest.raises(UsageError, match="name a target"):
        targets.resolve_live([])
    # the snapshot's own `unit` is the same rule, so offline resolution agrees with live
    from coredoctor import snapshot
    snap = snapshot.take(None)
    assert {p["pid"]: p["unit"] for p in snap["processes"]}[11] == "nginx.service"
    for words in (["nginx.service"], ["run-1.scope"], ["averyveryverylongname-extra"], ["nginx"]):
        assert targets.resolve_offline(snap, words) == targets.resolve_live(words), words
    with pytest.raises(UsageError, match="no process 'user@0.service' in the snapshot"):
        targets.resolve_offline(snap, ["user@0.service"])
    with pytest.raises(UsageError, match="pid 99 is not in the snapshot"):
        targets.resolve_offline(snap, [], [99])


def test_classify():
    assert targets.classify(["12", "nginx.service", "a.scope", "x.socket", "m.mount", "ovs-vswitchd", "a.b"],
                            [3]) == ([3, 12], ["ovs-vswitchd", "a.b"], ["nginx.service", "a.scope", "x.socket",
                                                                          "m.mount"])


def _many(fake, n):
    for pid in range(1000, 1000 + n):
        if pid % 7 == 0:
            _make(fake, pid, f"z{pid}", state="Z (zombie)", vm=False)
        elif pid % 11 == 0:
            _make(fake, pid, f"g{pid}", files={"limits": None})
        else:
            _make(fake, pid, f"p{pid}")
    return list(range(1000, 1000 + n)) + [99999]  # and one that never existed


def _expected(pids):
    ok = [p for p in pids if p != 99999 and p % 7 and p % 11]
    return ok, {"gone": sum(1 for p in pids if p == 99999 or (p % 7 and not p % 11)),
                "no_mm": sum(1 for p in pids if p != 99999 and not p % 7), "denied": 0}


@pytest.mark.parametrize("parallel", [True, False])
def test_read_many_same_answer_either_way(fake, monkeypatch, parallel):
    from coredoctor.snapshot.proc import batch
    monkeypatch.setattr(batch, "PARALLEL_MIN", 10)
    monkeypatch.setattr(batch, "_idle_cpus", lambda: 2.0)
    monkeypatch.setenv("COREDOCTOR_DISABLE", "pidfd,ptrace" + ("" if parallel else ",parallel"))
    pids = _many(fake, 60)
    forked = []
    real_fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forked.append(1) or real_fork())
    procs, skipped = batch.read_many(pids, proc.read_process)
    ok, counts = _expected(pids)
    assert list(procs) == ok and skipped == counts
    assert procs[1002]["comm"] == "p1002" and procs[1002]["unit"] == "p1002.service"
    assert bool(forked) is parallel


def test_read_many_survives_a_dead_forked_reader(fake, monkeypatch):
    from coredoctor.snapshot.proc import batch
    monkeypatch.setattr(batch, "PARALLEL_MIN", 10)
    monkeypatch.setattr(batch, "_idle_cpus", lambda: 2.0)
    pids = _many(fake, 40)
    parent = os.getpid()

    def read(pid):
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)  # the forked reader is killed mid-read
        return proc.read_process(pid)
    procs, skipped = batch.read_many(pids, read)
    ok, counts = _expected(pids)
    assert list(procs) == ok and skipped == counts


def test_runnable_now_from_loadavg():
    from coredoctor.snapshot.proc import batch
    assert batch._runnable("0.35 0.85 0.99 2/82 25456\n") == 2
    assert batch._runnable("9.00 9.00 9.00 1/300 7") == 1
    for bad in ("", "0.1 0.2 0.3", "0.1 0.2 0.3 x/82 1", "0.1 0.2 0.3 2/ 1", "0.1 0.2 0.3 -1/2 1", "\x00" * 9):
        assert batch._runnable(bad) is None, bad


def test_idle_cpus_is_now_not_the_last_minute(monkeypatch):
    """A 1-minute load near 1 left by check's own earlier rounds does not count: what is
    runnable at this moment does (this process included)."""
    from coredoctor.snapshot.proc import batch
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    real_open = open

    def fake_open(path, *a, **k):
        if path == "/proc/loadavg":
            return io.BytesIO(text.encode())
        return real_open(path, *a, **k)
    monkeypatch.setattr("builtins.open", fake_open)
    text = "1.20 1.00 1.00 1/90 123\n"
    assert batch._idle_cpus() == 1.0  # the other CPU is idle: fork
    text = "1.20 1.00 1.00 3/90 123\n"
    assert batch._idle_cpus() == -1.0
    text = "garbage"
    assert batch._idle_cpus() == pytest.approx(2 - 1 - 1.2)  # the load average, as before


def test_ptrace_eligibility_is_one_rule(monkeypatch):
    from coredoctor.snapshot.proc import dumpability
    root, caps = [0, 0, 0, 0], 0x1FF
    assert dumpability.ptrace_eligible(root, root, caps, caps, True)
    assert not dumpability.ptrace_eligible([0, 0, 1000, 0], root, caps, caps, True)  # a saved uid that is not 0
    assert not dumpability.ptrace_eligible(root, [0, 5, 0, 0], caps, caps, True)
    assert not dumpability.ptrace_eligible(root, root, caps | 0x200, caps, True)  # a capability the probe lacks
    assert not dumpability.ptrace_eligible(root, root, caps, None, True)
    assert not dumpability.ptrace_eligible(root, root, caps, caps, False)  # another user namespace
    assert not dumpability.ptrace_eligible(root, root, caps, caps, None)
    monkeypatch.setenv("COREDOCTOR_DISABLE", "ptrace")
    assert dumpability.by_ptrace([(os.getpid(), root, root, 0, True)]) == {}
