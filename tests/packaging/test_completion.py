"""Shell completions, in a real bash (complete -p, the completion function through COMP_WORDS,
as readline calls it) with and without the bash-completion package's helpers, and in a real
zsh (syntax, and compinit registering it from the package's vendor-completions directory)."""

import os
import re
import shutil
import subprocess

import pytest

import gen

BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"


def _bash(script: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)


def complete(dist, line: str, helpers: bool = True) -> list:
    """COMPREPLY for the command line `line` (the cursor at its end), computed by the installed
    completion function as bash would: loaded on demand by bash-completion from the package's
    directory (helpers=True), or sourced into a bare bash (helpers=False)."""
    words = line.split(" ")
    arr = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    if helpers:
        load = (f". {BASH_COMPLETION}; __load_completion coredoctor || exit 3; ")
    else:
        load = f". {dist.tree}/usr/share/bash-completion/completions/coredoctor; "
    script = (load + f"COMP_WORDS=({arr}); COMP_CWORD={len(words) - 1}; COMP_LINE={line!r}; "
              f"COMP_POINT={len(line)}; COMP_TYPE=9; COMP_KEY=9; "
              "fn=$(complete -p coredoctor | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p'); "
              "$fn coredoctor \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"; "
              "printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = dict(os.environ, XDG_DATA_DIRS=f"{dist.tree}/usr/share", BASH_COMPLETION_USER_DIR="/nonexistent")
    r = _bash(script, env)
    assert r.returncode == 0, (line, r.stderr)
    return [w for w in r.stdout.split("\n") if w]


@pytest.fixture(autouse=True)
def _need_bash_completion(request):
    if not os.path.exists(BASH_COMPLETION):
        pytest.fail(f"{BASH_COMPLETION} is missing: install bash-completion (run-tests does)")


def test_bash_completion_loads_from_the_package_directory(dist):
    env = dict(os.environ, XDG_DATA_DIRS=f"{dist.tree}/usr/share", BASH_COMPLETION_USER_DIR="/nonexistent")
    r = _bash(f"complete -p coredoctor; . {BASH_COMPLETION}; __load_completion coredoctor && complete -p coredoctor",
              env)
    assert r.returncode == 0, r.stderr
    # not there before bash-completion loads it from <XDG_DATA_DIRS>/bash-completion/completions
    assert r.stdout.strip() == "complete -F _coredoctor coredoctor"
    assert "complete: coredoctor: no completion specification" in r.stderr


@pytest.mark.parametrize("helpers", [True, False])
def test_bash_offers_what_the_parser_has(dist, parser, helpers):
    subs = gen.subcommands(parser)
    assert sorted(complete(dist, "coredoctor ", helpers)) == sorted(n for n, _, _ in subs)
    assert complete(dist, "coredoctor ex", helpers) == ["explain-flags"]
    assert sorted(complete(dist, "coredoctor -", helpers)) == sorted(f for o in gen.options(parser) for f in o.flags)
    for name, _, sub in subs:
        flags = sorted(f for o in gen.options(sub) for f in o.flags)
        if any(gen.value_kind(o) == "command" for o in gen.options(sub) if o.positional):
            flags = sorted(flags + ["--"])  # -- CMD
        assert sorted(complete(dist, f"coredoctor {name} -", helpers)) == flags, name
        # the subcommand is found after global options and other words too
        assert sorted(complete(dist, f"coredoctor {name} --json -", helpers)) == flags, name


def test_bash_completes_values(dist, tmp_path):
    assert sorted(complete(dist, "coredoctor check --how ")) == ["fault", "kill"]
    assert complete(dist, "coredoctor crashes --source j") == ["journal"]
    assert complete(dist, "coredoctor check --signal SIGSEG") == ["SIGSEGV"]
    assert "root" in complete(dist, "coredoctor canary --user ro")
    assert "root" in complete(dist, "coredoctor canary --group ro")
    (tmp_path / "host-snapshot.json").write_text("{}")
    assert complete(dist, f"coredoctor check --from {tmp_path}/host-s") == [f"{tmp_path}/host-snapshot.json"]
    # a pid and a process name of a process running now
    exe = tmp_path / "cd-comp-probe"
    shutil.copy("/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "60"])
    try:
        assert str(proc.pid) in complete(dist, f"coredoctor check --pid {proc.pid}")
        assert str(proc.pid) in complete(dist, f"coredoctor canary --like {str(proc.pid)[:-1]}")
        assert complete(dist, "coredoctor check cd-comp-pr") == ["cd-comp-probe"]
        assert complete(dist, "coredoctor trace --name cd-comp-pr") == ["cd-comp-probe"]
    finally:
        proc.kill()
        proc.wait()
    # trace: -- then a command, then its arguments as files
    assert complete(dist, "coredoctor trace ") == ["--"]
    assert "--" in complete(dist, "coredoctor trace --") and "--name" in complete(dist, "coredoctor trace --")
    assert "ls" in complete(dist, "coredoctor trace -- l")
    assert complete(dist, f"coredoctor trace -- ls {tmp_path}/host-s") == [f"{tmp_path}/host-snapshot.json"]
    # no guesses for a value that is a number or an id
    assert complete(dist, "coredoctor trace --duration ") == []
    assert complete(dist, "coredoctor explain-flags ") == []


ZSH = shutil.which("zsh")


@pytest.mark.skipif(ZSH is None, reason="zsh is not installed (run-tests installs it)")
def test_zsh_completion_parses_and_compinit_registers_it(dist, tmp_path):
    f = os.path.join(dist.tree, "usr/share/zsh/vendor-completions/_coredoctor")
    r = subprocess.run([ZSH, "-n", f], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    script = (f"fpath=({os.path.dirname(f)} $fpath); autoload -Uz compinit; "
              f"compinit -u -d {tmp_path}/zcompdump; print -r -- $_comps[coredoctor]; "
              "autoload +X _coredoctor && whence -w _coredoctor")
    r = subprocess.run([ZSH, "-f", "-c", script], capture_output=True, text=True, env=dict(os.environ, HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["_coredoctor", "_coredoctor: function"], r.stdout


def zsh_complete(dist, tmp_path, line: str, expect: list) -> str:
    """What a real interactive zsh lists for `line` + TAB, read from a pseudo-terminal (zsh/zpty)
    until every expected word is on it or 10 seconds passed."""
    home = tmp_path / f"zsh-{abs(hash(line))}"
    home.mkdir()
    (home / ".zshrc").write_text(
        f"fpath=({dist.tree}/usr/share/zsh/vendor-completions $fpath)\nautoload -Uz compinit\n"
        f"compinit -u -d {home}/zcompdump\nzstyle ':completion:*' list-prompt ''\nLISTMAX=10000\n"
        "PROMPT='%% '\n")
    words = " ".join("'" + w + "'" for w in expect)
    (home / "drive.zsh").write_text(
        "zmodload zsh/zpty\n"
        f"zpty z 'ZDOTDIR={home} TERM=dumb {ZSH} -i'\n"
        f"zpty -w -n z {line!r}$'\\t'\n"
        f"local -a want=({words})\n"
        "out='' w='' chunk=''\n"
        "integer n=0 missing=0\n"
        "while (( n++ < 100 )); do\n"
        "  zpty -r -t z chunk && out+=$chunk || sleep 0.1\n"
        "  missing=0\n"
        "  for w in $want; do [[ $out == *$w* ]] || missing=1; done\n"
        "  (( missing )) || break\n"
        "done\n"
        "print -r -- \"<<<$out>>>\"\n"
        "zpty -d z\n")
    r = subprocess.run([ZSH, "-f", str(home / "drive.zsh")], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, HOME=str(home)))
    m = re.search(r"<<<(.*)>>>", r.stdout, re.S)
    assert m, (r.stdout[-2000:], r.stderr)
    # only what the terminal showed after the line was typed (not the typed line itself)
    return m.group(1).split(line.strip(), 1)[-1]


@pytest.mark.skipif(ZSH is None, reason="zsh is not installed (run-tests installs it)")
def test_zsh_completion_offers_what_the_parser_has(dist, parser, tmp_path):
    """A real zsh, in a pseudo-terminal, lists every subcommand, every long option of check,
    and the choices of --how."""
    subs = [n for n, _, _ in gen.subcommands(parser)]
    out = zsh_complete(dist, tmp_path, "coredoctor ", subs)
    assert [n for n in subs if n not in out] == [], out[-2000:]
    sub = dict((n, s) for n, _, s in gen.subcommands(parser))["check"]
    longs = [fl for o in gen.options(sub) for fl in o.flags if fl.startswith("--")]
    out = zsh_complete(dist, tmp_path, "coredoctor check --", longs)
    assert [fl for fl in longs if fl not in out] == [], out[-2000:]
    # a description from the parser's help text comes along
    assert "every process" in out
    out = zsh_complete(dist, tmp_path, "coredoctor crashes --source sys", ["syslog", "systemd-coredump"])
    assert "syslog" in out and "systemd-coredump" in out and "journal" not in out, out[-2000:]
