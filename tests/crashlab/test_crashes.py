"""crashes: real faults found again in the kernel log, with the right core status and, when the
core is missing or cut, the reason -- from the kernel's own refusal line, from check on a running
instance of the same program, or from what is on the host now (a missing directory)."""
import json
import os
import time

import lab as L

DROP = {"setresgid": [65534] * 3, "setgroups": [], "setresuid": [65534] * 3}


def crashes(*args):
    r = L.coredoctor("crashes", "--json", *args)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "coredoctor.crashes/1" and doc["read"]["kmsg"].startswith("read")
    return {c["pid"]: c for c in doc["crashes"]}


def test_present_missing_and_why(labdir, loud_kernel_log):
    lab, _ = labdir
    cores = L.make_cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    # a process that only shares the name, running since before the crash: no evidence about it
    older = L.Victim({"rlimit_core": [None, None], "comm": "cdlab-nodump"})
    time.sleep(1.5)
    L.kernel_log_room(2)
    dumps = L.Victim({"rlimit_core": [None, None], "comm": "cdlab-dumps"})
    nodump = L.Victim({"rlimit_core": [0, None], "comm": "cdlab-nodump"})
    restarted = None
    try:
        dumps.fault()
        nodump.fault()
        found = crashes("--since", "10 minutes ago")
        assert found[nodump.pid]["likely_reason"]["gate"] is None, found[nodump.pid]["likely_reason"]
        restarted = L.Victim({"rlimit_core": [0, None], "comm": "cdlab-nodump"})  # the same program, started again
        found = crashes("--since", "10 minutes ago")
        a, b = found[dumps.pid], found[nodump.pid]
        assert (a["comm"], a["signal"], a["core"]["status"]) == ("cdlab-dumps", "SIGSEGV", "present")
        assert a["core"]["path"] == f"{cores}/core.cdlab-dumps.{dumps.pid}"
        assert a["core"]["size"] == os.path.getsize(a["core"]["path"]) > 0
        assert a["likely_reason"] is None and "kmsg" in a["sources"]
        assert b["core"]["status"] == "missing"
        assert b["likely_reason"]["gate"] == "rlimit-core" and b["likely_reason"]["instance"] == restarted.pid
        assert any("prlimit" in c or "ulimit" in c or "LimitCORE" in c for c in b["likely_reason"]["fix"]), b
        assert crashes("--since", "2999-01-01T00:00:00Z") == {}
        r = L.coredoctor("crashes", "--since", "10 minutes ago")
        assert r.returncode == 0 and r.stdout.split("\n")[0].endswith(".") and "left a core" in r.stdout.split("\n")[0]
        assert f"cdlab-nodump[{nodump.pid}]: core missing" in r.stdout and "why: rlimit-core" in r.stdout
    finally:
        for v in (older, dumps, nodump, restarted):
            if v:
                v.close()


def test_dropped_privileges_not_dumpable(labdir, loud_kernel_log):
    lab, _ = labdir
    cores = L.make_cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    spec = dict({"rlimit_core": [None, None], "comm": "cdlab-dropped"}, **DROP)
    v = L.Victim(spec)
    again = None
    try:
        L.kernel_log_room(1)
        v.fault()
        again = L.Victim(spec)
        c = crashes("--since", "10 minutes ago")[v.pid]
        assert not os.listdir(cores)
        assert c["core"]["status"] == "missing"
        assert c["likely_reason"]["gate"] == "dumpable" and c["likely_reason"]["instance"] == again.pid
    finally:
        v.close()
        if again:
            again.close()


def test_missing_directory(labdir, loud_kernel_log):
    lab, _ = labdir
    L.set_sysctls({"kernel.core_pattern": f"{lab}/gone/core.%e.%p", "fs.suid_dumpable": 0})
    v = L.Victim({"rlimit_core": [None, None], "comm": "cdlab-nodir"})
    try:
        L.kernel_log_room(1)
        v.fault()
        c = crashes("--since", "10 minutes ago")[v.pid]
        assert c["core"]["status"] == "missing" and c["core"]["path"] == f"{lab}/gone/core.cdlab-nodir.{v.pid}"
        assert c["likely_reason"]["gate"] == "core-dir" and f"{lab}/gone" in c["likely_reason"]["evidence"]
    finally:
        v.close()


def test_truncated_by_rlimit_core_and_fsize(labdir, loud_kernel_log):
    lab, _ = labdir
    cores = L.make_cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    limit = 256 * 1024  # more than a page and the notes, far less than a python's core
    vs = []
    try:
        for key, gate in (("rlimit_core", "rlimit-core"), ("rlimit_fsize", "rlimit-fsize")):
            spec = {key: [limit, None], "comm": f"cdlab-{key[7:]}"}
            if key == "rlimit_fsize":
                spec["rlimit_core"] = [None, None]
            v = L.Victim(spec)
            vs.append(v)
            L.kernel_log_room(1)
            v.fault()
            again = L.Victim(spec)
            vs.append(again)
            c = crashes("--since", "10 minutes ago")[v.pid]
            path = f"{cores}/core.cdlab-{key[7:]}.{v.pid}"
            assert 4096 < os.path.getsize(path) <= limit
            assert (c["core"]["status"], c["core"]["path"]) == ("truncated", path), c["core"]
            assert c["core"]["expected_size"] > c["core"]["size"] == os.path.getsize(path)
            assert c["likely_reason"]["gate"] == gate and c["likely_reason"]["instance"] == again.pid, c
    finally:
        for v in vs:
            v.close()


def test_relative_pattern_known_only_through_a_running_instance(labdir, loud_kernel_log):
    lab, _ = labdir
    cwd = L.make_cores(lab, "cwd")
    L.set_sysctls({"kernel.core_pattern": "core.%p", "fs.suid_dumpable": 0})
    spec = {"rlimit_core": [None, None], "comm": "cdlab-rel", "cwd": cwd}
    v = L.Victim(spec)
    lone = L.Victim({"rlimit_core": [None, None], "comm": "cdlab-lone", "cwd": cwd})
    again = None
    try:
        L.kernel_log_room(2)
        v.fault()
        lone.fault()
        again = L.Victim(spec)
        found = crashes("--since", "10 minutes ago")
        c = found[v.pid]
        assert (c["core"]["status"], c["core"]["path"]) == ("present", f"{cwd}/core.{v.pid}"), c["core"]
        # no running instance: the crashed process's cwd is gone, so unknown (not missing)
        d = found[lone.pid]
        assert os.path.exists(f"{cwd}/core.{lone.pid}")
        assert d["core"]["status"] == "unknown" and "relative" in d["core"]["why"] and d["likely_reason"] is None
    finally:
        for x in (v, lone, again):
            if x:
                x.close()


def test_reason_from_the_kernel_log(saved_sysctls, loud_kernel_log):
    L.set_sysctls({"kernel.core_pattern": "|/nonexistent/helper %p", "fs.suid_dumpable": 0})
    v = L.Victim({"rlimit_core": [1, None], "comm": "cdlab-rl1"})
    try:
        L.kernel_log_room(1)
        v.fault()
        c = crashes()[v.pid]
        assert c["core"]["status"] == "missing" and "kmsg" in c["sources"]
        assert any(e["event"] == "coredump-refused" for e in c["evidence"])
        assert c["likely_reason"]["gate"] == "rlimit-core" and "RLIMIT_CORE" in c["likely_reason"]["evidence"]
    finally:
        v.close()


def test_bad_arguments():
    r = L.coredoctor("crashes", "--since", "yesterday-ish")
    assert r.returncode == 2 and "cannot read the time" in r.stderr and "Traceback" not in r.stderr
    r = L.coredoctor("crashes", "--log", "/nonexistent/kern.log")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_syslog_files_written_by_the_test(labdir, loud_kernel_log):
    """A real crash's kernel line, as rsyslog would have written it into a rotated, gzipped
    kern.log (the test writes the file): one record, one line seen in two places; an older crash
    only in a rotated plain file is found too, and --since leaves it out."""
    import gzip
    import time

    from coredoctor.history.kmsg import read_kmsg
    lab, _ = labdir
    cores = L.make_cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    v = L.Victim({"rlimit_core": [0, None], "comm": "cdlab-syslog"})
    try:
        L.kernel_log_room(1)
        v.fault()
        seg = [e for e in read_kmsg() if e["pid"] == v.pid and e["event"] == "fault"][0]
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime(seg["time"]))
        gz = os.path.join(lab, "kern.log.2.gz")
        with gzip.open(gz, "wt") as f:
            f.write(f"{stamp} cdhost kernel: [ 1234.567890] {seg['line']}\n"
                    f"{stamp} cdhost kernel: [ 1234.567891] unrelated line\n")
        t_old = time.time() - 7200
        old = time.strftime("%b %e %H:%M:%S", time.localtime(t_old))
        plain = os.path.join(lab, "kern.log.1")
        with open(plain, "w") as f:
            f.write(f"{old} cdhost kernel: cdlab-old[4194301]: segfault at 0 ip 0000000000401000 sp "
                    "00007ffc00000000 error 4 in cdlab-old[401000,1000]\n")
        found = crashes("--log", gz, "--log", plain, "--source", "kmsg")
        c = found[v.pid]
        assert set(c["sources"]) == {"kmsg", f"syslog:{gz}"}, c["sources"]
        faults = [e for e in c["evidence"] if e["event"] == "fault"]
        assert len(faults) == 1 and set(faults[0]["sources"]) == {"kmsg", f"syslog:{gz}"}
        assert c["core"]["status"] == "missing"
        o = found[4194301]
        assert o["sources"] == [f"syslog:{plain}"] and o["comm"] == "cdlab-old" and 0 <= t_old - o["time"] < 1.0
        assert 4194301 not in crashes("--log", gz, "--log", plain, "--source", "kmsg", "--since", "10 minutes ago")
    finally:
        v.close()


def test_after_the_seeds_fix_the_old_crash_is_judged_by_its_own_time(labdir, fix_env, loud_kernel_log):
    """The seed's story, after `coredoctor fix --apply`: the daemon that lost its core dropped
    privileges under fs.suid_dumpable=0; the restarted one did so under 2 and is dumpable now.
    Judged by today's sysctls the old crash would have no reason; the fix journal says what
    fs.suid_dumpable was then."""
    lab, _ = labdir
    cores = L.make_cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    spec = dict({"rlimit_core": [None, None], "comm": "cdlab-seed"}, **DROP)
    v = L.Victim(spec)
    again = restarted = None
    try:
        L.kernel_log_room(1)
        v.fault()
        time.sleep(1.1)  # the fix comes after the crash, in whole seconds of the kernel log too
        again = L.Victim(spec)
        r = L.coredoctor("fix", "--pid", str(again.pid), "--apply", "--json")
        assert r.returncode == 0, r.stderr
        done = json.loads(r.stdout)
        assert done["applied"] and L.read_sysctl("fs.suid_dumpable") == "2"
        again.close()
        again = None
        restarted = L.Victim(spec)  # started after the fix: dumpable 2
        t = restarted.check()
        # exact with the pidfd query (6.16+); before it, /proc ownership says "0 or 2"
        assert t["dumps"] is True or t["dumpable"]["candidates"] == [0, 2], t["dumpable"]
        c = crashes("--since", "10 minutes ago")[v.pid]
        assert not os.listdir(cores) and c["core"]["status"] == "missing"
        assert "core_pattern" not in c["core"]  # the pattern did not change: no note about it
        lr = c["likely_reason"]
        assert (lr["gate"], lr["fixed_by"], lr["instance"]) == ("dumpable", done["id"], restarted.pid), lr
        assert "fs.suid_dumpable was 0" in lr["evidence"]
        text = L.coredoctor("crashes", "--since", "10 minutes ago").stdout
        assert f"already changed since by fix {done['id']}" in text, text
    finally:
        for x in (v, again, restarted):
            if x:
                x.close()
