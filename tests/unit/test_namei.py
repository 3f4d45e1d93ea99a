from coredoctor.kernel import namei as n

ROOTDIR = {"mode": 0o40755, "uid": 0, "gid": 0}
STICKY = {"mode": 0o41777, "uid": 0, "gid": 0}
NOBODY = {"fsuid": 65534, "fsgid": 65534, "groups": [], "cap_eff": "0"}
ROOT = {"fsuid": 0, "fsgid": 0, "groups": [], "cap_eff": "1fffeffffff"}
ROOT_NOCAPS = {"fsuid": 0, "fsgid": 0, "groups": [], "cap_eff": "0"}


def test_owner_group_other():
    assert n.may_access(ROOTDIR, NOBODY, n.MAY_EXEC)
    assert not n.may_access(ROOTDIR, NOBODY, n.MAY_WRITE | n.MAY_EXEC)
    grpdir = {"mode": 0o40770, "uid": 0, "gid": 50}
    assert n.may_access(grpdir, dict(NOBODY, groups=[50]), n.MAY_WRITE | n.MAY_EXEC)
    # the owner class is exclusive: owner bits deny even if "other" would allow
    odd = {"mode": 0o40077, "uid": 65534, "gid": 0}
    assert not n.may_access(odd, NOBODY, n.MAY_EXEC)


def test_capabilities():
    other = {"mode": 0o40700, "uid": 1000, "gid": 1000}
    assert n.may_access(other, ROOT, n.MAY_WRITE | n.MAY_EXEC)       # CAP_DAC_OVERRIDE
    assert not n.may_access(other, ROOT_NOCAPS, n.MAY_WRITE | n.MAY_EXEC)
    # dumpable=2 dumps with fsuid 0 but the task's own capabilities: a root-owned dir is fine
    assert n.may_access(ROOTDIR, dict(NOBODY, fsuid=0), n.MAY_WRITE | n.MAY_EXEC)


def test_sticky_delete():
    assert not n.may_delete(STICKY, {"mode": 0o100600, "uid": 0, "gid": 0}, NOBODY)[0]
    assert n.may_delete(STICKY, {"mode": 0o100600, "uid": 65534, "gid": 0}, NOBODY)[0]
    assert n.may_delete(STICKY, {"mode": 0o100600, "uid": 5, "gid": 0}, ROOT)[0]
