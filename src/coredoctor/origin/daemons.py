"""
Daemons: the process's own option and the daemon's config line behind a verdict
-------------------------------------------------------------------------------
Knowledge as data, one table per daemon family (:data:`DAEMONS`): how to recognise the program
(exe basename or comm, and the argv), where its configuration is (the default file, the argv
option that names another one, how it includes more), which of its command-line options and
config directives decide a gate, and its own switch as a fix. Each row cites the program's
source (file and function) or its manual.

Pure: :func:`find` reads only the snapshot's ``daemons`` section (written by
:mod:`coredoctor.snapshot.daemonconf`: each matching process's argv and the text of the config
files the table names). The parsers (:func:`statements`) are used by the snapshot layer too, to
follow includes; they never raise on any text.

Keys an origin is given for (gate ids of :mod:`coredoctor.kernel.table`):

- ``dumpable``: the privilege drop (argv option, config directive, or the compiled-in default
  user) when the cause is a credential change and the program does not re-enable dumpability;
- ``rlimit-core``: a daemon's own limit (nginx ``worker_rlimit_core``, OVS's monitor after the
  first core);
- ``core-dir``/``core-file`` for a relative core_pattern: the daemon's own working directory
  (nginx ``working_directory``, squid ``coredump_dir``, haproxy ``chroot``, OVS without
  ``--no-chdir``).
"""

import fnmatch
import functools
import os
import re
import shlex
from typing import Any, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple

from coredoctor import origin as O
from coredoctor.kernel import remedies as R

__all__ = ["Daemon", "DAEMONS", "WRAPPERS", "match", "statements", "includes", "argv_option", "config_paths",
           "find", "MAX_FILES"]

#: bound on config files read for one process (includes and conf-dir entries count)
MAX_FILES = 32


class Opt(NamedTuple):
    """A command-line option: its spellings (``-u``, ``--user``), and the citation."""
    names: Tuple[str, ...]
    source: str


class Directive(NamedTuple):
    """A config directive; *section* limits it to one section/context (haproxy ``global``, nginx main)."""
    name: str
    source: str
    section: Optional[str] = None


class Daemon(NamedTuple):
    program: str
    names: Tuple[str, ...]            # exe basenames and comms it runs as
    syntax: str                       # "nginx" | "words" | "keyvalue"
    conf_default: Tuple[str, ...]     # default config file(s)
    conf_opts: Tuple[str, ...]        # argv options naming a config file (replace the default)
    include: Tuple[str, ...]          # directives that include another file (glob) or directory
    user_opts: Tuple[Opt, ...]        # argv options that drop privileges
    user: Tuple[Directive, ...]       # config directives that drop privileges
    default_user: Optional[Tuple[str, str]]   # (user, citation): drops even when nothing says so
    redump: Optional[Directive]       # a directive after which it makes itself dumpable again
    redump_always: Optional[str]      # citation: it always re-enables dumpability (nginx workers)
    rlimit: Optional[Directive]       # its own RLIMIT_CORE setting
    cwd: Optional[Directive]          # its own working directory
    source: str                       # the manual of the whole family


_NGX = "nginx: src/os/unix/ngx_process_cycle.c ngx_worker_process_init()"
_HAP = "haproxy configuration.txt, section 3.1 (global)"

DAEMONS: Tuple[Daemon, ...] = (
    Daemon("nginx", ("nginx",), "nginx", ("/etc/nginx/nginx.conf",), ("-c",), ("include",), (),
           (Directive("user", _NGX + ": setgid(), initgroups(), setuid() to ccf->user; "
                      "https://nginx.org/en/docs/ngx_core_module.html#user", ""),),
           ("nobody", "nginx: src/core/nginx.c ngx_core_module_init_conf(): NGX_USER \"nobody\""), None,
           _NGX + ": prctl(PR_SET_DUMPABLE, 1) after setuid() (\"allow coredump after setuid() in Linux 2.4.x\")",
           Directive("worker_rlimit_core", _NGX + ": setrlimit(RLIMIT_CORE, ccf->rlimit_core); "
                     "https://nginx.org/en/docs/ngx_core_module.html#worker_rlimit_core", ""),
           Directive("working_directory", _NGX + ": chdir(ccf->working_directory); "
                     "https://nginx.org/en/docs/ngx_core_module.html#working_directory", ""),
           "nginx(8), https://nginx.org/en/docs/ngx_core_module.html"),
    Daemon("haproxy", ("haproxy",), "words", ("/etc/haproxy/haproxy.cfg",), ("-f",), (), (),
           (Directive("user", _HAP + " 'user'; src/haproxy.c: setuid(global.uid)", "global"),
            Directive("uid", _HAP + " 'uid'; src/haproxy.c: setuid(global.uid)", "global"),
            Directive("group", _HAP + " 'group'; src/haproxy.c: setgid(global.gid)", "global"),
            Directive("gid", _HAP + " 'gid'; src/haproxy.c: setgid(global.gid)", "global")),
           None, Directive("set-dumpable", _HAP + " 'set-dumpable'; src/haproxy.c: prctl(PR_SET_DUMPABLE, 1) "
                           "and RLIMIT_CORE raised to its hard limit", "global"), None, None,
           Directive("chroot", _HAP + " 'chroot'; src/haproxy.c: chroot(global.chroot), chdir(\"/\")", "global"),
           "haproxy(1), /usr/share/doc/haproxy/configuration.txt"),
    Daemon("squid", ("squid",), "words", ("/etc/squid/squid.conf",), ("-f",), ("include",), (),
           (Directive("cache_effective_user", "squid.conf.documented 'cache_effective_user'; "
                      "src/tools.cc leave_suid(): setuid(Config.effectiveUserID)"),),
           ("proxy", "Debian squid: configure --with-default-user=proxy (squid.conf 'cache_effective_user')"),
           None, "squid: src/tools.cc leave_suid(): prctl(PR_SET_DUMPABLE, 1) when Config.coredump_dir is "
           "set -- always, since its default is the string \"none\" (seen: dumpable 1 after the drop)", None,
           Directive("coredump_dir", "squid.conf.documented 'coredump_dir'; src/main.cc mainSetCwd(): "
                     "chdir(Config.coredump_dir)"),
           "squid(8), /etc/squid/squid.conf (squid.conf.documented)"),
    Daemon("dnsmasq", ("dnsmasq",), "keyvalue", ("/etc/dnsmasq.conf",), ("-C", "--conf-file"),
           ("conf-file", "conf-dir"),
           (Opt(("-u", "--user"), "dnsmasq(8) -u, --user; src/dnsmasq.c main(): setgid(), setuid(ent_pw->pw_uid)"),),
           (Directive("user", "dnsmasq(8) -u, --user (as user= in dnsmasq.conf); src/dnsmasq.c main(): setuid()"),),
           ("nobody", "dnsmasq: src/config.h CHUSER \"nobody\" (dnsmasq(8) -u: the default)"),
           None, None, None, None, "dnsmasq(8)"),
    Daemon("chronyd", ("chronyd",), "words", ("/etc/chrony/chrony.conf", "/etc/chrony.conf"), ("-f",),
           ("include", "confdir"),
           (Opt(("-u",), "chronyd(8) -u; sys_linux.c SYS_Linux_DropRoot(): setgid(), setuid()"),),
           (Directive("user", "chrony.conf(5) 'user'; sys_linux.c SYS_Linux_DropRoot()"),),
           ("_chrony", "Debian chrony: configure --with-user=_chrony (chronyd(8) -u: the default)"),
           None, None, None, None, "chronyd(8), chrony.conf(5)"),
    Daemon("openvpn", ("openvpn",), "words", (), ("--config",), ("config",),
           (Opt(("--user",), "openvpn(8) --user; src/openvpn/platform.c platform_user_set(): setuid()"),
            Opt(("--group",), "openvpn(8) --group; src/openvpn/platform.c platform_group_set(): setgid()")),
           (Directive("user", "openvpn(8) --user (as 'user' in a --config file); platform_user_set()"),
            Directive("group", "openvpn(8) --group (as 'group' in a --config file); platform_group_set()")),
           None, None, None, None, None, "openvpn(8)"),
    Daemon("ovs-vswitchd", ("ovs-vswitchd", "ovsdb-server"), "words", (), (), (),
           (Opt(("--user",), "Open vSwitch lib/daemon-unix.c daemon_set_new_user(), daemon_become_new_user(): "
                "capng_change_id() (setresgid, setgroups, setresuid)"),),
           (), None, None, None, None, None, "ovs-vswitchd(8), ovsdb-server(1): --user"),
    Daemon("named", ("named",), "words", (), (), (),
           (Opt(("-u",), "named(8) -u; bin/named/os.c named_os_changeuser(): setuid()"),),
           (), None, None, None, None, None, "named(8)"),
    Daemon("ntpd", ("ntpd",), "words", (), (), (),
           (Opt(("-u", "--user"), "ntpd(8) -u user[:group]; ntpd/ntpd.c: setgid(), setuid()"),),
           (), None, None, None, None, None, "ntpd(8)"),
)

#: wrapper scripts known to turn their own option into the daemon's: (program, wrapper option,
#: daemon option, the argv words the wrapper always adds (evidence that it started the process),
#: the wrapper's path, the citation, the text of the line that passes it on (the snapshot records
#: each line holding it: the first is ovsdb-server's, the last ovs-vswitchd's)
WRAPPERS: Tuple[Tuple[str, str, str, Tuple[str, ...], str, str, str], ...] = (
    ("ovs-vswitchd", "--ovs-user", "--user", ("--no-chdir", "--detach", "--monitor"),
     "/usr/share/openvswitch/scripts/ovs-ctl",
     "Open vSwitch utilities/ovs-ctl.in start_ovsdb()/do_start_forwarding(): "
     "[ \"$OVS_USER\" != \"\" ] && set \"$@\" --user \"$OVS_USER\"; ovs-lib.in start_daemon() adds --no-chdir", '--user "$OVS_USER"'),
)

_OVS_MONITOR = ("Open vSwitch lib/daemon-unix.c monitor_daemon(): after a child's core dump, "
                "setrlimit(RLIMIT_CORE, {0, 0}) (\"Disable further core dumps to save disk space\")")
_OVS_CHDIR = "Open vSwitch lib/daemon-unix.c daemonize_start(): chdir(\"/\") unless --no-chdir"


# --------------------------------------------------------------------------- matching and argv


def by_program(program: str) -> Optional[Daemon]:
    return next((d for d in DAEMONS if d.program == program), None)


def candidate(exe: Optional[str], comm: Optional[str]) -> bool:
    """Whether a process may match a row (its exe basename or comm is a row's name): the cheap
    test before its argv is read."""
    names = _all_names()
    return os.path.basename((exe or "").replace(" (deleted)", "")) in names or comm in names


@functools.lru_cache(maxsize=1)
def _all_names() -> FrozenSet[str]:
    return frozenset(n for d in DAEMONS for n in d.names)


def match(exe: Optional[str], comm: Optional[str], argv: List[str]) -> Optional[Daemon]:
    """The row for a process: its exe basename or comm AND its argv[0]'s basename name the program
    (a process that calls itself nginx but runs another binary, or the reverse, is no match)."""
    base = os.path.basename((exe or "").replace(" (deleted)", ""))
    a0 = os.path.basename(argv[0]).split(":", 1)[0].strip() if argv else ""
    for d in DAEMONS:
        if (base in d.names or comm in d.names) and (a0 in d.names or a0.startswith(d.names)):
            return d
    return None


def argv_option(argv: List[str], names: Iterable[str]) -> Optional[Tuple[int, List[str], str]]:
    """The last use of an option in *argv* (``--user X``, ``--user=X``, ``-uX``, ``-u X``):
    ``(index, the exact words, the value)``."""
    found = None
    names = tuple(names)
    i = 1
    while i < len(argv):
        w = argv[i]
        if w == "--":
            break
        for n in names:
            if w == n and i + 1 < len(argv):
                found = (i, [w, argv[i + 1]], argv[i + 1])
                i += 1
                break
            if n.startswith("--") and w.startswith(n + "="):
                found = (i, [w], w[len(n) + 1:])
                break
            if not n.startswith("--") and len(n) == 2 and w.startswith(n) and len(w) > 2:
                found = (i, [w], w[2:])
                break
        i += 1
    return found


def config_paths(d: Daemon, argv: List[str], cwd: Optional[str]) -> List[Tuple[str, str]]:
    """The main config files: ``(path, "argv"|"default")``."""
    out = []
    for opt in d.conf_opts:
        i = 1
        while i < len(argv):
            w, val = argv[i], None
            if w == opt and i + 1 < len(argv):
                val = argv[i + 1]
                i += 1
            elif opt.startswith("--") and w.startswith(opt + "="):
                val = w[len(opt) + 1:]
            if val:
                out.append((_absolute(val, cwd), "argv"))
            i += 1
    if out:
        return out
    return [(p, "default") for p in d.conf_default]


def _absolute(path: str, base: Optional[str]) -> str:
    return os.path.normpath(path if path.startswith("/") else os.path.join(base or "/", path))


# --------------------------------------------------------------------------- parsers


class Stmt(NamedTuple):
    line: int
    words: List[str]
    section: str      # nginx: "" for main, else the enclosing block names joined by "/"; words: section
    text: str         # the line as written (stripped)


def statements(syntax: str, text: str) -> List[Stmt]:
    """The statements of a config *text* (never raises; bounded by the text)."""
    if syntax == "nginx":
        return _nginx(text)
    if syntax == "keyvalue":
        return _keyvalue(text)
    return _words(text)


_SECTIONS = ("global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist",
             "mailers", "program", "cache", "ring", "http-errors")


def _words(text: str) -> List[Stmt]:
    out = []
    section = ""
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not s or s[0] in "#;":
            continue
        words = s.split("#", 1)[0].split()
        if not words:
            continue
        if words[0].startswith("--"):
            words[0] = words[0][2:]     # openvpn: "--user nobody" in a config file
        if words[0] in _SECTIONS and raw[:1] not in (" ", "\t"):
            section = words[0]
        out.append(Stmt(n, words, section, s))
    return out


def _keyvalue(text: str) -> List[Stmt]:
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        k, sep, v = s.partition("=")
        out.append(Stmt(n, [k.strip()] + ([v.strip()] if sep else []), "", s))
    return out


def _nginx(text: str) -> List[Stmt]:
    """nginx's grammar (src/core/ngx_conf_file.c ngx_conf_read_token()): words separated by
    blanks, ``;`` ends a directive, ``{``/``}`` a block, ``#`` a comment, quotes and ``\\``."""
    out: List[Stmt] = []
    stack: List[str] = []
    words: List[str] = []
    cur: Optional[str] = None
    start = 0
    lines = text.splitlines()
    n, i, line = len(text), 0, 1
    quote = ""
    while i < n:
        c = text[i]
        if quote:
            if c == "\\" and i + 1 < n:
                cur = (cur or "") + text[i + 1]
                i += 2
                continue
            if c == quote:
                quote = ""
                words.append(cur or "")
                cur = None
            else:
                cur = (cur or "") + c
            if c == "\n":
                line += 1
            i += 1
            continue
        if c in " \t\r\n;{}#\"'":
            if cur is not None:
                words.append(cur)
                cur = None
            if c == "\n":
                line += 1
            elif c in "\"'":
                quote, cur = c, ""
                if not words:
                    start = line
            elif c == "#":
                j = text.find("\n", i)
                i = n if j < 0 else j
                continue
            elif c in ";{":
                if words:
                    out.append(Stmt(start, words, "/".join(stack), _line(lines, start)))
                    if c == "{":
                        stack.append(words[0])
                elif c == "{":
                    stack.append("")
                words = []
            elif c == "}":
                words = []
                if stack:
                    stack.pop()
            i += 1
            continue
        if cur is None:
            cur = ""
            if not words:
                start = line
        if c == "\\" and i + 1 < n:
            cur += text[i + 1]
            i += 2
            continue
        cur += c
        i += 1
    return out


def _line(lines: List[str], n: int) -> str:
    return lines[n - 1].strip() if 0 < n <= len(lines) else ""


def includes(d: Daemon, stmts: List[Stmt], conf: str) -> List[Tuple[int, str, str]]:
    """The includes of one parsed file: ``(line, "glob"|"dir", pattern or directory[, filters])``;
    relative names are taken from the including file's directory (nginx's conf prefix)."""
    out = []
    base = os.path.dirname(conf) or "/"
    for s in stmts:
        if s.words[0] not in d.include or len(s.words) < 2:
            continue
        val = s.words[1]
        if d.syntax == "keyvalue" and s.words[0] == "conf-dir" or d.program == "chronyd" and s.words[0] == "confdir":
            out.append((s.line, "dir", _absolute(val.split(",", 1)[0], base) + val[len(val.split(",", 1)[0]):]))
        else:
            out.append((s.line, "glob", _absolute(val, base)))
    return out


def dir_entries(spec: str, names: List[str]) -> Tuple[str, List[str]]:
    """dnsmasq ``conf-dir=DIR[,.ext,...|,*.conf]`` / chrony ``confdir DIR`` (*.conf): the directory
    and the entries of *names* it reads, sorted (dnsmasq src/option.c one_opt() LOPT_CONF_DIR:
    ``*``-prefixed filters are wanted suffixes, others excluded ones; dot files and ``~`` always out)."""
    parts = spec.split(",")
    d, filters = parts[0], [p for p in parts[1:] if p]
    want = [f[1:] for f in filters if f.startswith("*")]
    skip = [f for f in filters if not f.startswith("*")]
    out = []
    for nm in sorted(names):
        if nm.startswith(".") or nm.endswith("~") or (nm.startswith("#") and nm.endswith("#")):
            continue
        if want and not any(nm.endswith(w) for w in want):
            continue
        if any(nm.endswith(s) for s in skip):
            continue
        out.append(nm)
    return d, out


def glob_entries(pattern: str, names: List[str]) -> List[str]:
    return sorted(n for n in names if fnmatch.fnmatchcase(n, os.path.basename(pattern)))


# --------------------------------------------------------------------------- the finder


def _files(snap: Dict[str, Any], entry: Dict[str, Any]) -> List[Tuple[str, str]]:
    files = (snap.get("daemons") or {}).get("files") or {}
    out = []
    for f in entry.get("files") or []:
        rec = files.get(f.get("key") or f["path"]) or {}
        if isinstance(rec.get("text"), str):
            out.append((f["path"], rec["text"]))
    return out


def _directives(d: Daemon, files: List[Tuple[str, str]], wanted: Iterable[Directive]
                ) -> Dict[str, Tuple[str, Stmt, Directive]]:
    """The last occurrence of each wanted directive across the files, in the order read."""
    want = {w.name: w for w in wanted}
    out: Dict[str, Tuple[str, Stmt, Directive]] = {}
    for path, text in files:
        for s in statements(d.syntax, text):
            w = want.get(s.words[0])
            if w is None:
                continue
            if w.section is not None and s.section != w.section:
                continue
            out[w.name] = (path, s, w)
    return out


def _user_of(value: str) -> str:
    return re.split(r"[:.]", value, 1)[0] if not value.isdigit() else value


def _runs_as(proc: Dict[str, Any], user: str) -> bool:
    c = proc.get("creds") or {}
    uids = c.get("uid") or []
    return user == c.get("user") or (user.isdigit() and uids[1:2] == [int(user)])


def _wrapper(snap: Dict[str, Any], d: Daemon, argv: List[str], opt_words: List[str]) -> List[O.Origin]:
    out = []
    wrappers = (snap.get("daemons") or {}).get("wrappers") or {}
    for prog, wopt, dopt, marks, path, src, _needle in WRAPPERS:
        if prog != d.program or opt_words[0].split("=", 1)[0] != dopt or not all(m in argv for m in marks):
            continue
        w = wrappers.get(path) or {}
        hits = [h for h in w.get("lines") or [] if isinstance(h, list) and len(h) == 2]
        line, text = (hits[0] if argv[:1] and "ovsdb-server" in argv[0] else hits[-1]) if hits else (None, None)
        value = opt_words[-1].split("=", 1)[-1]
        out.append(O.origin("argv", f"{os.path.basename(path)} passes its {wopt} on as the daemon's {dopt} "
                            f"(the argv holds the words it adds: {' '.join(marks)})", src, program=os.path.basename(path),
                            file=path if hits else None, line=line, text=text,
                            argv=[f"{wopt}={value}"]))
    return out


def find(snap: Dict[str, Any], proc: Dict[str, Any], target: Dict[str, Any]) -> O.Found:
    entry = ((snap.get("daemons") or {}).get("procs") or {}).get(str(proc["pid"]))
    if not entry:
        return O.Found({}, [])
    d = by_program(entry["program"])
    if d is None:
        return O.Found({}, [])
    argv = [str(a) for a in entry.get("argv") or []]
    files = _files(snap, entry)
    wanted = list(d.user) + [x for x in (d.redump, d.rlimit, d.cwd) if x]
    found = _directives(d, files, wanted)
    origins: Dict[str, O.Origin] = {}
    fixes: List[Dict[str, Any]] = []
    is_worker = d.program == "nginx" and any("worker process" in a for a in argv[:1])

    def conf_origin(key: str, summary: str) -> O.Origin:
        path, s, w = found[key]
        return O.origin("config", summary, w.source, program=d.program, file=path, line=s.line, text=s.text)

    # ---- dumpable: the privilege drop
    cause = (target.get("dumpable") or {}).get("cause")
    redumped = d.redump is not None and d.redump.name in found
    if cause == "privilege-change" and not redumped and not (d.redump_always and (is_worker or d.program != "nginx")):
        o = None
        for opt in d.user_opts:
            hit = argv_option(argv, opt.names)
            if opt.names[0] != "--group" and hit and _runs_as(proc, _user_of(hit[2])):
                o = O.origin("argv", f"{d.program} drops its privileges to {hit[2]} with its own "
                             f"{hit[1][0].split('=', 1)[0]} option", opt.source, program=d.program,
                             argv=hit[1], via=_wrapper(snap, d, argv, hit[1]))
                break
        cfg = next((k for k in ("user", "uid", "cache_effective_user") if k in found), None)
        if cfg and len(found[cfg][1].words) > 1 and _runs_as(proc, _user_of(found[cfg][1].words[1])):
            co = conf_origin(cfg, f"{d.program}'s config drops its privileges to {found[cfg][1].words[1]}")
            if o is None:
                o = co
            else:
                o["via"].append(co)
        if o is None and d.default_user and _runs_as(proc, d.default_user[0]):
            o = O.origin("config", f"{d.program} drops its privileges to its compiled-in default user "
                         f"{d.default_user[0]} (no option or config line names another)", d.default_user[1],
                         program=d.program)
        if o is not None:
            origins["dumpable"] = o
            fixes.extend(_drop_fixes(d, entry, found, files))
    # ---- rlimit-core: the daemon's own limit
    if d.rlimit and d.rlimit.name in found and (d.program != "nginx" or is_worker):
        origins["rlimit-core"] = conf_origin(d.rlimit.name, f"{d.program} sets its workers' RLIMIT_CORE itself")
    elif d.program == "nginx" and is_worker and files:
        origins["rlimit-core"] = O.origin(
            "config", "no worker_rlimit_core in nginx's config: its workers keep the RLIMIT_CORE the master "
            "was started with", d.rlimit.source if d.rlimit else d.source, program=d.program, file=files[0][0])
    elif d.program == "ovs-vswitchd" and "--monitor" in argv:
        par = next((p for p in snap.get("processes") or [] if p.get("pid") == proc.get("ppid")), None)
        lim = ((par or {}).get("limits") or {}).get("core")
        # the same binary (not the comm: the monitor renames its thread "monitor", set_subprogram_name())
        if par and par.get("exe") and par.get("exe") == proc.get("exe") and isinstance(lim, list) and lim[:2] == [0, 0]:
            origins["rlimit-core"] = O.origin(
                "inherited", f"its --monitor parent (pid {par['pid']}) set RLIMIT_CORE to 0 after an earlier "
                "crash left a core: this child inherited it", _OVS_MONITOR, program=d.program, argv=["--monitor"])
    # ---- core-dir / core-file: the daemon's own working directory (relative patterns)
    cwd_o = None
    if d.cwd and d.cwd.name in found and (d.program != "nginx" or is_worker) and found[d.cwd.name][1].words[1:2] != [
            "none"]:
        cwd_o = conf_origin(d.cwd.name, f"{d.program} changes its working directory itself")
    elif d.program == "squid" and files:
        cwd_o = O.origin("config", "no coredump_dir in squid's config (its default is none): squid stays in the "
                         f"directory it was started in ({proc.get('cwd')})", d.cwd.source if d.cwd else d.source,
                         program=d.program, file=files[0][0])
    elif d.program == "nginx" and is_worker:
        cwd_o = O.origin("config", "no working_directory in nginx's config: workers stay in the master's "
                         f"working directory ({proc.get('cwd')})", d.cwd.source if d.cwd else d.source,
                         program=d.program, file=files[0][0] if files else None)
    elif d.program == "ovs-vswitchd" and "--detach" in argv and "--no-chdir" not in argv:
        cwd_o = O.origin("argv", "--detach without --no-chdir: the daemon changed to /", _OVS_CHDIR,
                         program=d.program, argv=["--detach"])
    pattern = str((snap.get("sysctl") or {}).get("kernel.core_pattern") or "")
    if cwd_o is not None and not pattern.startswith(("/", "|", "@")):
        origins["core-dir"] = cwd_o
        origins["core-file"] = cwd_o
    if any(k in origins for k in ("rlimit-core", "core-dir", "core-file")):
        fixes.extend(_switch_fixes(d, entry, found, files, proc))
    return O.Found(origins, [R.public_fix(f) for f in fixes])


# --------------------------------------------------------------------------- the daemon's own switch


def _restart_cmd(d: Daemon) -> str:
    return {"nginx": "nginx -s reload   # or: systemctl reload nginx",
            "haproxy": "systemctl restart haproxy",
            "squid": "squid -k reconfigure   # or: systemctl restart squid"}.get(d.program, f"systemctl restart {d.program}")


def _reload(d: Daemon) -> Dict[str, Any]:
    return R.manual(f"restart or reload {d.program} so that it reads the changed config",
                    "the daemon reads its config at start (and on reload)", [_restart_cmd(d)], needs_restart=True)


def _main_conf(entry: Dict[str, Any], files: List[Tuple[str, str]]) -> Optional[str]:
    return files[0][0] if files else next((f["path"] for f in entry.get("files") or []), None)


def _edit(d: Daemon, path: Optional[str], line: str, why: str, replace: Optional[Tuple[str, int]] = None,
          section: Optional[str] = None) -> Dict[str, Any]:
    """A config-line record (:func:`coredoctor.kernel.remedies.config_line`): *line* replaces
    line N of *path* (``(text, N)``), or is added after the *section* header, or at the top."""
    return R.config_line(d.program, path or "", line, why, replace=replace[1] if replace else None,
                         expect=replace[0] if replace else None, section=section)


def _switch_fixes(d: Daemon, entry: Dict[str, Any], found: Dict[str, Tuple[str, Stmt, Directive]],
                  files: List[Tuple[str, str]], proc: Dict[str, Any]) -> List[Dict[str, Any]]:
    conf = _main_conf(entry, files)
    if conf is None:
        return []
    acts = []
    if d.program == "nginx":
        for name, value in (("worker_rlimit_core", "500m"), ("working_directory", R.DEFAULT_DIR)):
            rep = (found[name][1].text, found[name][1].line) if name in found and found[name][0] == conf else None
            acts.append(_edit(d, conf, f"{name} {value};", f"nginx's own switch: {name}", rep))
        acts.insert(0, R.mkdir(R.DEFAULT_DIR, "1733", f"the directory working_directory names, writable by "
                               f"nginx's workers ({(proc.get('creds') or {}).get('user')})"))
        acts.append(_reload(d))
        return [R.fix("nginx's own switch (only nginx changes; its workers pick it up on reload): "
                      "worker_rlimit_core and working_directory", acts)]
    if d.program == "squid":
        rep = (found["coredump_dir"][1].text, found["coredump_dir"][1].line) if "coredump_dir" in found else None
        return [R.fix("squid's own switch (only squid changes; reconfigure): coredump_dir, the directory it "
                      "changes to (and its cores land in with a relative core_pattern)",
                      [_edit(d, conf, "coredump_dir /var/spool/squid", "squid's own switch: coredump_dir", rep),
                       _reload(d)])]
    return []


def _drop_fixes(d: Daemon, entry: Dict[str, Any], found: Dict[str, Tuple[str, Stmt, Directive]],
                files: List[Tuple[str, str]]) -> List[Dict[str, Any]]:
    conf = _main_conf(entry, files)
    if d.program == "haproxy" and conf:
        return [R.fix("haproxy's own switch (only haproxy changes; restart it): set-dumpable in its global "
                      "section, instead of fs.suid_dumpable=2 for the whole host",
                      [_edit(d, conf, "set-dumpable", "haproxy's own switch: set-dumpable", section="global"),
                       _reload(d)])]
    if d.program == "nginx":
        return []
    # the seed's alternative: no own switch, so not dropping privileges at all
    run_as = {"ovs-vswitchd": "--user root:root (ovs-ctl --ovs-user=root:root; OVS_USER_ID=\"root:root\")",
              "dnsmasq": "--user=root", "chronyd": "-u root", "openvpn": "no --user/--group",
              "named": "no -u", "ntpd": "no -u"}.get(d.program, "as root")
    return [R.fix(f"{d.program} has no switch of its own to stay dumpable: running it without the drop "
                  f"({run_as}) would leave a core, at a cost",
                  [R.daemon_option(d.program, f"start {d.program} with {run_as}",
                                   "the drop is what makes it non-dumpable", [f"# start {d.program} with {run_as}"],
                                   needs_restart=True,
                                   risk=f"{d.program} then runs as root: a compromise of it is a compromise of the "
                                        "host, and files it creates change owner (other services that share them "
                                        "as its user break -- the seed's case)")])]

