"""crashes: real faults found again in the kernel log, with the right core status and, when the
core is missing, the reason -- from the kernel's own refusal line or from check on a running
instance of the same program."""
import json

import lab as L


def crashes(*args):
    r = L.coredoctor("crashes", "--json", *args)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return {c["pid"]: c for c in json.loads(r.stdout)["crashes"]}


def test_present_missing_and_why(labdir):
    lab, _ = labdir
    cores = L.make_cores(lab)
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%e.%p", "fs.suid_dumpable": 0})
    dumps = L.Victim({"rlimit_core": [None, None], "comm": "cdlab-dumps"})
    nodump = L.Victim({"rlimit_core": [0, None], "comm": "cdlab-nodump"})
    restarted = L.Victim({"rlimit_core": [0, None], "comm": "cdlab-nodump"})  # the same program, running again
    try:
        dumps.fault()
        nodump.fault()
        found = crashes("--since", "10 minutes ago")
        a, b = found[dumps.pid], found[nodump.pid]
        assert (a["comm"], a["signal"], a["core"]["status"]) == ("cdlab-dumps", "SIGSEGV", "present")
        assert a["core"]["path"] == f"{cores}/core.cdlab-dumps.{dumps.pid}" and a["core"]["size"] > 0
        assert a["likely_reason"] is None and "kernel:fault" in a["sources"]
        assert b["core"]["status"] == "missing"
        assert b["likely_reason"]["gate"] == "rlimit-core" and b["likely_reason"]["instance"] == restarted.pid
        assert crashes("--since", "2999-01-01T00:00:00Z") == {}
    finally:
        for v in (dumps, nodump, restarted):
            v.close()


def test_reason_from_the_kernel_log(saved_sysctls):
    L.set_sysctls({"kernel.core_pattern": "|/nonexistent/helper %p", "fs.suid_dumpable": 0})
    v = L.Victim({"rlimit_core": [1, None], "comm": "cdlab-rl1"})
    try:
        v.fault()
        c = crashes()[v.pid]
        assert c["core"]["status"] == "missing" and "kernel:coredump" in c["sources"]
        assert c["likely_reason"]["gate"] == "rlimit-core" and "RLIMIT_CORE" in c["likely_reason"]["evidence"]
    finally:
        v.close()


def test_bad_since():
    r = L.coredoctor("crashes", "--since", "yesterday-ish")
    assert r.returncode == 2 and "cannot read the time" in r.stderr and "Traceback" not in r.stderr
