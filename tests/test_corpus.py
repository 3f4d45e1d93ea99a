"""The reproducer corpus: every hostile input found (by hand or by a fuzzer), replayed through
the real CLI as a subprocess.

A case is a directory ``tests/corpus/<area>-<short-name>/`` holding ``case.json``::

    {"argv": [...], "exit": N, "why": "one sentence: what input, what broke before"}

and the input files it names. ``{case}`` in any argv word is replaced by the path of a
temporary copy of the case directory. Optional keys: ``"stdin": "FILE"`` (fed to stdin),
``"json": true`` (stdout must parse as JSON), ``"stdout_contains": [...]`` (each must appear
in stdout), ``"stderr_contains": [...]`` (each must appear in the one stderr line).

Asserted for every case: the exit code, at most one line on stderr, no "Traceback" anywhere,
and the optional checks. Cases pass explicit files (``--log``, ``--from``, ``--source``) and
never depend on the host's own logs.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
SRC = os.path.join(os.path.dirname(HERE), "src")
KEYS = {"argv", "exit", "why", "stdin", "json", "stdout_contains", "stderr_contains", "timeout"}


def cases():
    if not os.path.isdir(CORPUS):
        return []
    return sorted(d for d in os.listdir(CORPUS) if os.path.isfile(os.path.join(CORPUS, d, "case.json")))


def test_corpus_is_not_empty():
    assert len(cases()) >= 10, cases()


@pytest.mark.parametrize("name", cases())
def test_case(name, tmp_path):
    src = os.path.join(CORPUS, name)
    with open(os.path.join(src, "case.json")) as f:
        case = json.load(f)
    assert set(case) <= KEYS, f"{name}: unknown keys {set(case) - KEYS}"
    assert isinstance(case["argv"], list) and isinstance(case["exit"], int) and case["why"].strip(), name
    work = str(tmp_path / name)
    shutil.copytree(src, work, symlinks=True)
    argv = [w.replace("{case}", work) for w in case["argv"]]
    env = dict(os.environ, PYTHONPATH=SRC)
    stdin = open(os.path.join(work, case["stdin"]), "rb") if case.get("stdin") else subprocess.DEVNULL
    try:
        r = subprocess.run([sys.executable, "-m", "coredoctor", *argv], stdin=stdin, capture_output=True,
                           env=env, timeout=case.get("timeout", 60), cwd=work)
    finally:
        if case.get("stdin"):
            stdin.close()
    out = r.stdout.decode("utf-8", "backslashreplace")
    err = r.stderr.decode("utf-8", "backslashreplace")
    assert "Traceback" not in out + err, err
    assert r.returncode == case["exit"], (name, r.returncode, err[-2000:])
    lines = err.splitlines()
    assert len(lines) <= 1, f"{name}: {len(lines)} stderr lines: {err[:2000]}"
    if lines:
        assert lines[0].startswith("coredoctor: "), lines[0]
    for needle in case.get("stderr_contains", []):
        assert needle in err, (name, needle, err)
    if case.get("json"):
        json.loads(out)
    for needle in case.get("stdout_contains", []):
        assert needle in out, (name, needle, out[:2000])
