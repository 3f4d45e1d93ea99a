from coredoctor.kernel import dumpable as d


def test_decode_seed_value_204():
    r = d.decode_mm_flags(204)
    assert (r["dumpable"], r["coredump_filter"], r["hex"]) == (0, "00000033", "0xcc")
    assert r["coredump_filter_bits"] == ["ANON_PRIVATE", "ANON_SHARED", "ELF_HEADERS", "HUGETLB_PRIVATE"]


def test_decode_other_values():
    assert d.decode_mm_flags(0xCD)["dumpable"] == 1
    assert d.decode_mm_flags(0xCE)["dumpable"] == 2
    assert d.decode_mm_flags(0xCF)["dumpable"] == 2       # 3.10 sets both bits for SUID_DUMP_ROOT
    assert d.decode_mm_flags(0x800000CD)["upper_bits"] == "0x80000000"


def test_pidfd_mask():
    assert [d.from_pidfd_coredump_mask(x) for x in (4, 2, 8, 0)] == [1, 0, 2, None]


def test_proc_owner_rule():
    assert d.from_proc_owner(65534, 65534, 65534, 65534)[0] == {1}
    assert d.from_proc_owner(0, 0, 65534, 65534)[0] == {0, 2}
    assert d.from_proc_owner(0, 0, 0, 65534)[0] == {0, 2}      # setresgid only: egid tells
    assert d.from_proc_owner(0, 0, 0, 0)[0] == {0, 1, 2}       # root:root cannot tell


def _proc(uid, gid, pid=10, ppid=1, cap_prm="0", exe_stat=None, dumpable=None):
    return {"pid": pid, "ppid": ppid, "comm": f"p{pid}", "exe": "/x", "exe_stat": exe_stat or {},
            "dumpable": {"candidates": dumpable or [0], "value": (dumpable or [0])[0]},
            "creds": {"uid": uid, "gid": gid, "cap_prm": cap_prm, "user": None, "group": None}}


def cause(proc, *others, value=0):
    by = {p["pid"]: p for p in others}
    return d.infer_cause(proc, lambda p: by.get(p.get("ppid")), 0, value)


ROOT = _proc([0] * 4, [0] * 4, pid=1, ppid=0, dumpable=[1])


def test_causes():
    assert cause(_proc([997] * 4, [996] * 4), ROOT)["cause"] == "privilege-change"
    assert cause(_proc([0, 997, 0, 997], [0] * 4))["cause"] == "privilege-change"
    assert cause(_proc([0] * 4, [0] * 4), ROOT)["cause"] == "prctl"
    assert cause(_proc([1000] * 4, [1000] * 4, exe_stat={"setuid": True}), ROOT)["cause"] == "exec"
    assert cause(_proc([997] * 4, [996] * 4, cap_prm="3000"))["cause"] == "privilege-change"
    assert cause(_proc([997] * 4, [996] * 4))["cause"] == "unknown"
    assert cause(_proc([997] * 4, [996] * 4), ROOT, value=1)["cause"] is None


def test_inherited_chain_reports_where_it_began():
    """OVS: the --monitor parent switched to openvswitch, the worker was forked from it."""
    monitor = _proc([997] * 4, [996] * 4, pid=5, ppid=1)
    worker = _proc([997] * 4, [996] * 4, pid=6, ppid=5)
    r = cause(worker, monitor, ROOT)
    # where it began: the monitor (pid 5) switched from its parent's 0:0 (ROOT, pid 1) to 997:996
    assert (r["cause"], r["origin"], r["origin_comm"], r["via"], r["from"], r["to"]) == \
        ("privilege-change", 5, "p5", [5], "0:0", "997:996")
    # a non-dumpable parent whose own cause is unknown: just "inherited"
    orphan_parent = _proc([997] * 4, [996] * 4, pid=5, ppid=0)
    assert cause(worker, orphan_parent)["cause"] == "inherited"


def test_parse_mm_flags_bounds():
    assert d.parse_mm_flags("204") == 204 == d.parse_mm_flags("0xcc") == d.parse_mm_flags(" 0XCC\n")
    assert d.parse_mm_flags(str((1 << 64) - 1)) == (1 << 64) - 1
    for bad, why in (("1" + "0" * 3599, "too long"), ("0x" + "f" * 3600, "too long"),
                     (hex(1 << 64), "does not fit"), (str(1 << 64), "does not fit"), ("-1", "never negative"),
                     ("\u0661\u0662", "not a number"), ("1_000", "not a number"), ("0o17", "not a number"),
                     ("", "not a number"), ("0x", "not a number")):
        try:
            d.parse_mm_flags(bad)
        except ValueError as e:
            assert why in str(e), (bad, str(e))
        else:
            raise AssertionError(f"{bad!r} was accepted")
