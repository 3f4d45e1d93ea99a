"""tests/crashlab/lab.py's until() and children(), the wait-for-condition and the /proc children
list that the daemon, unit and nspawn tests share."""

import os
import subprocess
import sys
import time

import pytest

import lab as L


def test_until_returns_the_first_true_value():
    seen = []
    assert L.until(lambda: seen.append(1) or (len(seen) >= 3 and "ok"), "three polls", timeout=5, step=0.01) == "ok"
    assert len(seen) == 3


def test_until_fails_when_the_condition_never_comes():
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="timed out after 0.2 s waiting for nothing"):
        L.until(lambda: None, "nothing", timeout=0.2, step=0.05)
    assert time.monotonic() - t0 >= 0.2
    with pytest.raises(AssertionError, match="state then: 7"):
        L.until(lambda: 0, lambda: "state then: 7", timeout=0, step=0.01)


def test_children_of_a_real_process():
    p = subprocess.Popen([sys.executable, "-c", "import subprocess; subprocess.run(['sleep', '30'])"])
    kids = []
    try:
        kids = L.until(lambda: L.children(p.pid), f"pid {p.pid}'s child", timeout=10, step=0.02)
        with open(f"/proc/{kids[0]}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == p.pid  # its parent is p
    finally:
        for k in kids:  # the sleep, by the pid we saw (before p dies and it is reparented)
            os.kill(k, 9)
        p.kill()
        p.wait()
    assert len(kids) == 1 and L.children(p.pid) == []
