"""Man pages: one per subcommand plus coredoctor(8), the sections bcc's pages use, free of
warnings under groff -man -ww -z, and in step with the argument parser -- both ways: every
option of the parser is on its page, and the hand-written prose (packaging/pages.py) names no
subcommand or option the parser does not have."""

import argparse
import copy
import gzip
import os
import re
import subprocess

import pytest

import gen
import pages

MAN_SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "FILES", "EXAMPLES", "SEE ALSO")


def _sections(roff: str) -> list:
    return [m.group(1).strip('"') for m in re.finditer(r"^\.SH (.+)$", roff, re.M)]


def _section(roff: str, name: str) -> str:
    m = re.search(r"^\.SH \"?%s\"?\n(.*?)(?=^\.SH |\Z)" % re.escape(name), roff, re.M | re.S)
    assert m, f"no {name} section"
    return m.group(1)


def _flags_on_page(roff: str) -> set:
    """The option strings of the OPTIONS section's tagged paragraphs (.TP, then the tag line)."""
    body = _section(roff, "OPTIONS")
    tags = re.findall(r"^\.TP\n(.*)$", body, re.M)
    found = set()
    for t in tags:
        for m in re.finditer(r"\\fB(\\-[^\\]*(?:\\-[^\\]*)*)\\fR", t):
            found.add(m.group(1).replace("\\-", "-"))
    return found


def _parser_flags(p: argparse.ArgumentParser) -> set:
    return {f for o in gen.options(p) for f in o.flags}


def test_one_page_per_subcommand_and_the_sections(dist, parser):
    subs = [n for n, _, _ in gen.subcommands(parser)]
    assert len(subs) >= 7
    want = {"coredoctor.8"} | {f"coredoctor-{n}.8" for n in subs}
    assert set(os.listdir(dist.man)) == want
    for name in want:
        with open(os.path.join(dist.man, name)) as f:
            roff = f.read()
        secs = _sections(roff)
        for s in MAN_SECTIONS:
            assert s in secs, (name, s)
        if name[len("coredoctor-"):-2] in pages.TRACING:
            assert "OVERHEAD" in secs, name
        # the order of the man-pages(7) convention, as bcc's pages have it
        order = [s for s in secs if s in MAN_SECTIONS]
        assert order == [s for s in MAN_SECTIONS if s in order], (name, order)


def test_groff_finds_nothing_to_warn_about(dist):
    for name in sorted(os.listdir(dist.man)):
        r = subprocess.run(["groff", "-man", "-ww", "-z", os.path.join(dist.man, name)],
                           capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)
        # and as man(1) formats it for a terminal (nroff), at 80 columns
        r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", "-rLL=80n", os.path.join(dist.man, name)],
                           capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)


def test_every_option_of_the_parser_is_on_its_page(dist, parser):
    with open(os.path.join(dist.man, "coredoctor.8")) as f:
        top = f.read()
    assert _flags_on_page(top) == _parser_flags(parser)
    for name, help_, sub in gen.subcommands(parser):
        with open(os.path.join(dist.man, f"coredoctor-{name}.8")) as f:
            roff = f.read()
        assert _flags_on_page(roff) == _parser_flags(sub), name
        # the positional arguments are there too, and the subcommand's summary is its NAME line
        for o in gen.options(sub):
            if o.positional:
                assert "\\fI" + o.metavar.replace("-", "\\-") + "\\fR" in _section(roff, "OPTIONS"), (name, o.dest)
        assert f"coredoctor-{name}".replace("-", "\\-") in _section(roff, "NAME")
        # coredoctor(8) lists every command and points at its page
        assert f".TP\n\\fB{name.replace('-', chr(92) + '-')}\\fR\n" in _section(top, "COMMANDS"), name


def test_prose_table_and_parser_name_the_same_subcommands(parser):
    subs = {n for n, _, _ in gen.subcommands(parser)}
    table = set(pages.PAGES) - {"coredoctor"}
    assert subs - table == set(), f"subcommands without prose in packaging/pages.py: {sorted(subs - table)}"
    assert table - subs == set(), f"prose for subcommands the parser does not have: {sorted(table - subs)}"
    for name, prose in pages.PAGES.items():
        for s in pages.REQUIRED:
            assert prose.get(s), (name, s)
        if name in pages.TRACING:
            assert prose.get("OVERHEAD"), name


def _texts(value):
    for item in (value if isinstance(value, list) else [value]):
        yield " ".join(item) if isinstance(item, tuple) else str(item)


def test_prose_names_only_options_and_commands_the_parser_has(parser):
    """An option or a subcommand renamed or removed in cli.py must not live on in an example, a
    description or a SEE ALSO of the hand-written prose."""
    subs = {n: sub for n, _, sub in gen.subcommands(parser)}
    every = _parser_flags(parser) | {f for s in subs.values() for f in _parser_flags(s)}
    examples = 0
    for name, prose in pages.PAGES.items():
        for sec, value in prose.items():
            for text in _texts(value):
                for line in text.split("\n"):
                    # coredoctor-NAME(8) references name real subcommands
                    for m in re.finditer(r"coredoctor-([a-z][a-z-]*)\(8\)", line):
                        assert m.group(1) in subs, (name, sec, line)
                    if not line.startswith("$ "):
                        for m in re.finditer(r"(?<![\w-])--[a-z][\w-]*", line):
                            assert m.group(0) in every, (name, sec, m.group(0))
                        continue
                    words = line[2:].split()
                    prog = [i for i, w in enumerate(words) if w in ("coredoctor", "coredoctor.pyz")]
                    assert prog, (name, line)
                    i = prog[0]
                    assert len(words) > i + 1 and words[i + 1] in subs, (name, line)
                    examples += 1
                    sub = subs[words[i + 1]]
                    args = words[i + 2:]
                    if "--" in args:
                        args = args[:args.index("--")]
                    for w in args:
                        if w.startswith("-") and w != "-":
                            assert w in _parser_flags(sub), (name, line, w)
        if name != "coredoctor":
            assert any(t.startswith("$ coredoctor " + name) or t.startswith("$ sudo coredoctor " + name)
                       or t.startswith("$ python3 coredoctor.pyz " + name)
                       for t in _texts(prose["EXAMPLES"])), name
    assert examples >= 20


def test_a_new_option_flows_into_page_and_completions(parser):
    """What the other engineers' later changes to cli.py do: an option added to a subcommand
    appears on its page and in both completions without an edit in packaging/."""
    p = copy.deepcopy(parser)
    sub = dict((n, s) for n, _, s in gen.subcommands(p))["check"]
    sub.add_argument("--frobnicate-core", metavar="FILE", help="an option added later")
    out = gen.man_pages(p, "9.9", epoch=0)
    assert "--frobnicate-core" in _flags_on_page(out["coredoctor-check.8"])
    assert "--frobnicate-core" not in _flags_on_page(out["coredoctor-snapshot.8"])
    assert "frobnicate" in gen.bash_completion(p) and "frobnicate" in gen.zsh_completion(p)
    assert "--frobnicate-core) COMPREPLY=($(compgen -f" in gen.bash_completion(p)


def test_the_deb_carries_exactly_the_generated_pages(dist):
    mandir = os.path.join(dist.tree, "usr/share/man/man8")
    assert sorted(os.listdir(mandir)) == sorted(n + ".gz" for n in os.listdir(dist.man))
    for n in os.listdir(dist.man):
        with gzip.open(os.path.join(mandir, n + ".gz"), "rt") as g, open(os.path.join(dist.man, n)) as f:
            assert g.read() == f.read(), n


def test_man_renders_every_installed_page_within_80_columns(dist):
    mandir = os.path.join(dist.tree, "usr/share/man/man8")
    for name in sorted(os.listdir(mandir)):
        page = name[:-len(".8.gz")]
        r = subprocess.run(["man", "-l", os.path.join(mandir, name)], capture_output=True, text=True,
                           env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", MAN_KEEP_FORMATTING="0"))
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)
        text = re.sub(r".\x08", "", r.stdout)
        assert text.startswith(page.upper() + "(8)"), name
        assert max(len(ln) for ln in text.splitlines()) <= 80, name
        assert "EXIT STATUS" in text and "SEE ALSO" in text, name


def test_the_parser_is_found_when_its_factory_is_renamed(parser, monkeypatch):
    """cli.py is being reshaped (a dispatch table): without a known factory name, the parser
    main() really parses with is taken (ArgumentParser.parse_args intercepted once)."""
    monkeypatch.setattr(gen, "FACTORY_NAMES", ("no_such_factory",))
    real = argparse.ArgumentParser.parse_args
    p = gen.load_parser()
    assert argparse.ArgumentParser.parse_args is real
    assert [n for n, _, _ in gen.subcommands(p)] == [n for n, _, _ in gen.subcommands(parser)]
    assert _parser_flags(p) == _parser_flags(parser)
