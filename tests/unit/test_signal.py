import pytest

from coredoctor.kernel.signal import disposition, normalize_signal, sigset_has

NUM = {"SIGSEGV": 11, "SIGABRT": 6, "SIGTERM": 15, "SIGQUIT": 3, "SIGKILL": 9, "SIGBUS": 7}
SEGV = f"{1 << 10:016x}"
NONE = "0" * 16


def m(blocked=NONE, ignored=NONE, caught=NONE):
    return {"blocked": blocked, "ignored": ignored, "caught": caught}


def test_sigset_bits():
    assert sigset_has(SEGV, 11) and not sigset_has(SEGV, 10)


def test_normalize():
    assert normalize_signal("segv", NUM) == "SIGSEGV"
    assert normalize_signal("11", NUM) == "SIGSEGV"
    with pytest.raises(ValueError):
        normalize_signal("SIGNOPE", NUM)


@pytest.mark.parametrize("masks,how,want", [
    (m(), "fault", "pass"),
    (m(ignored=SEGV), "fault", "pass"),          # force_sig resets SIG_IGN
    (m(blocked=SEGV), "fault", "pass"),          # and unblocks
    (m(caught=SEGV), "fault", "unknown"),        # the handler decides
    (m(caught=SEGV, blocked=SEGV), "fault", "pass"),
    (m(), "kill", "pass"),
    (m(ignored=SEGV), "kill", "fail"),           # discarded at generation
    (m(blocked=SEGV), "kill", "fail"),           # stays pending
    (m(caught=SEGV), "kill", "unknown"),
])
def test_disposition_matrix(masks, how, want):
    assert disposition("SIGSEGV", how, NUM, masks)[0] == want


def test_non_dumping_signal():
    assert disposition("SIGTERM", "kill", NUM, m())[0] == "fail"


def test_ptrace_and_init():
    assert disposition("SIGSEGV", "fault", NUM, m(), tracer_pid=77)[0] == "unknown"
    assert disposition("SIGSEGV", "kill", NUM, m(), ns_init=True)[0] == "fail"
    assert disposition("SIGSEGV", "fault", NUM, m(), ns_init=True)[0] == "pass"
    assert disposition("SIGSEGV", "fault", NUM, m(), global_init=True)[0] == "warn"


def test_kill_blocked_in_one_thread_only_is_delivered():
    st, _ = disposition("SIGSEGV", "kill", NUM, m(blocked=SEGV), thread_blocked=[SEGV, NONE])
    assert st == "pass"


def test_alias_is_canonical():
    assert normalize_signal("SIGIOT", dict(NUM, SIGIOT=6)) == "SIGABRT"


def test_init_with_handler_runs_the_handler_for_kill():
    # sig_task_ignored() drops only SIG_DFL signals to an unkillable init
    assert disposition("SIGSEGV", "kill", NUM, m(caught=SEGV), ns_init=True)[0] == "unknown"


def test_the_handler_case_is_a_value_not_a_sentence():
    """Where an installed handler decides, decide() says so as data (the re-raise rule of
    programs.py keys on it); a thread-dependent or traced unknown is not that case."""
    from coredoctor.kernel.signal import decide
    assert decide("SIGSEGV", "fault", NUM, m(caught=SEGV))[:2] == ("unknown", "handler")
    assert decide("SIGSEGV", "kill", NUM, m(caught=SEGV))[:2] == ("unknown", "handler")
    assert decide("SIGSEGV", "kill", NUM, m(caught=SEGV), ns_init=True)[:2] == ("unknown", "handler")
    assert decide("SIGSEGV", "fault", NUM, m(caught=SEGV), tracer_pid=5)[:2] == ("unknown", None)
    assert decide("SIGSEGV", "fault", NUM, m(caught=SEGV), thread_blocked=[SEGV, NONE])[:2] == ("unknown", None)
    assert decide("SIGSEGV", "fault", NUM, m())[1] is None


def test_a_known_reraising_handler_passes():
    from coredoctor.kernel import predicates
    w = {"proc": {"pid": 10, "nspid": [10], "exe": "/usr/sbin/ovs-vswitchd", "sig": m(caught=SEGV)},
         "kernel": {"signals": NUM}, "signal": "SIGSEGV", "how": "fault"}
    r = predicates.signal(w)
    assert r["status"] == "pass" and "re-raise" in r["evidence"]
    w["proc"]["exe"] = "/usr/bin/other"
    assert predicates.signal(w)["status"] == "unknown"
