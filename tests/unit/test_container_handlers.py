"""kernel/container_handlers.py: what a pipe helper is told about, and does with, a crash of a
containerized process (format_corename() specifiers; systemd-coredump and apport rows)."""

from coredoctor.kernel import container_handlers as CH
from coredoctor.kernel import core_pattern


def _w(pattern, proc, snap=None):
    parsed = core_pattern.parse(pattern, True)
    return {"proc": proc, "parsed": parsed, "kind": parsed["kind"], "snap": snap or {}}


CONT = {"pid": 31000, "nspid": [31000, 2], "mnt_ns": "mnt:[9]", "creds": {"uid": [200000] * 4, "gid": [200000] * 4},
        "container": {"runtime": "podman", "id": "ab" * 32}}
HOST = {"pid": 500, "nspid": [500], "creds": {"uid": [0] * 4, "gid": [0] * 4}}


def test_host_process_is_unchanged():
    assert CH.note(_w("|/x %p", HOST), "unknown", "pass", "ev") == ("pass", "ev")


def test_specifiers_in_both_views():
    st, ev = CH.note(_w("|/usr/local/bin/keep %p %P %u %h", CONT), "unknown", "pass", "ev")
    assert st == "pass" and "runs on the host" in ev
    assert "%p=2 (the pid in the crashing task's own pid namespace" in ev
    assert "%P=31000 (the pid in the initial pid namespace" in ev
    assert "%u=200000 (the real uid as the host sees it" in ev and "%h: the crashing task's UTS" in ev
    assert "%g" not in ev


def test_systemd_coredump_forwarding_feature():
    w = _w("|/lib/systemd/systemd-coredump %P %u %g %s %t %c %h", CONT,
           {"container_handler": {"systemd_coredump_forwards": False}})
    st, ev = CH.note(w, "systemd-coredump", "pass", "ev")
    assert st == "pass" and "stores the core on the host" in ev and "lacks it (older than 255)" in ev
    w["snap"] = {"container_handler": {"systemd_coredump_forwards": True}}
    assert "this systemd-coredump has it" in CH.note(w, "systemd-coredump", "pass", "ev")[1]


def test_apport_drops_a_container_crash_without_its_socket():
    pat = "|/usr/share/apport/apport -p%p -s%s -c%c -d%d -P%P -u%u -g%g -F%F -- %E"
    st, ev = CH.note(_w(pat, dict(CONT, container_spec={"apport_socket": False})), "apport", "pass", "ev")
    assert st == "fail" and "without apport support" in ev
    st, ev = CH.note(_w(pat, dict(CONT, container_spec={"apport_socket": True})), "apport", "pass", "ev")
    assert st == "pass" and "forwards it to the container's /run/apport.socket" in ev
    private = dict(HOST, mnt_ns="mnt:[7]")  # a PrivateTmp= service: own mount ns, host pid ns
    st, ev = CH.note(_w(pat, private), "apport", "pass", "ev")
    assert st == "fail" and "separate mount namespace" in ev
    unit = dict(private, cgroup="/system.slice/nginx.service")
    st, ev = CH.note(_w(pat, unit), "apport", "pass", "ev")
    assert st == "pass" and "LP: #1870060" in ev
