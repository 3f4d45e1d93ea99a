"""examples/*_example.txt are true: every command of every transcript is run again in the same
real state (examples/scenarios.py sets it up) and its stable parts -- exit status, the verdict
sentence, gate ids and statuses, fix actions, trace events, JSON key skeletons; pids, times,
temp paths and sizes normalized (examples/README.md) -- must equal the recorded ones. And every
README block that shows coredoctor output must match a transcript's stable parts, so the
README's examples cannot drift from the tool either."""
import json
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "examples"))

import scenarios as S  # noqa: E402

README = os.path.join(REPO, "README.md")
#: text that only coredoctor's output contains: a README block holding one must be checked
OUTPUT_MARKS = ("would NOT leave a core", "would leave a core", "Gates, in the kernel's order",
                "Plan (run again", "predicted: ", "dumpable transition(s)", "did not or only in part",
                "made like pid", "rolled back. Restored", "dumpable bits 0-1 = ")

root = pytest.mark.skipif(os.geteuid() != 0, reason="sets sysctls and crashes real processes: run as root")


def recorded(ex):
    with open(ex.path) as f:
        return S.parse(f.read())


def compare(step, old_out, old_status, new_out, new_status):
    """The differences between a recorded and a new output of *step* (empty: they agree)."""
    new_shown = S.shown_output(step, new_out)
    a = S.stable(step.kind, old_out, old_status, step.focus)
    b = S.stable(step.kind, new_shown, new_status, step.focus)
    diffs = [f"{k}: recorded {a.get(k)!r}\n      now {b.get(k)!r}" for k in sorted(set(a) | set(b))
             if a.get(k) != b.get(k)]
    if step.kind.endswith("-json"):
        gone = S.missing_keys(S.keys(json.loads(old_out)), S.keys(json.loads(new_out)))
        if gone:
            diffs.append(f"JSON keys the recorded output had and the new one lacks: {gone}")
    return diffs


@pytest.fixture(scope="module")
def recorded_features():
    """The transcripts were recorded where the kernel answers PIDFD_INFO_COREDUMP (6.16+): the
    exact dumpable value, `via pidfd`. Elsewhere the sources (and so the outputs) differ."""
    r = subprocess.run([sys.executable, "-m", "coredoctor", "snapshot", "--pid", str(os.getpid())],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=S.SRC), timeout=60)
    features = json.loads(r.stdout)["kernel"]["features"]
    if not features.get("pidfd_coredump"):
        pytest.skip("this kernel does not answer PIDFD_INFO_COREDUMP: the transcripts (6.18) show `via pidfd`")


@root
@pytest.mark.parametrize("name", [e.name for e in S.EXAMPLES])
def test_transcript_still_true(name, recorded_features, saved_sysctls):
    ex = S.BY_NAME[name]
    blocks = recorded(ex)
    assert len(blocks) == len(ex.steps), f"{ex.path}: {len(blocks)} blocks for {len(ex.steps)} steps"
    results = S.run_example(ex)  # raises when a sysctl, file or directory was not put back
    problems = []
    for i, (step, (cmd, out, status), r) in enumerate(zip(ex.steps, blocks, results), 1):
        assert status is not None, f"{ex.path}: block {i} has no [exit status N] line"
        if S.norm(cmd) != S.norm(r.shown):
            problems.append(f"block {i}: command {cmd!r} is now {r.shown!r}")
        for d in compare(step, out, status, r.output, r.status):
            problems.append(f"block {i} ({cmd}): {d}")
        if step.kind == "snapshot-file":
            doc = json.loads(r.file or "null")
            assert doc and doc["schema"] == "coredoctor.snapshot/1" and doc["targets"], r.file
    assert not problems, (f"{os.path.relpath(ex.path, REPO)} no longer matches the tool "
                          "(if the change is intended: examples/regenerate " + name + ")\n"
                          + "\n".join(problems))


def readme_blocks():
    with open(README) as f:
        text = f.read()
    return [m.group(1) for m in re.finditer(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)]


def all_steps():
    for ex in S.EXAMPLES:
        for step, (cmd, out, status) in zip(ex.steps, recorded(ex)):
            yield ex, step, cmd, out


def test_readme_examples_match_transcripts():
    """Every README block that shows coredoctor output starts with its command and has the
    stable parts of a transcript's block for the same command."""
    checked, problems = 0, []
    for block in readme_blocks():
        parsed = S.parse(block)
        if not parsed or not block.startswith("# coredoctor "):
            marks = [m for m in OUTPUT_MARKS if m in block]
            if marks:
                problems.append(f"a README block shows coredoctor output ({marks[0]!r}) but does not "
                                f"start with a '# coredoctor ...' command of examples/:\n{block[:300]}")
            continue
        for cmd, out, _ in parsed:
            candidates = [(ex, st, o) for ex, st, c, o in all_steps() if S.norm(c) == S.norm(cmd)]
            if not candidates:
                problems.append(f"README: {cmd!r} is the command of no examples/ transcript")
                continue
            diffs = [compare(st, o, None, out, None) for ex, st, o in candidates]
            if all(diffs):
                problems.append(f"README: {cmd!r} differs from {candidates[0][0].path}: " + "; ".join(diffs[0]))
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 5, f"only {checked} README example blocks were checked"


def test_comparison_can_fail():
    """The stable parts see a changed verdict, gate, action or exit status, and do not see
    other pids, times or temp directories."""
    ex = S.BY_NAME["check"]
    step, (cmd, out, status) = ex.steps[0], recorded(ex)[0]
    assert compare(step, out, status, out, status) == []
    pid = re.search(r"\(pid (\d+)\)", out).group(1)
    other = out.replace(pid, str(int(pid) + 1111)).replace("/tmp/" + S.TMP_PREFIX, "/tmp/" + S.TMP_PREFIX + "x")
    assert compare(step, out, status, other, status) == []
    assert compare(step, out, status, out, 0)
    assert compare(step, out, status, out.replace("FAIL  dumpable", "FAIL  rlimit-core"), status)
    assert compare(step, out, status, out.replace("would NOT leave", "would leave"), status)
    fix = S.BY_NAME["fix"]
    fstep, (fcmd, fout, fstatus) = fix.steps[0], recorded(fix)[0]
    assert compare(fstep, fout, fstatus, fout.replace("fs.suid_dumpable=2\n", "fs.suid_dumpable=1\n"), fstatus)
    assert compare(fstep, fout, fstatus, fout.replace("mkdir -m 1777", "mkdir -m 0755"), fstatus)
    js = S.BY_NAME["check_json"]
    jstep, (jcmd, jout, jstatus) = js.steps[0], recorded(js)[0]
    doc = json.loads(jout)
    doc["targets"][0]["new_key"] = 1  # additions are allowed
    assert compare(jstep, jout, jstatus, json.dumps(doc), jstatus) == []
    del doc["targets"][0]["gates"][0]["kernel_ref"]
    assert compare(jstep, jout, jstatus, json.dumps(doc), jstatus)
    tr = S.BY_NAME["trace"]
    tstep, (tcmd, tout, tstatus) = tr.steps[0], recorded(tr)[0]
    assert compare(tstep, tout, tstatus, re.sub(r"\d\d:\d\d:\d\d\.\d+", "23:59:59.000001", tout), tstatus) == []
    assert compare(tstep, tout, tstatus, tout.replace("dumpable 1 -> 0", "dumpable 1 -> 1"), tstatus)
    assert compare(tstep, tout, tstatus, tout.replace("[kernel agrees: pidfd 1]", "KERNEL DISAGREES"), tstatus)
    assert compare(tstep, tout, tstatus, tout.replace("kernel: no core", "kernel: core"), tstatus)
    cr = S.BY_NAME["crashes"]
    (cstep, cjstep), ((_, cout, cstatus), (_, cjout, cjstatus)) = cr.steps, recorded(cr)
    assert compare(cstep, cout, cstatus, cout.replace("SIGSEGV  missing", "SIGSEGV  unknown", 1), cstatus)
    assert compare(cstep, cout, cstatus, cout.replace("why: rlimit-core", "why: space"), cstatus)
    assert compare(cjstep, cjout, cjstatus, cjout.replace('"gate": "dumpable"', '"gate": null'), cjstatus)
    ca = S.BY_NAME["canary"]
    kstep, (kcmd, kout, kstatus) = ca.steps[2], recorded(ca)[2]
    jkstep, (_, jkout, jkstatus) = ca.steps[1], recorded(ca)[1]
    assert compare(jkstep, jkout, jkstatus, jkout.replace('"agrees": true', '"agrees": false'), jkstatus)
    assert compare(kstep, kout, kstatus, kout.replace("the kernel agrees", "the kernel DISAGREES"), kstatus)
    al = S.BY_NAME["check_all"]
    astep, (acmd, aout, astatus) = al.steps[0], recorded(al)[0]
    assert compare(astep, aout, astatus, aout.replace("blocked at 'dumpable'", "blocked at 'core-dir'"), astatus)
    assert compare(astep, aout, astatus, aout.replace("it is not dumpable", "it is not readable"), astatus)
    # a row cut at the line's width: a pid of another width moves the cut
    row = next(x for x in aout.splitlines() if "since its parent monitor (pid" in x)
    pid = re.search(r"\(pid (\d+)", row).group(1)
    moved = row.replace(f"(pid {pid}", "(pid 1" + pid).rstrip(".")[:-1 - 2] + "..."
    assert compare(astep, aout, astatus, aout.replace(row, moved), astatus) == []
