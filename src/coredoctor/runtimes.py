"""
Language runtimes that catch fatal signals
------------------------------------------
A process whose runtime installs a SIGSEGV handler leaves the signal gate at "a handler
decides". For the runtimes in :data:`RUNTIMES` the handler's rule is known from the runtime's
own source, so the gate can say pass or fail with that evidence.

Detection is by what the binary and its mapped objects *are*, never by their names alone
(:mod:`coredoctor.snapshot.proc.runtime` reads the facts): an ELF section (``section:NAME``),
an ELF note's owner (``note:OWNER``), a symbol name in ``.strtab``/``.dynstr``
(``symbol:NAME``; ``suffix:NAME`` where a mangled name ends in NAME), a mapped shared object by its soname stem
(``map:STEM``, e.g. ``libjvm.so``: the library *is* the runtime). The snapshot keeps only the
markers found, the values of the environment variables a row names (bounded; no other
variable is kept) and the argv words a row names.

Pure: ``decide(facts, signal, how)`` reads only the snapshot's ``runtime`` record. Each row
cites the runtime source file and function whose behaviour it states.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["RUNTIMES", "MARKERS", "ENV_NAMES", "ENV_MAX", "ARGV_MAX", "detect", "decide", "argv_words",
           "Decision", "core_signal"]

#: fatal signals a runtime's handler is installed for (the ones a real fault raises, and SIGABRT)
FATAL = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGABRT", "SIGSYS")

#: one environment value kept at most this long (longer: cut, and marked)
ENV_MAX = 256
#: at most this many argv words kept
ARGV_MAX = 32

# (status, evidence, runtime id, dump signal or None) -- status pass / fail / unknown
Decision = Tuple[str, str, str, Optional[str]]
Facts = Dict[str, Any]
Rule = Callable[[Facts, str, str], Optional[Tuple[str, str, Optional[str]]]]


def _env(f: Facts, name: str) -> Optional[str]:
    env = f.get("env")
    if not isinstance(env, dict):
        return None
    v = env.get(name)
    return v if isinstance(v, str) else None


def _argv(f: Facts) -> List[str]:
    a = f.get("argv")
    return [w for w in a if isinstance(w, str)] if isinstance(a, list) else []


def _env_known(f: Facts) -> bool:
    return f.get("env_known") is True


# --------------------------------------------------------------------------- Go

_GO_SRC = ("Go src/runtime/signal_unix.go sighandler()/crash()/dieFromSignal(), src/runtime/panic.go "
           "fatalpanic(), src/runtime/runtime1.go setTraceback(); GOTRACEBACK in src/runtime/extern.go; "
           "src/runtime/debug/garbage.go SetTraceback()")


def go_traceback(value: Optional[str]) -> Tuple[str, bool]:
    """``(level name, crash)`` of a GOTRACEBACK value the way runtime1.go setTraceback() reads
    it: ``none``/``0``, ``single`` or empty (the default), ``all``/``1``, ``system``/``2``,
    ``crash``, ``wer`` (crash on Windows only), else a number (all, level N)."""
    v = (value or "")
    if v in ("", "single"):
        return "single", False
    if v in ("none", "0"):
        return "none", False
    if v in ("all", "1"):
        return "all", False
    if v in ("system", "2"):
        return "system", False
    if v == "crash":
        return "crash", True
    if v == "wer":
        return "wer", False  # GOOS=windows only
    return f"level {v[:20]!r}", False


def _go(f: Facts, sig: str, how: str) -> Optional[Tuple[str, str, Optional[str]]]:
    if sig not in FATAL:
        return None
    raw = _env(f, "GOTRACEBACK")
    if not _env_known(f):
        return ("unknown", "a Go program: the Go runtime catches every signal; its environment "
                "(GOTRACEBACK) could not be read, so whether it re-raises is unknown", None)
    level, crash = go_traceback(raw)
    shown = "unset" if raw is None else f"={raw!r}"
    if crash:
        return ("pass", f"a Go program with GOTRACEBACK{shown} in its environment: after the traceback the "
                "runtime's crash() re-raises as SIGABRT with SIG_DFL (dieFromSignal), so the kernel dumps "
                "a core of signal SIGABRT; debug.SetTraceback cannot lower the level below the "
                "environment's", "SIGABRT")
    return ("fail", f"a Go program with GOTRACEBACK {shown} (level {level}): the runtime catches {sig}, "
            "turns a fault into a panic (a kill-sent one into a throw), prints the goroutine trace and "
            "exits with status 2 (fatalpanic/sighandler -> exit(2)): no core unless GOTRACEBACK=crash "
            "(the program itself can raise the level at run time with debug.SetTraceback(\"crash\"), "
            "which cannot be seen from outside; a panic from a fault can also be recover()ed)", None)


# --------------------------------------------------------------------------- Java (HotSpot)

_JAVA_SRC = ("OpenJDK src/hotspot/os/posix/os_posix.cpp os::abort() (dump_core -> ::abort(), else "
             "::_exit(1)); src/hotspot/share/utilities/vmError.cpp VMError::report_and_die() "
             "(os::abort(CreateCoredumpOnCrash)); signals_posix.cpp JVM_HANDLE_XXX_SIGNAL; option "
             "order in src/hotspot/share/runtime/arguments.cpp Arguments::parse()")

#: where HotSpot reads options from, in the order it applies them (a later one wins)
JAVA_OPTION_VARS = ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS")


def java_coredump_flag(f: Facts) -> Tuple[bool, str]:
    """``(CreateCoredumpOnCrash, where it was set)``: JAVA_TOOL_OPTIONS, then JDK_JAVA_OPTIONS
    (the java launcher puts it before the command line), then the command line, then
    _JAVA_OPTIONS; the last one wins; the default is true."""
    value, where = True, "the default (true)"
    sources: List[Tuple[str, Sequence[str]]] = [
        ("JAVA_TOOL_OPTIONS", (_env(f, "JAVA_TOOL_OPTIONS") or "").split()),
        ("JDK_JAVA_OPTIONS", (_env(f, "JDK_JAVA_OPTIONS") or "").split()),
        ("the command line", _argv(f)),
        ("_JAVA_OPTIONS", (_env(f, "_JAVA_OPTIONS") or "").split())]
    for name, words in sources:
        for w in words:
            if w in ("-XX:+CreateCoredumpOnCrash", "-XX:-CreateCoredumpOnCrash"):
                value, where = w[4] == "+", f"{w} in {name}"
    return value, where


def _java(f: Facts, sig: str, how: str) -> Optional[Tuple[str, str, Optional[str]]]:
    if sig not in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL") or how != "fault":
        return None
    on, where = java_coredump_flag(f)
    if not _env_known(f) and where.startswith("the default"):
        return ("unknown", "a HotSpot JVM (libjvm.so mapped): its environment could not be read, so "
                "CreateCoredumpOnCrash is unknown", None)
    head = (f"a HotSpot JVM (libjvm.so mapped): a fault the JVM does not handle itself (implicit null "
            "checks, safepoint polls) is a crash: VMError::report_and_die() writes hs_err_pid<pid>.log "
            f"and calls os::abort(CreateCoredumpOnCrash); CreateCoredumpOnCrash is {str(on).lower()} "
            f"({where})")
    if on:
        return ("pass", head + ": ::abort() raises SIGABRT with the default action, so the kernel dumps a "
                "core of signal SIGABRT", "SIGABRT")
    return ("fail", head + ": os::abort(false) calls ::_exit(1): no core", None)


# --------------------------------------------------------------------------- Python faulthandler

_PY_SRC = ("CPython Modules/faulthandler.c faulthandler_fatal_error() (writes the traceback, restores "
           "the previous handler, raise(signum)); PYTHONFAULTHANDLER / -X faulthandler in Python/initconfig.c")


def python_faulthandler(f: Facts) -> Optional[str]:
    """Where faulthandler was enabled at start-up, or None."""
    v = _env(f, "PYTHONFAULTHANDLER")
    if v:  # any non-empty value (initconfig.c config_get_env())
        return f"PYTHONFAULTHANDLER={v!r}"
    words = _argv(f)
    for i, w in enumerate(words):
        if w == "-Xfaulthandler" or (w == "-X" and i + 1 < len(words) and words[i + 1] == "faulthandler"):
            return "-X faulthandler on the command line"
    return None


def _python(f: Facts, sig: str, how: str) -> Optional[Tuple[str, str, Optional[str]]]:
    if sig not in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT"):
        return None
    where = python_faulthandler(f)
    if where:
        return ("pass", f"a Python interpreter with faulthandler enabled ({where}): its handler writes the "
                f"traceback, restores the previous disposition (SIG_DFL) and raise()s {sig} again, so the "
                "kernel's default action runs (unless the program replaced it with its own "
                "signal.signal() handler, which cannot be seen from outside)", sig)
    return ("unknown", "a Python interpreter with a handler for the signal but no PYTHONFAULTHANDLER or "
            "-X faulthandler: faulthandler.enable() at run time re-raises, an extension module's handler "
            "may not", None)


# --------------------------------------------------------------------------- .NET (CoreCLR)

_NET_SRC = ("dotnet/runtime src/coreclr/pal/src/exception/signal.cpp sigsegv_handler() / "
            "invoke_previous_action() (restore_signal(), the fault restarts); "
            "src/coreclr/pal/src/thread/process.cpp PROCCreateCrashDumpIfEnabled() (createdump)")


def _dotnet(f: Facts, sig: str, how: str) -> Optional[Tuple[str, str, Optional[str]]]:
    if sig not in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL") or how != "fault":
        return None
    md = _env(f, "DOTNET_DbgEnableMiniDump") or _env(f, "COMPlus_DbgEnableMiniDump")
    extra = ("; DbgEnableMiniDump=1: createdump also writes its own dump (DOTNET_DbgMiniDumpName, "
             "default /tmp/coredump.<pid>) first" if md == "1" else
             "; createdump's own dump is off (DOTNET_DbgEnableMiniDump unset)")
    return ("pass", "a .NET (CoreCLR) process (libcoreclr.so mapped): a fault outside managed code goes to "
            "invoke_previous_action(), which restores SIG_DFL and lets the faulting instruction run again, "
            "so the kernel's default action runs" + extra, sig)


# --------------------------------------------------------------------------- Node.js

_NODE_SRC = ("Node.js src/node.cc TrapWebAssemblyOrContinue() (not a WebAssembly trap: the previous "
             "handler, else SIG_DFL and raise(signo)); --abort-on-uncaught-exception for JS errors")


def _node(f: Facts, sig: str, how: str) -> Optional[Tuple[str, str, Optional[str]]]:
    if sig not in ("SIGSEGV", "SIGBUS"):
        return None
    return ("pass", "a Node.js process: its SIGSEGV handler is V8's WebAssembly trap handler; for anything "
            "else it resets SIG_DFL and raise()s the signal again, so the kernel's default action runs "
            "(JavaScript exceptions are not signals: they exit 1 without a core unless "
            "--abort-on-uncaught-exception)", sig)


# --------------------------------------------------------------------------- Rust std

_RUST_SRC = ("Rust library/std/src/sys/pal/unix/stack_overflow.rs signal_handler() (not in a guard page: "
             "SIG_DFL and return, the fault repeats; in one: 'has overflowed its stack', abort())")


def _rust(f: Facts, sig: str, how: str) -> Optional[Tuple[str, str, Optional[str]]]:
    if sig not in ("SIGSEGV", "SIGBUS"):
        return None
    if how == "kill":
        return ("fail", f"a Rust program: std's stack-overflow handler answers a kill-sent {sig} by resetting "
                "it to SIG_DFL and returning, so the first kill-sent one is swallowed (a second would dump)",
                None)
    return ("pass", f"a Rust program: std's stack-overflow handler resets {sig} to SIG_DFL and returns when "
            "the fault is not in a guard page, so the fault repeats and the kernel's default action runs "
            "(a stack overflow prints 'has overflowed its stack' and abort()s: SIGABRT)", sig)


#: The runtimes, most specific first (a JVM or CLR embedded in another program owns the handler
#: of the faults in its code). Each row: id, name, detection markers (any one), the environment
#: variables and argv words the rule reads, the rule, its source.
RUNTIMES: List[Dict[str, Any]] = [
    {"id": "java", "name": "Java (HotSpot)", "detect": ("map:libjvm.so",),
     "env": JAVA_OPTION_VARS, "argv": ("-XX:+CreateCoredumpOnCrash", "-XX:-CreateCoredumpOnCrash"),
     "rule": _java, "source": _JAVA_SRC,
     "fix": ("remove -XX:-CreateCoredumpOnCrash, or set _JAVA_OPTIONS=-XX:+CreateCoredumpOnCrash "
             "(HotSpot applies _JAVA_OPTIONS after the command line)",
             "_JAVA_OPTIONS=-XX:+CreateCoredumpOnCrash")},
    {"id": "dotnet", "name": ".NET (CoreCLR)", "detect": ("map:libcoreclr.so",),
     "env": ("DOTNET_DbgEnableMiniDump", "COMPlus_DbgEnableMiniDump", "DOTNET_DbgMiniDumpName"), "argv": (),
     "rule": _dotnet, "source": _NET_SRC, "fix": None},
    {"id": "go", "name": "Go", "detect": ("section:.go.buildinfo", "note:Go"),
     "env": ("GOTRACEBACK",), "argv": (), "rule": _go, "source": _GO_SRC,
     "fix": ("set GOTRACEBACK=crash in its environment", "GOTRACEBACK=crash")},
    {"id": "node", "name": "Node.js", "detect": ("map:libnode.so", "symbol:napi_module_register"),
     "env": (), "argv": (), "rule": _node, "source": _NODE_SRC, "fix": None},
    {"id": "python", "name": "Python", "detect": ("map:libpython3", "symbol:Py_InitializeEx"),
     "env": ("PYTHONFAULTHANDLER",), "argv": ("-X", "faulthandler", "-Xfaulthandler"),
     "rule": _python, "source": _PY_SRC,
     "fix": ("enable faulthandler at start (PYTHONFAULTHANDLER=1)", "PYTHONFAULTHANDLER=1")},
    {"id": "rust", "name": "Rust", "detect": ("symbol:rust_begin_unwind", "suffix:rust_begin_unwind"),
     "env": (), "argv": (), "rule": _rust, "source": _RUST_SRC, "fix": None},
]
_BY_ID = {r["id"]: r for r in RUNTIMES}

#: every marker a row names (the snapshot reader looks for these and keeps only these)
MARKERS: Tuple[str, ...] = tuple(sorted({m for r in RUNTIMES for m in r["detect"] + r.get("extra", ())}))
#: every environment variable a row reads
ENV_NAMES: Tuple[str, ...] = tuple(sorted({v for r in RUNTIMES for v in r["env"]}))
#: every argv word a row reads
ARGV_NAMES: Tuple[str, ...] = tuple(sorted({v for r in RUNTIMES for v in r["argv"]}))


def argv_words(argv: Sequence[str]) -> List[str]:
    """The argv words a row reads, in order (nothing else is kept), at most :data:`ARGV_MAX`."""
    return [w for w in argv if w in ARGV_NAMES][:ARGV_MAX]


def row(rid: str) -> Optional[Dict[str, Any]]:
    return _BY_ID.get(rid)


def detect(facts: Any) -> List[str]:
    """The ids of the runtimes whose markers are in *facts* (the snapshot's ``runtime``), table order."""
    if not isinstance(facts, dict) or not isinstance(facts.get("markers"), list):
        return []
    have = set(m for m in facts["markers"] if isinstance(m, str))
    return [r["id"] for r in RUNTIMES if have.intersection(r["detect"])]


def decide(facts: Any, sig: str, how: str) -> Optional[Decision]:
    """What the runtime's handler does with *sig* delivered *how* (``fault``/``kill``):
    ``(status, evidence, runtime id, signal of the core)`` or None when no known runtime
    answers. The first detected runtime with a rule for the signal decides (table order)."""
    for rid in detect(facts):
        r = _BY_ID[rid]
        ans = r["rule"](facts, sig, how)
        if ans is not None:
            status, ev, dump_sig = ans
            return status, f"{ev} [{r['source']}]", rid, dump_sig
    return None


def core_signal(facts: Any, sig: str, how: str) -> str:
    """The signal the core will carry (``%s`` in core_pattern): the one the runtime re-raises
    when its rule says it dumps (Go's crash() and HotSpot's os::abort() raise SIGABRT), else
    *sig* itself."""
    ans = decide(facts, sig, how)
    if ans is not None and ans[0] == "pass" and ans[3]:
        return ans[3]
    return sig
