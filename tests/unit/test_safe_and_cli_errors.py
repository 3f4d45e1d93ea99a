"""render/safe.py escaping, and cli.main()'s last resort: one line, the documented exit code."""
import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from coredoctor import cli
from coredoctor.render.safe import clean, escape

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src")
FIX = os.path.join(os.path.dirname(HERE), "fixtures")


@pytest.mark.parametrize("raw,shown", [
    ("nginx", "nginx"),
    ("a\nb", "a\\nb"), ("a\rb", "a\\rb"), ("a\tb", "a\\tb"),
    ("\x1b[2J", "\\x1b[2J"), ("\x00\x07\x7f", "\\x00\\x07\\x7f"), ("\x9b31m", "\\x9b31m"),
    ("py\udcff", "py\\udcff"), ("\ud800x", "\\ud800x"),
    ("evil\u202egnp.exe", "evil\\u202egnp.exe"), ("line\u2028sep", "line\\u2028sep"),
    ("caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"),          # printable text is left alone
    ("printf 'x\\n'", "printf 'x\\n'"),                            # a backslash is left alone
])
def test_escape(raw, shown):
    assert escape(raw) == shown
    assert escape(raw).encode("ascii", "backslashreplace")  # always encodable
    assert "\n" not in escape(raw) and "\x1b" not in escape(raw)


def test_clean_is_recursive_and_copies():
    obj = {"comm\n": ["a\x1b", ("b\r", 1)], "n": None, "k": {"x": "\udcff"}}
    out = clean(obj)
    assert out == {"comm\\n": ["a\\x1b", ("b\\r", 1)], "n": None, "k": {"x": "\\udcff"}}
    assert obj["comm\n"][0] == "a\x1b"  # the input is not changed


def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_every_subcommand_is_in_the_table():
    sub = next(a for a in cli._parser()._actions if a.dest == "cmd")
    assert set(sub.choices) == set(cli.COMMANDS)


def test_internal_error_is_one_line_naming_type_and_place(monkeypatch):
    def boom(args):
        raise RuntimeError("bad\nsecond line \x1b[2J")
    monkeypatch.setitem(cli.COMMANDS, "explain-flags", boom)
    rc, out, err = _main(["explain-flags", "1"])
    assert rc == cli.EXIT_INTERNAL == 70
    assert err.count("\n") == 1 and err.startswith("coredoctor: internal error: RuntimeError at "), err
    assert "test_safe_and_cli_errors.py:" in err and " in boom: bad\\nsecond line \\x1b[2J" in err


def test_domain_error_is_escaped_and_bounded(monkeypatch):
    from coredoctor.errors import UsageError

    def boom(args):
        raise UsageError("no process named 'x\ny" + "z" * 5000 + "'")
    monkeypatch.setitem(cli.COMMANDS, "explain-flags", boom)
    rc, _, err = _main(["explain-flags", "1"])
    assert rc == 2 and err.count("\n") == 1 and "x\\ny" in err
    assert len(err) <= cli.MAX_ERROR_LINE + 1 and err.rstrip("\n").endswith("...")


def test_recursion_error_is_caught(monkeypatch):
    def deep(args):
        return deep(args)
    monkeypatch.setitem(cli.COMMANDS, "explain-flags", deep)
    rc, _, err = _main(["explain-flags", "1"])
    assert rc == 70 and "RecursionError" in err and err.count("\n") == 1


def test_argparse_errors_stay_exit_2():
    with pytest.raises(SystemExit) as e:
        _main(["check", "--pid", "notanumber"])
    assert e.value.code == 2


def test_text_output_survives_an_ascii_terminal(tmp_path):
    """A comm with a lone surrogate and ESC: escaped by the renderer; on a stdout that can
    encode nothing but ASCII the report still prints (the backstop), and JSON stays exact."""
    with open(os.path.join(FIX, "dropped-suid0.json")) as f:
        snap = json.load(f)
    t = next(p for p in snap["processes"] if p["pid"] == snap["targets"][0])
    t["comm"] = "py\udcff\x1b[2J\n\u00e9"
    p = tmp_path / "s.json"
    p.write_text(json.dumps(snap))
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONIOENCODING="ascii")
    r = subprocess.run([sys.executable, "-m", "coredoctor", "check", "--from", str(p)], capture_output=True,
                       env=env, timeout=60)
    assert r.returncode == 1 and r.stderr == b"", r.stderr
    assert r.stdout.startswith(b"py\\udcff\\x1b[2J\\n\\xe9 (pid 14276): a SIGSEGV now would NOT"), r.stdout[:200]
    r = subprocess.run([sys.executable, "-m", "coredoctor", "check", "--from", str(p), "--json"],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 1
    assert json.loads(r.stdout)["targets"][0]["comm"] == "py\udcff\x1b[2J\n\u00e9"
