"""
systemd unit files, environment files and limits.conf, parsed (pure)
---------------------------------------------------------------------
The texts come from the snapshot (:mod:`coredoctor.snapshot.units`); nothing here touches the
system. Each value keeps the file and the 1-based line it came from, so that an origin can name
``file:line``.

Rules, each from systemd's own manuals:

- unit files (``systemd.syntax(7)``): ``[Section]`` headers; ``#`` and ``;`` start a comment
  line; a line ending in ``\\`` continues on the next (the backslash becomes a space; comment
  lines inside are skipped); ``Key=Value`` with whitespace around the key and value stripped;
  an empty assignment resets a list setting (``Environment=``, ``EnvironmentFile=``,
  ``ExecStart=``, ``SupplementaryGroups=``, ...); for other settings the last assignment wins.
- drop-ins (``systemd.unit(5)`` "Description"): the unit file first, then the ``*.d/*.conf``
  files in lexical order of their names, later ones override.
- specifiers (``systemd.unit(5)`` "Specifiers"): ``%n %N %p %i %I %%`` (the simple ones).
- ``Environment=`` (``systemd.exec(5)``): space-separated, quoted ``VAR=VALUE`` words;
  ``EnvironmentFile=`` (``-`` = may be missing) lines ``VAR=VALUE`` (``#``/``;`` comments,
  quotes), read in order, later files override earlier ones and override ``Environment=``.
- ``ExecStart=`` (``systemd.service(5)`` "Command lines"): prefixes ``@ - : + ! !!``; ``$VAR``
  alone is split into words at whitespace, ``${VAR}`` is replaced as one word's part; ``:``
  turns expansion off.
- limits.conf (``limits.conf(5)``, pam_limits.c ``parse_config_file()``): ``domain type item
  value``; ``/etc/security/limits.conf`` then ``limits.d/*.conf`` in lexical order; a line
  applies when its domain is at least as specific as the one that set the value before
  (user, then ``@group``, then ``%group``, then ``*``); ``core``/``fsize`` values are KiB.
"""

import posixpath
import re
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

__all__ = ["Setting", "parse", "merge", "split_words", "env_file", "environment", "exec_words",
           "specifiers", "limit_value", "limits", "LIST_KEYS", "EXEC_PREFIXES", "unit_paths", "manager_of",
           "unit_key", "norm"]

#: settings whose assignments add to a list (an empty one resets it) -- systemd.exec(5),
#: systemd.service(5)
LIST_KEYS = frozenset(("Environment", "EnvironmentFile", "ExecStart", "ExecStartPre", "ExecStartPost",
                       "SupplementaryGroups", "CapabilityBoundingSet", "AmbientCapabilities",
                       "UnsetEnvironment"))
#: ExecStart= prefixes (systemd.service(5) "Command lines", table 1)
EXEC_PREFIXES = "@-:+!"
MAX_LINES = 20000


class Setting(NamedTuple):
    section: str
    key: str
    value: str
    file: str
    line: int
    text: str  # the line(s) as found, continuation joined with "\n"


def parse(text: str, path: str) -> List[Setting]:
    """Every ``Key=Value`` of one unit file or drop-in, in order."""
    out: List[Setting] = []
    section = ""
    lines = text.split("\n")[:MAX_LINES]
    i = 0
    while i < len(lines):
        start = i
        raw = lines[i]
        i += 1
        s = raw.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1]
            continue
        parts = [raw]
        logical = s
        while logical.endswith("\\") and i < len(lines):
            logical = logical[:-1] + " "
            while i < len(lines):
                nxt = lines[i]
                i += 1
                parts.append(nxt)
                if nxt.strip()[:1] not in ("#", ";"):
                    break  # a comment line inside a continuation is skipped
            logical += nxt.strip() if nxt.strip()[:1] not in ("#", ";") else ""
        if logical.endswith("\\"):
            logical = logical[:-1]
        if "=" not in logical:
            continue
        key, _, value = logical.partition("=")
        key = key.strip()
        if not key:
            continue
        out.append(Setting(section, key, value.strip(), path, start + 1, "\n".join(parts)))
    return out


def merge(files: Sequence[Tuple[str, str]], section: str = "Service") -> Dict[str, List[Setting]]:
    """The effective settings of a unit from ``(path, text)`` in load order (unit file, then its
    drop-ins): key -> the assignments in force (one for single settings: the last; for list
    settings every one after the last empty assignment)."""
    eff: Dict[str, List[Setting]] = {}
    for path, text in files:
        for st in parse(text, path):
            if st.section != section and not (section == "*" and st.section):
                continue
            if st.key in LIST_KEYS:
                if st.value == "":
                    eff[st.key] = []
                else:
                    eff.setdefault(st.key, []).append(st)
            else:
                eff[st.key] = [st]
    return eff


_ESC = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "\"": "\"", "'": "'", "a": "\a", "b": "\b",
        "f": "\f", "v": "\v", "s": " ", "$": "$"}


def split_words(s: str, unescape: bool = True) -> List[str]:
    """Words of a setting: whitespace separates; ``"..."`` and ``'...'`` quote; backslash escapes
    (systemd's ``extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE)``, simplified)."""
    words: List[str] = []
    cur: List[str] = []
    have = False
    quote = ""
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and i + 1 < len(s) and unescape:
                i += 1
                cur.append(_ESC.get(s[i], s[i]))
            else:
                cur.append(c)
        elif c in "\"'":
            quote, have = c, True
        elif c == "\\" and i + 1 < len(s) and unescape:
            i += 1
            cur.append(_ESC.get(s[i], s[i]))
            have = True
        elif c.isspace():
            if have or cur:
                words.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(c)
            have = True
        i += 1
    if have or cur:
        words.append("".join(cur))
    return words


def specifiers(value: str, unit: str) -> str:
    """The simple specifiers of systemd.unit(5): %n %N %p %i %I %%; others are kept as written."""
    name = unit
    base, _, suffix = name.rpartition(".")
    prefix, at, inst = base.partition("@")
    table = {"n": name, "N": base, "p": prefix if at else base, "i": inst, "I": inst, "%": "%"}
    return re.sub(r"%(.)", lambda m: table.get(m.group(1), m.group(0)), value)


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvLine(NamedTuple):
    name: str
    value: str
    file: str
    line: int
    text: str


def env_file(text: str, path: str) -> List[EnvLine]:
    """Assignments of an ``EnvironmentFile=`` file (systemd's ``parse_env_file()``: ``VAR=VALUE``
    lines, ``#``/``;`` comments, single or double quotes, backslash-newline continuation)."""
    out: List[EnvLine] = []
    lines = text.split("\n")[:MAX_LINES]
    i = 0
    while i < len(lines):
        start = i
        s = lines[i]
        i += 1
        raw = [s]
        while s.endswith("\\") and i < len(lines):
            s = s[:-1] + lines[i]
            raw.append(lines[i])
            i += 1
        t = s.strip()
        if not t or t[0] in "#;" or "=" not in t:
            continue
        name, _, val = t.partition("=")
        name = name.strip()
        if name.startswith("export "):
            name = name[len("export "):].strip()
        if not _NAME.match(name):
            continue
        val = val.strip()
        words = split_words(val) if val and val[0] in "\"'" else None
        if words is not None:
            val = "".join(words) if len(words) == 1 else " ".join(words)
        out.append(EnvLine(name, val, path, start + 1, "\n".join(raw)))
    return out


class Var(NamedTuple):
    name: str
    value: str
    file: str             # the file whose line set it (the unit file or drop-in, or the env file)
    line: int
    text: str
    via: Optional[Setting]  # the EnvironmentFile= setting that read the file (None: Environment=)
    overridden: Tuple["Var", ...]  # earlier assignments this one overrides, nearest first


def environment(eff: Dict[str, List[Setting]], env_texts: Dict[str, Optional[str]],
                unit: str) -> Tuple[Dict[str, Var], List[Tuple[Setting, str, bool]]]:
    """The unit's environment: name -> the assignment in force, and each ``EnvironmentFile=``
    as ``(setting, path, missing)``. Order (systemd.exec(5)): ``Environment=`` in order, then
    each ``EnvironmentFile=`` in order, later overriding earlier. *env_texts* holds each file's
    text (None: missing or unreadable)."""
    env: Dict[str, Var] = {}

    def put(v: Var) -> None:
        old = env.get(v.name)
        env[v.name] = v._replace(overridden=((old._replace(overridden=()),) + old.overridden) if old else ())

    for st in eff.get("Environment", []):
        for w in split_words(specifiers(st.value, unit)):
            name, eq, val = w.partition("=")
            if eq and _NAME.match(name):
                put(Var(name, val, st.file, st.line, st.text, None, ()))
    files: List[Tuple[Setting, str, bool]] = []
    for st in eff.get("EnvironmentFile", []):
        for w in split_words(specifiers(st.value, unit)):
            optional = w.startswith("-")
            path = w[1:] if optional else w
            text = env_texts.get(path)
            files.append((st, path, text is None))
            if text is None:
                continue
            for e in env_file(text, path):
                put(Var(e.name, e.value, e.file, e.line, e.text, st, ()))
    return env, files


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class Word(NamedTuple):
    word: str                 # after expansion
    raw: str                  # as written
    names: Tuple[str, ...]    # the variables it came from


def exec_words(value: str, env: Dict[str, str], unit: str) -> Tuple[str, List[Word]]:
    """An ``ExecStart=`` line: its prefixes and its words after specifier and variable expansion
    (a word that is ``$VAR`` alone becomes the words of VAR's value split at whitespace;
    ``${VAR}`` and ``$VAR`` inside a word are replaced in place; unset variables are empty)."""
    v = value.lstrip()
    prefix = ""
    while v and v[0] in EXEC_PREFIXES:
        prefix += v[0]
        v = v[1:]
    out: List[Word] = []
    expand = ":" not in prefix
    for raw in split_words(specifiers(v, unit)):
        if not expand:
            out.append(Word(raw, raw, ()))
            continue
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", raw)
        if m:
            for w in env.get(m.group(1), "").split():
                out.append(Word(w, raw, (m.group(1),)))
            continue
        names = tuple(a or b for a, b in _VAR.findall(raw))
        out.append(Word(_VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), raw), raw, names))
    return prefix, out


def limit_value(value: str) -> Optional[Tuple[Optional[int], Optional[int]]]:
    """``LimitCORE=`` / ``DefaultLimitCORE=`` (systemd.exec(5) "Process Properties"): ``soft:hard``
    or one value for both, bytes with K/M/G/T suffixes (base 1024), ``infinity``; None: unparsable.
    ``None`` in the pair means unlimited."""
    def one(s: str) -> Optional[int]:
        s = s.strip()
        if s in ("infinity", "unlimited"):
            return None
        m = re.fullmatch(r"(\d+)\s*([KMGTPE]?)B?", s, re.I)
        if not m:
            raise ValueError(s)
        return int(m.group(1)) * (1024 ** " KMGTPE".index(m.group(2).upper() or " "))

    try:
        if ":" in value:
            a, b = value.split(":", 1)
            return one(a), one(b)
        x = one(value)
        return x, x
    except ValueError:
        return None


class LimitLine(NamedTuple):
    domain: str
    type: str
    item: str
    value: Optional[int]  # bytes; None = unlimited
    file: str
    line: int
    text: str


_LIMIT_PRI = {"user": 0, "group": 1, "allgroup": 2, "all": 3}


def _lines_of(text: str, path: str) -> Iterator[LimitLine]:
    for n, raw in enumerate(text.split("\n")[:MAX_LINES], 1):
        s = raw.split("#", 1)[0].strip()
        f = s.split()
        if len(f) != 4 or f[1] not in ("soft", "hard", "-"):
            continue
        v = f[3].lower()
        if v in ("unlimited", "infinity", "-1"):
            val: Optional[int] = None
        elif v.isdigit():
            val = int(v) * 1024 if f[2] in ("core", "fsize") else int(v)
        else:
            continue
        yield LimitLine(f[0], f[1], f[2], val, path, n, raw)


def limits(files: Sequence[Tuple[str, str]], user: Optional[str], groups: Sequence[str],
           item: str) -> Dict[str, LimitLine]:
    """The lines that set *item* for *user* (member of *groups*) in limits.conf order: ``{"soft":
    line, "hard": line}`` (either may be missing). pam_limits.c ``parse_config_file()``:
    a user line beats @group, @group beats %group, %group beats *; equal ones: the later."""
    got: Dict[str, Tuple[int, LimitLine]] = {}
    for path, text in files:
        for ln in _lines_of(text, path):
            if ln.item != item:
                continue
            d = ln.domain
            if d == "*":
                pri = _LIMIT_PRI["all"]
            elif d.startswith("@"):
                if d[1:] not in groups:
                    continue
                pri = _LIMIT_PRI["group"]
            elif d.startswith("%"):
                if d[1:] not in groups and d != "%":
                    continue
                pri = _LIMIT_PRI["allgroup"]
            elif d == user:
                pri = _LIMIT_PRI["user"]
            else:
                continue
            for t in (("soft", "hard") if ln.type == "-" else (ln.type,)):
                if t not in got or pri <= got[t][0]:
                    got[t] = (pri, ln)
    return {t: v[1] for t, v in got.items()}


def unit_paths(unit: str) -> Dict[str, Any]:
    """Names to look for: the unit itself, its template (``foo@.service`` for ``foo@bar.service``),
    and the drop-in directories in increasing priority of name (type-wide ``service.d`` first,
    template, then the unit's own) -- systemd.unit(5)."""
    base, _, suffix = unit.rpartition(".")
    names = [unit]
    dropdirs = [f"{suffix}.d"] if suffix else []
    if "@" in base:
        tmpl = base.split("@", 1)[0] + "@." + suffix
        names.append(tmpl)
        dropdirs.append(tmpl + ".d")
    dropdirs.append(unit + ".d")
    return {"names": names, "dropdirs": dropdirs}


def norm(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/"))


def manager_of(by_pid: Dict[int, Dict[str, Any]], proc: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The init of *proc*'s pid namespace when that is not the host's (an nspawn machine's own
    systemd): the nearest ancestor whose innermost pid is 1 at the same depth; None for a
    process of the host's pid namespace (its units are the host's)."""
    depth = len(proc.get("nspid") or [1])
    if depth <= 1:
        return None
    p: Optional[Dict[str, Any]] = proc
    seen = set()
    while p is not None and p["pid"] not in seen:
        seen.add(p["pid"])
        ns = p.get("nspid") or []
        if len(ns) == depth and ns[-1] == 1:
            return p
        p = by_pid.get(p.get("ppid") or 0)
    return None


def unit_key(by_pid: Dict[int, Dict[str, Any]], proc: Dict[str, Any]) -> Optional[str]:
    """The key of *proc*'s unit in the snapshot's ``units`` section: ``MANAGERPID:UNIT`` (0: the host)."""
    unit = proc.get("unit")
    if not unit:
        return None
    m = manager_of(by_pid, proc)
    return f"{m['pid'] if m else 0}:{unit}"
