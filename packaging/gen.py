"""
Man pages and shell completions, generated from coredoctor's own argument parser
--------------------------------------------------------------------------------
Nothing here copies an option by hand: every option, its metavar, its choices and its help text
come from ``coredoctor.cli``'s ``argparse`` parser, so that an option added, renamed or removed
there flows into ``coredoctor(8)``, ``coredoctor-SUBCOMMAND(8)``, the bash and the zsh
completion at the next build. The prose argparse does not hold (DESCRIPTION, EXIT STATUS,
FILES, OVERHEAD, EXAMPLES, SEE ALSO) is in :mod:`pages`, one entry per page;
``tests/packaging/test_docs.py`` fails when the parser and that table drift apart (a subcommand
without prose, an example naming an option the parser no longer has).

Standard library only (it runs from ``packaging/build-dist`` with the system python3).
"""

import argparse
import datetime
import os
import re
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, "src")

__all__ = ["load_parser", "subcommands", "Option", "options", "man_pages", "bash_completion",
           "zsh_completion", "value_kind", "PROG"]

PROG = "coredoctor"


#: the names coredoctor.cli's parser factory has had or may be given
FACTORY_NAMES = ("_parser", "build_parser", "make_parser", "parser", "get_parser")


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def load_parser(src: str = SRC) -> argparse.ArgumentParser:
    """coredoctor's top-level parser, from the checkout at ``src``.

    The factory is looked up by the names it has had (``_parser`` today); when none is there,
    ``cli.main(['--help'])`` is run with ``ArgumentParser.parse_args`` intercepted, so that a
    renamed factory still yields the parser ``main`` really uses."""
    if src not in sys.path:
        sys.path.insert(0, src)
    from coredoctor import cli  # type: ignore
    for name in FACTORY_NAMES:
        f = getattr(cli, name, None)
        if callable(f):
            try:
                p = f()
            except TypeError:
                continue
            if isinstance(p, argparse.ArgumentParser):
                return p
    real = argparse.ArgumentParser.parse_args

    def grab(self, *a, **k):  # type: ignore[no-untyped-def]
        raise _Captured(self)
    argparse.ArgumentParser.parse_args = grab  # type: ignore[assignment]
    try:
        cli.main(["--help"])
    except _Captured as c:
        return c.parser
    finally:
        argparse.ArgumentParser.parse_args = real  # type: ignore[assignment]
    raise RuntimeError("coredoctor.cli: no argparse parser found (neither a factory nor main())")


def _subparsers_action(p: argparse.ArgumentParser) -> Optional[argparse._SubParsersAction]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a
    return None


def subcommands(p: argparse.ArgumentParser) -> List[Tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the parser's order (aliases left out)."""
    sp = _subparsers_action(p)
    if sp is None:
        return []
    helps = {c.dest: (c.help or "") for c in sp._choices_actions}
    out, seen = [], set()
    for name, sub in sp.choices.items():
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        out.append((name, helps.get(name, ""), sub))
    return out


class Option:
    """One argument of a parser, as the documentation and the completions need it."""

    def __init__(self, action: argparse.Action) -> None:
        self.action = action
        self.flags: List[str] = list(action.option_strings)
        self.dest: str = action.dest
        self.takes_value: bool = action.nargs != 0 and not isinstance(
            action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
                     argparse._CountAction, argparse._HelpAction, argparse._VersionAction,
                     argparse._AppendConstAction))
        self.repeatable: bool = isinstance(action, (argparse._AppendAction, argparse._CountAction))
        self.choices: Optional[List[str]] = [str(c) for c in action.choices] if action.choices else None
        self.help: str = "" if action.help in (None, argparse.SUPPRESS) else str(action.help)
        self.positional: bool = not self.flags
        self.nargs = action.nargs
        self.required: bool = bool(action.required)
        self.exits: bool = isinstance(action, (argparse._HelpAction, argparse._VersionAction))

    @property
    def metavar(self) -> str:
        m = self.action.metavar
        if isinstance(m, tuple):
            m = " ".join(m)
        if m:
            return str(m)
        if self.choices:
            return "{" + ",".join(self.choices) + "}"
        return self.dest.upper() if self.flags else self.dest

    @property
    def hidden(self) -> bool:
        return self.action.help == argparse.SUPPRESS


def options(p: argparse.ArgumentParser) -> List[Option]:
    """Every documented argument of one parser (not the subcommand dispatcher itself)."""
    return [Option(a) for a in p._actions
            if not isinstance(a, argparse._SubParsersAction) and a.help != argparse.SUPPRESS]


def value_kind(o: Option) -> str:
    """What a completion offers for an option's value (or a positional): a table keyed by what the
    parser says about the argument, so a new option gets the right completion without an edit
    here. ``none`` offers nothing (a number, a duration, an id)."""
    if o.choices:
        return "choices"
    name = f"{o.metavar} {o.dest}".lower()
    for kind, words in VALUE_KINDS:
        if any(re.search(rf"\b{w}\b", name) for w in words):
            return kind
    return "none"


#: (completion kind, words of the metavar or dest that select it), first match wins
VALUE_KINDS = (
    ("pid", ("pid", "like")),
    ("file", ("file", "output", "from_file", "log", "path")),
    ("user", ("user",)),
    ("group", ("group",)),
    ("signal", ("signal",)),
    ("unit", ("unit",)),
    ("process", ("name", "target")),
    ("command", ("command", "cmd")),
)


# ---------------------------------------------------------------------------------------------
# man pages (roff, the man(7) macros)

def _roff(text: str) -> str:
    """Escape running text for roff: backslashes, dashes, and a leading . or ' on any line."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln) if ln[:1] in (".", "'") else ln for ln in text.split("\n"))


def _b(text: str) -> str:
    return "\\fB" + _roff(text) + "\\fR"


def _i(text: str) -> str:
    return "\\fI" + _roff(text) + "\\fR"


def _synopsis_item(o: Option) -> str:
    if o.positional:
        m = _i(o.metavar)
        if o.nargs in ("*", "?"):
            return f"[{m}\\ ...]" if o.nargs == "*" else f"[{m}]"
        if o.nargs == "+":
            return f"{m}\\ ..."
        return m
    flag = _b(o.flags[0])
    # a long {a,b,c} choice list may break after a comma (roff's \: break point): one
    # unbreakable item wider than the line is a warning (and an overlong line) otherwise
    meta = _i(o.metavar).replace(",", ",\\:")
    item = f"{flag}\\ {meta}" if o.takes_value else flag
    if o.repeatable:
        item += "\\ ..."
    return item if o.required else f"[{item}]"


def _synopsis(words: str, opts: List[Option], top: bool = False) -> List[str]:
    items = [_synopsis_item(o) for o in opts if top or not o.exits]
    head = [f".B {words}", f"{_i('command')} [{_i('options')}]", ".br"] if top else []
    return [".SH SYNOPSIS", ".nh", ".ad l"] + head + [f".B {words}", " ".join(items), ".ad", ".hy"]


def _options_section(opts: List[Option]) -> List[str]:
    out = [".SH OPTIONS"]
    for o in opts:
        if o.positional:
            head = _i(o.metavar)
        else:
            forms = []
            for f in o.flags:
                forms.append(f"{_b(f)} {_i(o.metavar)}" if o.takes_value else _b(f))
            head = ", ".join(forms)
        text = o.help.replace("%(default)s", str(o.action.default)).replace("%(prog)s", PROG)
        extra = []
        if o.choices and not o.positional:
            extra.append("One of " + ", ".join(_b(c) for c in o.choices) + ".")
        if o.repeatable and "repeatable" not in text:
            extra.append("May be given more than once.")
        body = _roff(text[:1].upper() + text[1:]) if text else ""
        if body and not body.endswith((".", ":", "?")):
            body += "."
        out += [".TP", head, " ".join(x for x in [body] + extra if x)]
    return out


def _prose(section: str, value: Any) -> List[str]:
    """A section from the pages table: a list of paragraphs; a (term, text) pair is a .TP item;
    a paragraph starting with '$ ' is an example command (bold, no fill)."""
    out = [f".SH {section}"]
    items: List[Any] = [value] if isinstance(value, str) else list(value)
    first = True
    for item in items:
        if isinstance(item, tuple):
            term, text = item
            out += [".TP", _b(term) if not term.startswith("<") else _i(term.strip("<>")), _roff(text)]
            first = False
            continue
        if item.startswith("$ "):
            cmds = [ln[2:] for ln in item.split("\n") if ln.startswith("$ ")]
            notes = [ln for ln in item.split("\n") if not ln.startswith("$ ")]
            out += [".PP", ".nf", ".RS 4"] + [_b(c) for c in cmds] + [".RE", ".fi"]
            if notes:
                out += [".RS 4", _roff(" ".join(notes)), ".RE"]
            first = True
            continue
        if not first:
            out.append(".PP")
        out.append(_roff(item))
        first = False
    return out


def _see_also(names: List[str]) -> List[str]:
    items = []
    for n in names:
        m = re.fullmatch(r"(.+)\((\w+)\)", n)
        items.append(f".BR {m.group(1)} ({m.group(2)})" if m else f".B {n}")
    return [".SH \"SEE ALSO\""] + [x + ("," if i < len(items) - 1 else "") for i, x in enumerate(items)]


def _header(name: str, version: str, date: str, summary: str) -> List[str]:
    return [f".\\\" Generated by packaging/gen.py from coredoctor's argument parser; do not edit.",
            f".TH {name.upper()} 8 {date} \"coredoctor {version}\" \"System Administration\"",
            ".SH NAME", f"{_roff(name)} \\- {_roff(summary)}"]


SECTIONS = ("DESCRIPTION", "OPTIONS", "EXIT STATUS", "ENVIRONMENT", "FILES", "OVERHEAD", "CAVEATS",
            "EXAMPLES", "SEE ALSO")


def _page(name: str, summary: str, words: str, opts: List[Option], prose: Dict[str, Any],
          version: str, date: str, extra: Optional[List[str]] = None) -> str:
    lines = _header(name, version, date, summary) + _synopsis(words, opts, top=name == PROG)
    for sec in SECTIONS:
        if sec == "OPTIONS":
            if extra:
                lines += extra
            lines += _options_section(opts)
        elif sec == "SEE ALSO":
            lines += _see_also(prose.get("SEE ALSO", []))
        elif sec in prose:
            lines += _prose(sec, prose[sec])
    return "\n".join(lines) + "\n"


def _date(epoch: Optional[int]) -> str:
    t = epoch if epoch is not None else int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0) or None
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc) if t else datetime.datetime.now(
        datetime.timezone.utc)
    return d.strftime("%Y-%m-%d")


def man_pages(p: argparse.ArgumentParser, version: str, epoch: Optional[int] = None,
              table: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, str]:
    """{file name: roff text}: ``coredoctor.8`` and ``coredoctor-SUB.8`` for every subcommand."""
    if table is None:
        sys.path.insert(0, HERE)
        from pages import PAGES
        table = PAGES
    assert table is not None
    date = _date(epoch)
    subs = subcommands(p)
    top = table.get(PROG, {})
    cmds = [".SH COMMANDS"]
    for name, help_, _ in subs:
        cmds += [".TP", _b(name), _roff(help_[:1].upper() + help_[1:]) + (
            "." if help_ and not help_.endswith((".", "?")) else "") + f" See {_b(PROG + '-' + name)}(8)."]
    see = [f"{PROG}-{n}(8)" for n, _, _ in subs] + list(top.get("SEE ALSO", []))
    # the top page lists the commands before its own options
    pages = {f"{PROG}.8": _page(PROG, str(top.get("NAME", p.description or PROG)), PROG, options(p),
                                dict(top, **{"SEE ALSO": see}), version, date, extra=cmds)}
    for name, help_, sub in subs:
        prose = dict(table.get(name, {}))
        see = [f"{PROG}(8)"] + list(prose.get("SEE ALSO", []))
        prose["SEE ALSO"] = see
        summary = str(prose.get("NAME", help_))
        pages[f"{PROG}-{name}.8"] = _page(f"{PROG}-{name}", summary, f"{PROG} {name}", options(sub), prose,
                                           version, date)
    return pages


# ---------------------------------------------------------------------------------------------
# bash

_BASH_VALUES = {
    "pid": 'COMPREPLY=($(compgen -W "$(_coredoctor_pids)" -- "$cur"))',
    "file": 'COMPREPLY=($(compgen -f -- "$cur")); compopt -o filenames 2>/dev/null',
    "user": 'COMPREPLY=($(compgen -u -- "$cur"))',
    "group": 'COMPREPLY=($(compgen -g -- "$cur"))',
    "signal": 'COMPREPLY=($(compgen -A signal -- "$cur"))',
    "unit": 'COMPREPLY=($(compgen -W "$(_coredoctor_units)" -- "$cur"))',
    "process": 'COMPREPLY=($(compgen -W "$(_coredoctor_names)" -- "$cur"))',
    "command": 'COMPREPLY=($(compgen -c -- "$cur"))',
    "none": "COMPREPLY=()",
}


def _sh_words(words: List[str]) -> str:
    for w in words:
        if not re.fullmatch(r"[A-Za-z0-9_.,:+/=-]+", w):
            raise ValueError(f"cannot put {w!r} into a completion word list")
    return " ".join(words)


def _bash_cases(opts: List[Option], indent: str) -> Iterator[str]:
    for o in opts:
        if o.positional or not o.takes_value:
            continue
        kind = value_kind(o)
        act = (f'COMPREPLY=($(compgen -W "{_sh_words(o.choices or [])}" -- "$cur"))' if kind == "choices"
               else _BASH_VALUES[kind])
        yield f"{indent}{'|'.join(o.flags)}) {act}; return ;;"


def bash_completion(p: argparse.ArgumentParser) -> str:
    """The bash completion script (``complete -F _coredoctor coredoctor``)."""
    subs = subcommands(p)
    top = options(p)
    L = ["# bash completion for coredoctor                               -*- shell-script -*-",
         "# Generated by packaging/gen.py from coredoctor's argument parser; do not edit.",
         "",
         "_coredoctor_pids() { local d; for d in /proc/[0-9]*; do printf '%s\\n' \"${d#/proc/}\"; done; }",
         "_coredoctor_names() { cat /proc/[0-9]*/comm 2>/dev/null | sort -u; }",
         "_coredoctor_units() {",
         "    command -v systemctl >/dev/null 2>&1 &&",
         "        systemctl list-units --no-legend --plain --type=service,scope 2>/dev/null |",
         "        while read -r u _; do printf '%s\\n' \"$u\"; done",
         "}",
         "",
         "_coredoctor() {",
         "    local cur prev words cword",
         "    if declare -F _init_completion >/dev/null 2>&1; then",
         "        _init_completion -n = || return",
         "    else",
         "        cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
         "        words=(\"${COMP_WORDS[@]}\") cword=$COMP_CWORD",
         "    fi",
         "    local cmd='' i dashdash=''",
         "    for ((i = 1; i < cword; i++)); do",
         "        case ${words[i]} in",
         "            --) [[ -n $cmd ]] && { dashdash=$i; break; } ;;",
         "            -*) ;;",
         "            *) if [[ -z $cmd ]]; then cmd=${words[i]}; fi ;;",
         "        esac",
         "    done",
         "    case $cmd in",
         "        '')",
         "            case $prev in"]
    L += _bash_cases(top, "                ")
    L += ["            esac",
          "            if [[ $cur == -* ]]; then",
          f'                COMPREPLY=($(compgen -W "{_sh_words([f for o in top for f in o.flags])}" -- "$cur"))',
          "            else",
          f'                COMPREPLY=($(compgen -W "{_sh_words([n for n, _, _ in subs])}" -- "$cur"))',
          "            fi",
          "            ;;"]
    for name, _, sub in subs:
        opts = options(sub)
        pos = [o for o in opts if o.positional]
        flags = [f for o in opts for f in o.flags]
        L.append(f"        {name})")
        if any(value_kind(o) == "command" for o in pos):
            flags.append("--")
            L += ["            if [[ -n $dashdash ]]; then",
                  "                if (( cword == dashdash + 1 )); then COMPREPLY=($(compgen -c -- \"$cur\"))",
                  "                else COMPREPLY=($(compgen -f -- \"$cur\")); compopt -o filenames 2>/dev/null",
                  "                fi",
                  "                return",
                  "            fi"]
        cases = list(_bash_cases(opts, "                "))
        if cases:
            L += ["            case $prev in"] + cases + ["            esac"]
        L += ["            if [[ $cur == -* ]]; then",
              f'                COMPREPLY=($(compgen -W "{_sh_words(flags)}" -- "$cur"))']
        if pos:
            kinds = {value_kind(o) for o in pos} - {"none"}
            kind = "command" if "command" in kinds else (sorted(kinds)[0] if kinds else "none")
            if kind == "command":
                act = 'COMPREPLY=($(compgen -W "--" -- "$cur"))'
            elif kind == "choices":
                act = f'COMPREPLY=($(compgen -W "{_sh_words(pos[0].choices or [])}" -- "$cur"))'
            else:
                act = _BASH_VALUES[kind]
            L += ["            else", f"                {act}"]
        L += ["            fi", "            ;;"]
    L += ["    esac",
          "} &&",
          "    complete -F _coredoctor coredoctor",
          "",
          "# ex: filetype=sh"]
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------
# zsh

_ZSH_VALUES = {
    "pid": "_pids", "file": "_files", "user": "_users", "group": "_groups", "signal": "_signals",
    "unit": "_coredoctor_units", "process": "_coredoctor_names", "command": "_command_names -e",
    "none": " ",
}


def _zsh_desc(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]").replace("'", "'\\''")


def _zsh_specs(opts: List[Option]) -> List[str]:
    specs = []
    for o in opts:
        kind = value_kind(o)
        action = f"({_sh_words(o.choices)})" if o.choices else _ZSH_VALUES[kind]
        if o.positional:
            if kind == "command":
                specs.append("'*::command:_normal'")
            else:
                star = "*" if o.nargs in ("*", "+") else ""
                specs.append(f"'{star}:{o.metavar}:{action}'")
            continue
        desc = _zsh_desc(o.help)
        excl = "(- *)" if o.exits else ("*" if o.repeatable else
                                         ("(" + " ".join(o.flags) + ")" if len(o.flags) > 1 else ""))
        for f in o.flags:
            val = f":{o.metavar.lower()}:{action}" if o.takes_value else ""
            specs.append(f"'{excl}{f}[{desc}]{val}'")
    return specs


def zsh_completion(p: argparse.ArgumentParser) -> str:
    """The zsh completion function (``#compdef coredoctor``), for fpath (vendor-completions)."""
    subs = subcommands(p)
    L = ["#compdef coredoctor",
         "# Generated by packaging/gen.py from coredoctor's argument parser; do not edit.",
         "",
         "_coredoctor_names() { compadd -- ${(f)\"$(cat /proc/[0-9]*/comm 2>/dev/null)\"} }",
         "_coredoctor_units() {",
         "  (( $+commands[systemctl] )) || return 1",
         "  compadd -- ${${(f)\"$(systemctl list-units --no-legend --plain --type=service,scope 2>/dev/null)\"}%% *}",
         "}",
         "",
         "_coredoctor() {",
         "  local curcontext=$curcontext state line ret=1",
         "  typeset -A opt_args",
         "  local -a cmds",
         "  cmds=("]
    for name, help_, _ in subs:
        L.append(f"    '{name}:{_zsh_desc(help_).replace(':', chr(92) + ':')}'")
    L += ["  )",
          "  _arguments -C \\"]
    L += [f"    {s} \\" for s in _zsh_specs(options(p))]
    L += ["    '1:command:->command' \\",
          "    '*::argument:->argument' && ret=0",
          "  case $state in",
          "    command) _describe -t commands 'coredoctor command' cmds && ret=0 ;;",
          "    argument)",
          "      curcontext=${curcontext%:*:*}:coredoctor-$words[1]:",
          "      case $words[1] in"]
    for name, _, sub in subs:
        specs = _zsh_specs(options(sub))
        L.append(f"        {name})")
        L.append("          _arguments -s \\")
        L += [f"            {s} \\" for s in specs]
        L[-1] = L[-1][:-2] + " && ret=0 ;;"
    L += ["      esac ;;",
          "  esac",
          "  return ret",
          "}",
          "",
          "_coredoctor \"$@\""]
    return "\n".join(L) + "\n"
