"""kernel/cred.py: what each credential syscall does to the ids (kernel/sys.c) and when
commit_creds() resets the dumpable flag (kernel/cred.c)."""
import pytest

from coredoctor.kernel import cred as C

ROOT = {"uid": [0, 0, 0, 0], "gid": [0, 0, 0, 0], "cap_prm": (1 << 41) - 1, "cap_eff": (1 << 41) - 1}
USER = {"uid": [1000, 1000, 1000, 1000], "gid": [1000] * 4, "cap_prm": 0, "cap_eff": 0}
M1 = 0xFFFFFFFF


def test_every_rule_cites_the_kernel():
    for rid, r in C.RULES.items():
        assert r["kernel"] and r["file"] and r["versions"] and r["what"], rid


def test_setuid_with_and_without_cap_setuid():
    new, _, _ = C.apply_syscall("setuid", [65534], ROOT, 0)
    assert new["uid"] == [65534] * 4 and new["cap_prm"] == 0 and new["cap_eff"] == 0
    # without CAP_SETUID only the effective and fs ids move (to the real or saved id)
    u = dict(USER, uid=[1000, 0, 500, 0])
    u["cap_eff"] = 0
    new, _, _ = C.apply_syscall("setuid", [500], u, 0)
    assert new["uid"] == [1000, 500, 500, 500]
    new, _, note = C.apply_syscall("setuid", [7], u, -1)  # EPERM: nothing changes
    assert new["uid"] == u["uid"] and "failed" in note


def test_setreuid_saved_id_rule():
    # ruid set -> suid := new euid
    new, _, _ = C.apply_syscall("setreuid", [1000, 2000], ROOT, 0)
    assert new["uid"] == [1000, 2000, 2000, 2000]
    # only euid, equal to the old real uid -> suid unchanged
    new, _, _ = C.apply_syscall("setreuid", [M1, 0], dict(USER, uid=[0, 1000, 1000, 1000]), 0)
    assert new["uid"] == [0, 0, 1000, 0]
    # only euid, different from the old real uid -> suid follows
    new, _, _ = C.apply_syscall("setreuid", [M1, 3000], ROOT, 0)
    assert new["uid"] == [0, 3000, 3000, 3000]


def test_setresuid_minus_one_unchanged_and_fsuid_follows():
    new, _, _ = C.apply_syscall("setresuid", [M1, 65534, 0xFFFFFFFFFFFFFFFF], ROOT, 0)
    assert new["uid"] == [0, 65534, 0, 65534]
    assert new["cap_eff"] == 0 and new["cap_prm"] == ROOT["cap_prm"]  # euid 0 -> non-0: effective cleared
    back, _, _ = C.apply_syscall("setresuid", [M1, 0, M1], new, 0)
    assert back["cap_eff"] == ROOT["cap_prm"]  # non-0 -> 0: effective restored from permitted
    gid, _, _ = C.apply_syscall("setresgid", [M1, 65534, M1], ROOT, 0)
    assert gid["gid"] == [0, 65534, 0, 65534] and gid["uid"] == [0, 0, 0, 0]


def test_full_drop_clears_permitted_unless_keepcaps():
    new, _, _ = C.apply_syscall("setresuid", [5, 5, 5], ROOT, 0)
    assert new["cap_prm"] == 0
    kept, _, _ = C.apply_syscall("setresuid", [5, 5, 5], dict(ROOT, keep_caps=True), 0)
    assert kept["cap_prm"] == ROOT["cap_prm"] and kept["cap_eff"] == 0


def test_setfsuid_returns_old_and_ignores_disallowed():
    new, _, note = C.apply_syscall("setfsuid", [M1], ROOT, 0)
    assert new["uid"] == [0, 0, 0, 0] and "ignored" in note
    new, _, _ = C.apply_syscall("setfsuid", [65534], ROOT, 0)
    assert new["uid"] == [0, 0, 0, 65534]
    # an unprivileged caller may only pick one of its own ids
    new, _, note = C.apply_syscall("setfsuid", [0], USER, 1000)
    assert new["uid"] == [1000] * 4 and "ignored" in note
    new, _, _ = C.apply_syscall("setfsgid", [1000], dict(USER, gid=[1000, 1000, 1000, 7]), 7)
    assert new["gid"] == [1000] * 4


@pytest.mark.parametrize("field,index", [("uid", 1), ("gid", 1), ("uid", 3), ("gid", 3)])
def test_commit_creds_resets_on_effective_or_fs_change(field, index):
    new = {k: (list(v) if isinstance(v, list) else v) for k, v in ROOT.items()}
    new[field][index] = 42
    resets, why = C.commit_creds(ROOT, new, 0)
    assert resets and "fs.suid_dumpable (0)" in why


def test_commit_creds_real_or_saved_only_does_not_reset():
    new = dict(ROOT, uid=[42, 0, 42, 0])
    assert C.commit_creds(ROOT, new, 0)[0] is False


def test_commit_creds_permitted_growth_resets():
    assert C.commit_creds(USER, dict(USER, cap_prm=1 << 7), 2)[0] is True
    assert C.commit_creds(ROOT, dict(ROOT, cap_prm=0), 2)[0] is False  # dropping is not growing


def test_prctl_set_dumpable():
    assert C.prctl_set_dumpable(4, 0, 0) == 0
    assert C.prctl_set_dumpable(4, 1, 0) == 1
    assert C.prctl_set_dumpable(4, 2, -22) is None  # EINVAL
    assert C.prctl_set_dumpable(15, 1, 0) is None  # PR_SET_NAME


def test_exec_rules():
    assert C.exec_dumpable(USER, USER, 0)[0] == 1
    # pre-exec euid != uid: suid_dumpable even for an ordinary binary
    assert C.exec_dumpable(dict(USER, uid=[1000, 0, 0, 0]), dict(USER, uid=[1000, 0, 0, 0]), 2)[0] == 2
    # set-uid root binary run by a user
    v, why = C.exec_dumpable(USER, dict(USER, uid=[1000, 0, 0, 0]), 0)
    assert v == 0 and "set-id" in why
    # file capabilities: permitted grows
    assert C.exec_dumpable(USER, dict(USER, cap_prm=1 << 12), 0)[0] == 0
    assert C.exec_dumpable(USER, USER, 0, unreadable=True)[0] == 0


def test_setgroups_capset_unshare_setns():
    assert C.apply_syscall("setgroups", [0, 0], ROOT, 0)[0]["uid"] == ROOT["uid"]
    assert C.apply_syscall("capset", [1, 2], ROOT, 0)[0] is None  # read from the kernel
    new, rule, _ = C.apply_syscall("unshare", [C.CLONE_NEWUSER], USER, 0)
    assert rule == "unshare-userns" and C.commit_creds(USER, new, 0)[0] is False
    assert C.apply_syscall("setns", [3, C.CLONE_NEWUSER], USER, 0)[1] == "setns-userns"


def test_exec_creds():
    suid = {"setuid": True, "setgid": False, "uid": 0, "gid": 0, "fcaps": False}
    new = C.exec_creds(dict(USER, uid=[1000, 1000, 7, 1000]), suid, cap_bnd=0xFF)
    assert new["uid"] == [1000, 0, 0, 0] and new["cap_prm"] == 0xFF
    plain = C.exec_creds(dict(USER, uid=[1000, 1000, 7, 1000]), dict(suid, setuid=False))
    assert plain["uid"] == [1000, 1000, 1000, 1000] and plain["cap_prm"] == 0  # saved := effective
    assert C.exec_creds(USER, dict(suid, fcaps=True)) is None
    assert C.exec_creds(ROOT, dict(suid, setuid=False))["cap_prm"] == ROOT["cap_prm"]
