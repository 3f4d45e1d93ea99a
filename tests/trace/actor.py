"""A traced actor: performs credential steps given as arguments, pausing between them so that
coredoctor trace can confirm each from the kernel, then waits or faults.

    actor.py core setresgid:-1,65534,-1 setfsuid:65534 prctl:0 fault

Steps: ``core`` (RLIMIT_CORE unlimited), ``setresgid:r,e,s``, ``setresuid:r,e,s``,
``setgroups:`` (empty list), ``setfsuid:N``, ``prctl:N`` (PR_SET_DUMPABLE), ``sleep:S``,
``waitfile:PATH``, ``fault`` (a NULL read: a real SIGSEGV), ``exit``, ``name:STR``
(prctl(PR_SET_NAME): any bytes, the kernel keeps 15), ``pid:LABEL`` (prints ``pid LABEL N``).
"""
import ctypes
import os
import resource
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
PAUSE = float(os.environ.get("ACTOR_PAUSE", "0.3"))


def _say(line: str) -> None:
    """One write(2) per line: actors run side by side on one pipe, and print() may split a line
    from its newline (seen in CI: "pid exec 1726pid plain 1727")."""
    sys.stdout.flush()
    os.write(1, (line + "\n").encode("utf-8", "surrogateescape"))


def main():
    time.sleep(PAUSE)
    for step in sys.argv[1:]:
        name, _, arg = step.partition(":")
        vals = [int(x) for x in arg.split(",")] if arg and name not in ("sleep", "waitfile", "name", "pid") else []
        if name == "core":
            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        if name == "setresgid":
            os.setresgid(*vals)
        elif name == "setresuid":
            os.setresuid(*vals)
        elif name == "setgroups":
            os.setgroups(vals)
        elif name == "setfsuid":
            libc.setfsuid(vals[0])
        elif name == "prctl":
            libc.prctl(4, vals[0], 0, 0, 0)
        elif name == "name":
            libc.prctl(15, ctypes.c_char_p(arg.encode("utf-8", "surrogateescape")), 0, 0, 0)
        elif name == "pid":
            _say(f"pid {arg} {os.getpid()}")
            continue
        elif name == "sleep":
            time.sleep(float(arg))
            continue
        elif name == "waitfile":  # until the test says the tracer is ready
            while not os.path.exists(arg):
                time.sleep(0.05)
            continue
        elif name == "fault":
            sys.stdout.flush()
            ctypes.string_at(0)
        elif name == "exit":
            sys.exit(vals[0] if vals else 0)
        _say(f"did {step}")
        time.sleep(PAUSE)


if __name__ == "__main__":
    main()
