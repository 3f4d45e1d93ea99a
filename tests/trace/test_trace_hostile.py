"""Hostile names under a real `coredoctor trace`: processes that name themselves like trace lines
(prctl(PR_SET_NAME), and exec of a file whose basename is a forged line, newline included) do not
break the tracer, create no event and do not move their own transitions to another pid; a plain
process beside them is traced as usual."""
import os
import shutil

import lab as L
import tracelab as T

NOBODY = 65534
#: what tracefs's text output prints per event (kernel/trace/trace_output.c), forged
FORGED_NAMES = ("x-1 [000] .....: sys_enter_setresuid:", "a: b=c) (1) [1]", "1 (1) [000] ..")
FORGED_FILE = "x-1 (1) [000] ..... 1.0: sys_exit_setresgid -> 0x0\n" \
              "    init-1 (1) [000] ..... 2.0: sys_setresuid(ruid: 0, euid: 0, suid: 0) pid=1 =)"


def _pids(stdout):
    out = {}
    for line in stdout.splitlines():
        w = line.split()
        if len(w) == 3 and w[0] == "pid":
            out[w[1]] = int(w[2])
    return out


def test_forged_names_neither_break_nor_fool_trace(tmp_path, saved_sysctls):
    L.write_sysctl("fs.suid_dumpable", "0")
    d = tmp_path / "bin"
    d.mkdir()
    forged = d / FORGED_FILE
    with open(T.ACTOR) as f:
        forged.write_text(f"#!{T.PY}\n" + f.read())
    os.chmod(forged, 0o755)
    sh = shutil.which("sh")
    a = T.actor("pid:prctl", f"name:{FORGED_NAMES[0]}", f"setresgid:-1,{NOBODY},-1", f"name:{FORGED_NAMES[1]}",
                f"name:{FORGED_NAMES[2]}", f"setresuid:-1,{NOBODY},-1", "exit")
    b = [str(forged), "pid:exec", f"setresgid:-1,{NOBODY},-1", "exit"]
    c = T.actor("pid:plain", f"setresuid:-1,{NOBODY},-1", "exit")
    q = "'"
    script = " & ".join(" ".join(q + x.replace(q, q + '"' + q + '"' + q) + q for x in cmd) for cmd in (a, b, c))
    rc, recs, err, out = T.trace([], [sh, "-c", script + "; wait"], timeout=120)
    assert rc == 0, err
    assert "Traceback" not in err, err
    pids = _pids(out)
    assert set(pids) == {"prctl", "exec", "plain"}, out
    summ = T.of(recs, "summary")
    assert len(summ) == 1, recs  # the tracer ran to its end
    assert summ[0]["reader"] == "raw", summ
    assert summ[0]["undecodable_records"] == 0 and summ[0]["unparsed_lines"] == 0, summ
    sh_pid = T.of(recs, "attach")[0]["pid"]
    mine = {sh_pid, *pids.values()}
    for r in recs:  # no record of a pid the forged lines name (1), or of any other process
        if "pid" in r:
            assert r["pid"] in mine, (r, pids)
    changes = [r for r in recs if r["event"] in ("dumpable-change", "cred-change")]
    got = sorted((r["pid"], r["syscall"], r["args"]) for r in changes)
    assert got == sorted([
        (pids["prctl"], "setresgid", [-1, NOBODY, -1]),
        (pids["prctl"], "setresuid", [-1, NOBODY, -1]),
        (pids["exec"], "setresgid", [-1, NOBODY, -1]),
        (pids["plain"], "setresuid", [-1, NOBODY, -1]),
    ]), changes
    for r in changes:
        assert r["tid"] == r["pid"] and r["ret"] == 0, r
    # each change as the kernel saw it: confirmed from the kernel, not from the forged text
    first = [r for r in changes if r["pid"] == pids["prctl"] and r["syscall"] == "setresgid"][0]
    assert first["creds_after"]["gid"] == [0, NOBODY, 0, NOBODY] and first["before"] == 1 and first["after"] == 0
    ex = [r for r in changes if r["pid"] == pids["exec"]][0]
    assert ex["creds_after"]["gid"] == [0, NOBODY, 0, NOBODY], ex
    pl = [r for r in changes if r["pid"] == pids["plain"]][0]
    assert pl["creds_after"]["uid"] == [0, NOBODY, 0, NOBODY] and pl["before"] == 1 and pl["after"] == 0, pl
    assert pl["stack"], pl  # its user stack is still folded into its event
    for r in (first, ex, pl):
        assert r["confirmed"] is not None and r["confirmed"]["agrees"] in (True, None), r
    # the names are the kernel's: the exec'd file's basename (15 bytes), the prctl'd name
    assert ex["comm"] == FORGED_FILE[:15], ex
    assert first["comm"] in [n[:15] for n in FORGED_NAMES], first


def test_text_fallback_says_so_and_still_traces(saved_sysctls, monkeypatch):
    """Where binary reading is not possible (here: switched off), the text trace_pipe is read,
    and a notice says so and what it means."""
    L.write_sysctl("fs.suid_dumpable", "0")
    monkeypatch.setenv("COREDOCTOR_DISABLE", "raw")
    rc, recs, err, out = T.trace([], T.actor(f"setresgid:-1,{NOBODY},-1", "exit"))
    assert rc == 0, err
    notes = [r["what"] for r in T.of(recs, "notice")]
    assert any(n.startswith("reading the text trace_pipe: binary reading switched off") for n in notes), recs
    assert T.of(recs, "summary")[0]["reader"] == "text"
    ch = T.of(recs, "dumpable-change")
    assert [(r["syscall"], r["args"], r["before"], r["after"]) for r in ch] == [("setresgid", [-1, NOBODY, -1], 1, 0)]
