"""coredoctor.runtimes (the table of runtimes that catch SIGSEGV), its snapshot reader's parsers
(environ, maps, ELF markers) and the signal gate reading it; the real programs are in
tests/crashlab/test_runtimes_real.py."""
import os
import shutil
import struct

import pytest

from coredoctor import elf, runtimes as RT
from coredoctor.kernel import predicates
from coredoctor.snapshot.proc import runtime as reader

NUM = {"SIGSEGV": 11, "SIGABRT": 6, "SIGBUS": 7, "SIGQUIT": 3, "SIGFPE": 8, "SIGILL": 4, "SIGTRAP": 5}
SEGV = f"{1 << 10:016x}"
NONE = "0" * 16


def facts(markers, env=None, argv=None, env_known=True):
    return {"markers": list(markers), "env": dict(env or {}), "env_known": env_known,
            "argv": list(argv or []), "error": None}


GO = ["section:.go.buildinfo", "note:Go"]


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize("value,status", [(None, "fail"), ("single", "fail"), ("all", "fail"),
                                          ("system", "fail"), ("2", "fail"), ("none", "fail"),
                                          ("crash", "pass"), ("CRASH", "fail"), ("crash,x", "fail")])
def test_go_gotraceback(value, status):
    env = {} if value is None else {"GOTRACEBACK": value}
    status_, ev, rid, sig = RT.decide(facts(GO, env), "SIGSEGV", "fault")
    assert (status_, rid) == (status, "go")
    assert "signal_unix.go" in ev
    if status == "pass":
        assert sig == "SIGABRT" and "dieFromSignal" in ev
    else:
        assert sig is None and "exits with status 2" in ev and "SetTraceback" in ev


def test_go_without_environ_is_unknown():
    assert RT.decide(facts(GO, env_known=False), "SIGSEGV", "fault")[0] == "unknown"


def test_go_is_detected_by_either_marker_and_not_by_name():
    assert RT.detect(facts(["note:Go"])) == ["go"]
    assert RT.detect(facts(["section:.go.buildinfo"])) == ["go"]
    assert RT.detect(facts([])) == [] and RT.detect({"markers": "note:Go"}) == [] and RT.detect(None) == []


@pytest.mark.parametrize("env,argv,on", [
    ({}, [], True),
    ({"JAVA_TOOL_OPTIONS": "-XX:-CreateCoredumpOnCrash"}, [], False),
    ({"JAVA_TOOL_OPTIONS": "-XX:-CreateCoredumpOnCrash"}, ["-XX:+CreateCoredumpOnCrash"], True),
    ({"JDK_JAVA_OPTIONS": "-XX:+CreateCoredumpOnCrash"}, ["-XX:-CreateCoredumpOnCrash"], False),
    ({"_JAVA_OPTIONS": "-XX:+CreateCoredumpOnCrash"}, ["-XX:-CreateCoredumpOnCrash"], True),
    ({}, ["-XX:+CreateCoredumpOnCrash", "-XX:-CreateCoredumpOnCrash"], False),
])
def test_java_option_order(env, argv, on):
    assert RT.java_coredump_flag(facts(["map:libjvm.so"], env, argv))[0] is on
    status, ev, rid, sig = RT.decide(facts(["map:libjvm.so"], env, argv), "SIGSEGV", "fault")
    assert rid == "java" and status == ("pass" if on else "fail") and "os_posix.cpp" in ev
    assert sig == ("SIGABRT" if on else None)


def test_java_kill_sent_is_left_to_the_handler():
    assert RT.decide(facts(["map:libjvm.so"]), "SIGSEGV", "kill") is None


@pytest.mark.parametrize("env,argv,status", [
    ({"PYTHONFAULTHANDLER": "1"}, [], "pass"),
    ({"PYTHONFAULTHANDLER": ""}, [], "unknown"),        # empty: not set (config_get_env)
    ({}, ["-X", "faulthandler"], "pass"),
    ({}, ["-Xfaulthandler"], "pass"),
    ({}, ["faulthandler"], "unknown"),
    ({}, [], "unknown"),
])
def test_python_faulthandler(env, argv, status):
    st, ev, rid, sig = RT.decide(facts(["map:libpython3"], env, argv), "SIGSEGV", "fault")
    assert (st, rid) == (status, "python") and "faulthandler.c" in ev


def test_rust_node_dotnet():
    assert RT.decide(facts(["symbol:rust_begin_unwind"]), "SIGSEGV", "fault")[0] == "pass"
    assert RT.decide(facts(["symbol:rust_begin_unwind"]), "SIGSEGV", "kill")[0] == "fail"
    assert RT.decide(facts(["map:libnode.so"]), "SIGSEGV", "kill")[0] == "pass"
    st, ev, rid, _ = RT.decide(facts(["map:libcoreclr.so"], {"DOTNET_DbgEnableMiniDump": "1"}), "SIGSEGV",
                               "fault")
    assert (st, rid) == ("pass", "dotnet") and "createdump also writes" in ev


def test_every_row_cites_a_source_and_names_only_known_markers():
    for r in RT.RUNTIMES:
        assert r["source"] and r["detect"]
        for m in r["detect"]:
            assert m.split(":", 1)[0] in ("section", "note", "symbol", "suffix", "map")


def test_a_jvm_in_a_python_process_is_judged_as_the_jvm():
    f = facts(["map:libjvm.so", "map:libpython3"], {"JAVA_TOOL_OPTIONS": "-XX:-CreateCoredumpOnCrash"})
    assert RT.decide(f, "SIGSEGV", "fault")[2] == "java"


# --------------------------------------------------------------------------- the gate


def _world(rt, how="fault", exe="/srv/app"):
    return {"proc": {"pid": 10, "nspid": [10], "exe": exe, "sig": {"blocked": NONE, "ignored": NONE,
                                                                  "caught": SEGV}, "runtime": rt},
            "kernel": {"signals": NUM}, "signal": "SIGSEGV", "how": how}


def test_the_signal_gate_reads_the_runtime():
    assert predicates.signal(_world(facts(GO, {"GOTRACEBACK": "crash"})))["status"] == "pass"
    r = predicates.signal(_world(facts(GO)))
    assert r["status"] == "fail" and "a Go program" in r["evidence"]
    assert predicates.signal(_world(None))["status"] == "unknown"
    assert predicates.signal(_world({"markers": 5}))["status"] == "unknown"   # malformed: no answer


def test_the_origin_and_fix_of_a_go_program():
    from coredoctor.origin import runtimes as ORT
    proc = _world(facts(GO, {"GOTRACEBACK": "all"}))["proc"]
    proc["unit"] = "app.service"
    proc["comm"] = "app"
    t = {"signal": "SIGSEGV", "how": "fault", "gates": [{"id": "signal", "status": "fail"}]}
    found = ORT.find({}, proc, t)
    o = found.origins["signal"]
    assert o["kind"] == "runtime" and o["program"] == "go" and o["text"] == "GOTRACEBACK=all"
    acts = found.fixes[0]["actions"]
    assert acts[0]["kind"] == "dropin" and "Environment=GOTRACEBACK=crash" in acts[0]["content"]
    assert acts[0]["path"] == "/etc/systemd/system/app.service.d/90-coredoctor-runtime.conf"
    t["gates"][0]["status"] = "pass"
    assert ORT.find({}, proc, t).origins == {}


# --------------------------------------------------------------------------- the reader's parsers


def test_parse_environ_keeps_only_named_variables_bounded():
    raw = (b"PATH=/bin\0GOTRACEBACK=crash\0GOTRACEBACK=none\0SECRET=hunter2\0JAVA_TOOL_OPTIONS=" + b"x" * 5000
           + b"\0noequals\0\xff\xfe=1\0")
    env = reader.parse_environ(raw)
    assert env["GOTRACEBACK"] == "crash"                      # the first, as getenv() reads it
    assert len(env["JAVA_TOOL_OPTIONS"]) == RT.ENV_MAX
    assert set(env) <= set(RT.ENV_NAMES) and "SECRET" not in env and "PATH" not in env


def test_map_markers():
    maps = ("7f00-7f01 r-xp 00000000 08:01 12 /usr/lib/jvm/java-17/lib/server/libjvm.so\n"
            "7f02-7f03 r-xp 00000000 08:01 13 /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0\n"
            "7f04-7f05 rw-p 00000000 00:00 0 [heap]\n"
            "7f06-7f07 r-xp 00000000 08:01 14 /tmp/not-libjvm.so (deleted)\n")
    assert reader.map_markers(maps) == ["map:libjvm.so", "map:libpython3"]


def test_argv_words_are_only_the_table_s():
    assert RT.argv_words(["java", "-Dpassword=x", "-XX:-CreateCoredumpOnCrash", "-X", "faulthandler"]) == \
        ["-XX:-CreateCoredumpOnCrash", "-X", "faulthandler"]


def test_catches_fatal():
    assert reader.catches_fatal(SEGV) and not reader.catches_fatal(NONE)
    assert not reader.catches_fatal("zz") and not reader.catches_fatal(None)


def make_elf(sections, notes=()):
    """A minimal ELF64 LE object: named sections (name, type, data) after a shstrtab, a PT_NOTE
    segment holding *notes* ((owner, type, desc))."""
    notebuf = b""
    for owner, ntype, desc in notes:
        name = owner.encode() + b"\0"
        notebuf += struct.pack("<III", len(name), len(desc), ntype)
        notebuf += name + b"\0" * (-len(name) % 4) + desc + b"\0" * (-len(desc) % 4)
    names = b"\0.shstrtab\0" + b"".join(n.encode() + b"\0" for n, _, _ in sections)
    body = bytearray(b"\0" * 64)
    ph_off = len(body)
    body += b"\0" * 56
    note_off = len(body)
    body += notebuf
    offs = []
    for _, _, data in sections:
        offs.append(len(body))
        body += data
    shstr_off = len(body)
    body += names
    sh_off = len(body)
    shdrs = [struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
             struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, shstr_off, len(names), 0, 0, 1, 0)]
    pos = len(b"\0.shstrtab\0")
    for (n, t, data), off in zip(sections, offs):
        shdrs.append(struct.pack("<IIQQQQIIQQ", pos, t, 0, 0, off, len(data), 0, 0, 1, 0))
        pos += len(n) + 1
    body += b"".join(shdrs)
    body[0:64] = (b"\x7fELF\x02\x01\x01" + b"\0" * 9 +
                  struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, ph_off, sh_off, 0, 64, 56, 1, 64, len(shdrs), 1))
    body[ph_off:ph_off + 56] = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(notebuf), len(notebuf), 4)
    return bytes(body)


def _markers_of(tmp_path, data):
    p = tmp_path / "obj"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        sections = [m[8:] for m in RT.MARKERS if m.startswith("section:")]
        symbols = [m[7:] for m in RT.MARKERS if m.startswith("symbol:")]
        notes = [m[5:] for m in RT.MARKERS if m.startswith("note:")]
        suffixes = [m[7:] for m in RT.MARKERS if m.startswith("suffix:")]
        return elf.markers(fd, sections, symbols, notes, suffixes)
    finally:
        os.close(fd)


def test_elf_markers_of_a_synthetic_go_object(tmp_path):
    data = make_elf([(".go.buildinfo", 1, b"\xff Go buildinf:"), (".strtab", 3, b"\0main.main\0rust_begin_unwind\0")],
                    notes=[("Go", 4, b"abc")])
    assert _markers_of(tmp_path, data) == ["note:Go", "section:.go.buildinfo", "suffix:rust_begin_unwind",
                                           "symbol:rust_begin_unwind"]
    # a v0-mangled name ends in it (a suffix, not the symbol); a GNU note is not a Go one
    data = make_elf([(".strtab", 3, b"\0_RNvCsfLfy6EI15iL_7___rustc17rust_begin_unwind\0")],
                    notes=[("GNU", 3, b"\x01" * 20)])
    assert _markers_of(tmp_path, data) == ["suffix:rust_begin_unwind"]
    data = make_elf([(".strtab", 3, b"\0rust_begin_unwindx\0")])
    assert _markers_of(tmp_path, data) == []


def test_elf_markers_of_a_non_elf_and_a_32_bit_object(tmp_path):
    with pytest.raises(elf.NotAnElf):
        _markers_of(tmp_path, b"#!/bin/sh\n")
    assert _markers_of(tmp_path, b"\x7fELF\x01\x01\x01" + b"\0" * 60) == []


@pytest.mark.skipif(not shutil.which("python3"), reason="no python3")
def test_elf_markers_of_this_machine_s_python(tmp_path):
    import sys
    exe = os.path.realpath(sys.executable)
    fd = os.open(exe, os.O_RDONLY)
    try:
        got = elf.markers(fd, [".go.buildinfo"], ["Py_InitializeEx"], ["Go"])
    finally:
        os.close(fd)
    assert "section:.go.buildinfo" not in got and "note:Go" not in got
    # a python linked against libpython exports nothing itself: then the map marker answers
    libpy = [line for line in open("/proc/self/maps") if "libpython3" in line]
    assert "symbol:Py_InitializeEx" in got or libpy


def test_a_real_snapshot_keeps_only_the_named_variables_and_validates():
    """A real process with faulthandler and a secret in its environment: the snapshot's runtime
    record holds the argv words and the one variable of the table, nothing else, and passes
    the snapshot validation of check --from (a broken record does not)."""
    import json
    import subprocess
    import sys
    from coredoctor import snapshot
    from coredoctor.snapshot import validate
    env = dict(os.environ, PYTHONFAULTHANDLER="1", SECRET_TOKEN="hunter2", GOTRACEBACK="crash")
    p = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", "import sys; print('R', flush=True); "
                          "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert p.stdout.readline().strip() == b"R"
        snap = snapshot.take([p.pid], with_parents=False)
    finally:
        p.stdin.close()
        p.wait(10)
        p.stdout.close()
    rt = next(x for x in snap["processes"] if x["pid"] == p.pid)["runtime"]
    assert rt["argv"] == ["-X", "faulthandler"] and rt["env_known"] is True
    assert rt["env"] == {"PYTHONFAULTHANDLER": "1", "GOTRACEBACK": "crash"}
    assert "hunter2" not in json.dumps(snap)
    validate.validate(json.loads(json.dumps(snap)))
    rt["env"]["GOTRACEBACK"] = "x" * 300
    with pytest.raises(validate.Bad, match=r"runtime\.env\.GOTRACEBACK"):
        validate.validate(json.loads(json.dumps(snap)))


def test_the_core_carries_the_signal_the_runtime_re_raises():
    """Go's crash() and HotSpot's os::abort() re-raise as SIGABRT: %s in the core's name is 6,
    whatever signal was asked about; a runtime that re-raises the same signal keeps it."""
    from coredoctor import snapshot
    from coredoctor.kernel import evaluator
    assert RT.core_signal(facts(GO, {"GOTRACEBACK": "crash"}), "SIGSEGV", "fault") == "SIGABRT"
    assert RT.core_signal(facts(GO), "SIGSEGV", "fault") == "SIGSEGV"
    assert RT.core_signal(facts(["map:libpython3"], {"PYTHONFAULTHANDLER": "1"}), "SIGSEGV", "fault") == "SIGSEGV"
    assert RT.core_signal(None, "SIGSEGV", "fault") == "SIGSEGV"
    snap = snapshot.take([os.getpid()], with_parents=False)
    snap["sysctl"]["kernel.core_pattern"] = "/var/crash/core.%p.%s"
    proc = next(p for p in snap["processes"] if p["pid"] == os.getpid())
    proc["sig"]["caught"] = SEGV
    proc["runtime"] = facts(GO, {"GOTRACEBACK": "crash"})
    t = evaluator.evaluate_targets(snap, [os.getpid()])[0]
    sig = snap["kernel"]["signals"]
    assert t["core_destination"]["path"] == f"/var/crash/core.{os.getpid()}.{sig['SIGABRT']}"
    proc["runtime"] = facts(["map:libpython3"], {"PYTHONFAULTHANDLER": "1"})
    t = evaluator.evaluate_targets(snap, [os.getpid()])[0]
    assert t["core_destination"]["path"] == f"/var/crash/core.{os.getpid()}.{sig['SIGSEGV']}"


def test_exe_markers_once_per_file_and_again_when_it_changes(tmp_path):
    """snapshot/proc/runtime.py reads an executable's markers once per file (device, inode,
    size, mtime, ctime): the same answer as coredoctor.elf.markers, and a file written over
    since (same inode, another program) is read again."""
    import sys
    from coredoctor.snapshot.proc import runtime as prt
    want = RT.MARKERS
    secs = [m[8:] for m in want if m.startswith("section:")]
    syms = [m[7:] for m in want if m.startswith("symbol:")]
    notes = [m[5:] for m in want if m.startswith("note:")]
    sufs = [m[7:] for m in want if m.startswith("suffix:")]
    exe = tmp_path / "prog"

    def both():
        fd = os.open(exe, os.O_RDONLY)
        try:
            return prt._exe_markers(fd, secs, syms, notes, sufs), elf.markers(fd, secs, syms, notes, sufs)
        finally:
            os.close(fd)
    for cand in ("/usr/bin/python3", sys.executable, shutil.which("go") or ""):
        if cand and os.path.exists(cand):
            shutil.copy(os.path.realpath(cand), exe)
            first = both()
            if first[1]:
                break
    else:
        pytest.skip("no executable with a runtime marker here")
    assert first[0] == first[1]
    assert both()[0] == first[1]  # from the cache
    ino = os.stat(exe).st_ino
    with open(exe, "r+b") as f:  # another program over the same inode (an in-place upgrade)
        f.write(open(shutil.which("true") or "/bin/true", "rb").read())
        f.truncate()
    assert os.stat(exe).st_ino == ino
    again = both()
    assert again[0] == again[1] != first[1]
