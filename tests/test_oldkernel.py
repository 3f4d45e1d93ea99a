"""The crash lab, the real-daemon test and the CLI tests again, under Debian 12's own 6.1 kernel
(qemu, ../shared/oldkernel/run-on-6.1.sh): no PIDFD_INFO_COREDUMP there, no socket patterns,
pre-6.12 messages. Every scenario must still agree with the kernel, with null (never a wrong
true/false) where the kernel offers no exact view.
"""
import os
import re
import select
import signal
import subprocess
import sys
import time
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.realpath(os.environ.get("COREDOCTOR_OLDKERNEL",
                                         os.path.join(os.path.dirname(ROOT), "shared", "oldkernel", "run-on-6.1.sh")))


# Not in the guest: the fallback tests (they switch off a fast path 6.1 does not have).
GUEST_DESELECT = "not fallback"

#: every skip the guest may report: (test file, words of its reason) -> why it is right on 6.1.
#: Any other skip fails the run: a test that silently stops running there is a lost test.
EXPECTED_SKIPS = {
    ("tests/crashlab/test_crashlab.py", "no socket core_pattern"):
        "socket core_patterns (@/path) are 6.16+: 6.1 has no kernel.core_modes (2 scenarios)",
    ("tests/crashlab/test_socket_real.py", "no socket core_pattern"):
        "the socket lab (every SOCKET_RULES row against a real listener) needs 6.16+ socket patterns",
    ("tests/trace/test_trace_real.py", "no writable cgroup hierarchy is mounted"):
        "the guest's init mounts no cgroup2 hierarchy it may write (a unit needs a real cgroup)",
    ("tests/test_units.py", "no writable cgroup hierarchy is mounted"):
        "the same: targets named by unit need a writable cgroup",
}
#: outside CI a real daemon that is not installed skips (lab.require_installed; in CI it fails,
#: run-tests installs it): openvswitch-switch, systemd-coredump
if not os.environ.get("CI"):
    EXPECTED_SKIPS.update({(f, "is not installed (apt-get install"): "not installed on this host (not CI)"
                           for f in ("tests/daemons/test_journal.py", "tests/daemons/test_ovs_check.py",
                                     "tests/daemons/test_ovs_fix.py", "tests/daemons/test_rsyslog.py",
                                     "tests/daemons/test_systemd_coredump.py", "tests/trace/test_trace_ovs.py")})

_SKIP_LINE = re.compile(r"^SKIPPED \[(\d+)\] ([^\s:]+):\d+: (.*)$", re.M)
_SKIP_COUNT = re.compile(r"\b(\d+) skipped\b")


def guest_skips(out):
    """``[(count, file, reason)]`` from pytest's ``-rs`` summary in *out*; AssertionError when
    they do not add up to the final line's "N skipped" (a summary that could not be read must
    not pass as "no skips")."""
    skips = [(int(n), f, reason.strip()) for n, f, reason in _SKIP_LINE.findall(out)]
    final = [ln for ln in out.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    m = _SKIP_COUNT.search(final[-1]) if final else None
    total = int(m.group(1)) if m else 0
    assert sum(n for n, _, _ in skips) == total, f"skip summary {skips} does not add up to {total} skipped"
    return skips


def unexpected_skips(skips, expected=None):
    expected = EXPECTED_SKIPS if expected is None else expected
    return [s for s in skips if not any(s[1] == f and words in s[2] for f, words in expected)]


@pytest.mark.skipif(os.environ.get("COREDOCTOR_IN_GUEST") == "1", reason="already inside the 6.1 guest")
def test_suites_under_debian12_kernel_6_1():
    if os.geteuid() != 0:
        pytest.skip("boots a VM and makes real crashes: run as root")
    if not os.path.exists(RUNNER):
        if os.environ.get("CI"):
            pytest.fail(f"{RUNNER} is missing: CI must run the 6.1 crash lab")
        pytest.skip(f"no 6.1 runner at {RUNNER} (set COREDOCTOR_OLDKERNEL)")
    # faulthandler_timeout: a test still running after 240 s prints every thread's stack (a test
    # takes seconds there; for a guest that goes silent altogether see _run_guest)
    cmd = (f"export COREDOCTOR_IN_GUEST=1; uname -r; cat /proc/sys/kernel/core_modes 2>/dev/null; "
           f"cd {ROOT} && {sys.executable} -m pytest -q -rs -p no:cacheprovider -o faulthandler_timeout=240 "
           f"-k '{GUEST_DESELECT}' "
           # not tests/unit: pure tests, the same on any kernel, and 700 of them under TCG took the
           # guest past its time limit; the kernel's behaviour is what this run is for
           "tests/crashlab tests/daemons tests/trace tests/test_cli.py tests/test_vanishing.py "
           "tests/test_units.py")
    rc, out, stalls = _run_guest(cmd)
    print(out[-6000:])
    for note in stalls:
        print(note)
        # shown in the warnings summary of a passing run too: how often the guest stalls
        warnings.warn(f"the 6.1 guest stalled and was run again: {note.strip()[:1500]}")
    assert out.startswith("6.1."), out[-3000:]  # the guest's stdout comes first
    assert rc == 0, out[-6000:] + "".join(stalls)
    assert " passed" in out and " failed" not in out
    skips = guest_skips(out)
    for n, f, reason in skips:
        print(f"guest skipped {n}: {f}: {reason}")
    assert not unexpected_skips(skips), f"skips not expected in the 6.1 guest: {unexpected_skips(skips)}"


SAMPLE = """\
........s.....
=========================== short test summary info ============================
SKIPPED [3] tests/crashlab/test_crashlab.py:195: this kernel has no socket core_pattern (kernel.core_modes lacks 'socket', 6.16+)
SKIPPED [1] tests/unit/test_elf.py:14: needs gcc and binutils (apt-get install gcc)
410 passed, 4 skipped, 38 deselected in 431.20s (0:07:11)
"""


def test_guest_skip_summary_is_read_and_checked():
    """The parser the guest run relies on, on a recorded summary (and on ones that must fail)."""
    skips = guest_skips(SAMPLE)
    assert [(n, f) for n, f, _ in skips] == [(3, "tests/crashlab/test_crashlab.py"), (1, "tests/unit/test_elf.py")]
    only_socket = {("tests/crashlab/test_crashlab.py", "no socket core_pattern"): "6.16+"}
    assert unexpected_skips(skips, only_socket) == [skips[1]]
    assert unexpected_skips(skips, {**only_socket, ("tests/unit/test_elf.py", "needs gcc"): "-"}) == []
    with pytest.raises(AssertionError, match="does not add up"):
        guest_skips(SAMPLE.replace("4 skipped", "5 skipped"))
    assert guest_skips("12 passed in 3.0s") == []


#: seconds without a byte from the guest after which it is taken as stalled (a guest test takes
#: seconds, the slowest under a minute; the whole run about 8 minutes)
STALL = 360


def _run_guest(cmd, attempts=2):
    """Run *cmd* in the 6.1 guest; ``(rc, output, stall_notes)``. A guest that prints nothing for
    STALL seconds is stopped (its qemu gets SIGTERM, and the runner then prints the guest
    console's tail) and the run is started again, once: twice in this project's history the
    whole emulated guest went silent mid-run (no test output, no faulthandler dump, qemu
    spinning) -- a stall of the emulator or the guest kernel, not a test's verdict. Test failures
    are never retried, and a second stall fails."""
    notes = []
    rc, out = 124, ""
    for attempt in range(1, attempts + 1):
        env = dict(os.environ, TIMEOUT="2700", MEM="2G")
        p = subprocess.Popen(["bash", RUNNER, cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        bufs = {p.stdout.fileno(): [], p.stderr.fileno(): []}
        open_fds, last, stalled = set(bufs), time.monotonic(), False
        while open_fds:
            ready, _, _ = select.select(list(open_fds), [], [], 10)
            for fd in ready:
                b = os.read(fd, 65536)
                if not b:
                    open_fds.discard(fd)
                else:
                    bufs[fd].append(b)
                    last = time.monotonic()
            if not ready and not stalled and time.monotonic() - last > STALL:
                stalled = True
                _stop_qemu(p.pid)  # the runner then reports, with the console's tail, and exits
                last = time.monotonic() - STALL + 60
            elif not ready and stalled and time.monotonic() - last > STALL:
                os.kill(p.pid, signal.SIGKILL)
                break
        rc = p.wait()
        so, se = (b"".join(bufs[f.fileno()]).decode("utf-8", "replace") for f in (p.stdout, p.stderr))
        out = so + se
        if not stalled:
            return rc, out, notes
        notes.append(f"\n[attempt {attempt}] the guest printed nothing for {STALL} s and was stopped; the "
                     f"runner said (rc {rc}):\n{out[-3000:]}\n")
    return 124, out, notes


def _stop_qemu(runner):
    """SIGTERM to the runner's `timeout` (it leads its own process group and passes the signal
    on to qemu)."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        if ppid == runner and comm == "timeout":
            os.kill(int(d), signal.SIGTERM)
