"""The seed's machine: the parts that matter again under Debian 12's own arm64 6.1 kernel
(qemu-system-aarch64, software emulation, ../shared/arm64/run-on-arm64.sh): crashes (the crash lab's
test_crashes.py, the arm64 kernel-log formats and debug.exception-trace=0), the core's notes
(aarch64 NT_PRSTATUS/NT_PRPSINFO), the ptrace probe's syscall, canary/fix and rollback, trace's
syscall events and user stacks against arm64 ELF objects, and the real Open vSwitch seed case
(openvswitch-switch:arm64 in the guest root, ARM64_EXTRA_PKGS). Emulation is 15-30x slower than
the host, so only this subset runs there (about 10 minutes); skips inside the guest are reported
and checked as the 6.1 run does.
"""
import os
import pytest

import test_oldkernel as OK  # the guest runner's stall handling and -rs skip summary parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.realpath(os.environ.get("COREDOCTOR_ARM64",
                                         os.path.join(os.path.dirname(ROOT), "shared", "arm64", "run-on-arm64.sh")))
#: what openvswitch-switch needs in the guest root (setup.sh rebuilds it when missing)
EXTRA_PKGS = "openvswitch-switch"

#: the subset that runs in the arm64 guest: the tests whose kernel side is architecture-specific
#: (times from a run in the guest on a loaded 2-CPU host: about 10 minutes in all)
GUEST_TESTS = (
    "tests/crashlab/test_crashes.py",        # crashes on the arm64 kernel log (7 failed before issue 15)
    "tests/crashlab/test_arch_real.py",       # this architecture's facts: kcmp's number, fault lines
    "tests/crashlab/test_kmsg_real.py",       # the kernel's own lines, as classified
    "tests/crashlab/test_elfcore_real.py",    # NT_PRSTATUS / NT_PRPSINFO of an aarch64 core
    "tests/crashlab/test_canary.py",          # canary: a real fault through the real pattern
    "tests/crashlab/test_fix.py",             # fix and rollback
    "tests/trace/test_trace_real.py",         # tracefs syscall events, user stacks on arm64 ELF
    "tests/trace/test_symbols.py",            # the symbolizer against aarch64 programs and libc
    "tests/daemons/test_ovs_check.py",        # the seed: ovs-vswitchd:arm64, privilege drop
    "tests/daemons/test_ovs_fix.py",          # the seed's fix, canary, restart and rollback
)
#: tests that fail in the arm64 guest today, left out there (and only there) until fixed -- each
#: with what was seen (issue 15). They run on the host and in the 6.1 guest as before.
KNOWN_FAILING: dict = {
    # (empty: the last case, the seed after its fix judged by its own time, was fixed at both of
    # its causes — the kernel log ordered by sequence numbers, not printk's clock, which runs ahead
    # in the emulated guest; and without the pidfd query the dumpable gate split into "0 or 2"
    # keeps which world an observation settled, kernel/evaluator._merge's observed_in)
}
#: not in the guest: the fallback variants (they switch off a fast path 6.1 does not have)
GUEST_DESELECT = "not fallback" + ("".join(f" and not {k}" for k in sorted(KNOWN_FAILING)))

#: every skip the guest may report -> why it is right there; any other skip fails the run
EXPECTED_SKIPS = {
    ("tests/crashlab/test_kmsg_real.py", "the segfault line is x86's show_signal_msg()"):
        "x86's own fault-line rate limit (tests/crashlab/test_arch_real.py proves arm64's line)",
    ("tests/trace/test_trace_real.py", "no writable cgroup hierarchy is mounted"):
        "the guest's init mounts no cgroup2 hierarchy it may write (a unit needs a real cgroup)",
    ("tests/trace/test_symbols.py", "this kernel writes no user stack records"):
        "Debian 12's arm64 6.1 has no CONFIG_USER_STACKTRACE_SUPPORT: the two tracefs userstacktrace "
        "experiments get the event without a stack (the symbolizer's 15 tests run)",
}


@pytest.mark.skipif(os.environ.get("COREDOCTOR_IN_GUEST") == "1", reason="already inside a guest")
def test_suites_under_debian12_arm64_kernel():
    if os.geteuid() != 0:
        pytest.skip("boots a VM and makes real crashes: run as root")
    if not os.path.exists(RUNNER):
        if os.environ.get("CI"):
            pytest.fail(f"{RUNNER} is missing: CI must run the arm64 subset")
        pytest.skip(f"no arm64 runner at {RUNNER} (set COREDOCTOR_ARM64)")
    cmd = (f"export COREDOCTOR_IN_GUEST=1 CI={os.environ.get('CI', '')}; uname -m; uname -r; "
           f"cd {ROOT} && python3 -m pytest -q -rs -p no:cacheprovider -o faulthandler_timeout=240 "
           f"-k '{GUEST_DESELECT}' " + " ".join(GUEST_TESTS))
    env_extra = {"ARM64_EXTRA_PKGS": EXTRA_PKGS, "TIMEOUT": "1500", "MEM": "2G"}
    rc, out, stalls = _run(cmd, env_extra)
    print(out[-6000:])
    for note in stalls:
        print(note)
    assert out.startswith("aarch64\n6.1."), out[-3000:]
    assert rc == 0, out[-6000:] + "".join(stalls)
    assert " passed" in out and " failed" not in out
    skips = OK.guest_skips(out)
    for n, f, reason in skips:
        print(f"arm64 guest skipped {n}: {f}: {reason}")
    unexpected = OK.unexpected_skips(skips, EXPECTED_SKIPS)
    assert not unexpected, f"skips not expected in the arm64 guest: {unexpected}"


def _run(cmd, env_extra):
    """OK._run_guest with this runner (the same stall rule: a guest silent for OK.STALL seconds is
    stopped and run once more)."""
    saved = OK.RUNNER, dict(os.environ)
    OK.RUNNER = RUNNER
    os.environ.update(env_extra)
    try:
        return OK._run_guest(cmd)
    finally:
        OK.RUNNER = saved[0]
        os.environ.clear()
        os.environ.update(saved[1])


def test_subset_names_real_files():
    """The guest list names files that exist (a renamed test must not silently drop out)."""
    missing = [t for t in GUEST_TESTS if not os.path.isfile(os.path.join(ROOT, t))]
    assert not missing, missing
