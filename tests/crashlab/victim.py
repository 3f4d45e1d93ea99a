"""A crash-lab victim: puts itself into the state described by a JSON spec, says READY, then
does what it is told on stdin: ``fault`` (a real SIGSEGV from a NULL read), ``abort``, ``exit``.

Run as root; privilege changes happen in-process, the way daemons do them (setresgid,
setgroups, setresuid, setfsuid, prctl), after every module is loaded.
"""
import ctypes
import json
import os
import resource
import signal
import sys

PR_SET_DUMPABLE = 4


def rl(v):
    return resource.RLIM_INFINITY if v is None else v


def main():
    spec = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    if "comm" in spec:
        libc.prctl(15, spec["comm"].encode(), 0, 0, 0)  # PR_SET_NAME
    if "coredump_filter" in spec:
        with open("/proc/self/coredump_filter", "w") as f:
            f.write(spec["coredump_filter"])
    if "rlimit_core" in spec:
        s, h = spec["rlimit_core"]
        resource.setrlimit(resource.RLIMIT_CORE, (rl(s), rl(h)))
    if "rlimit_fsize" in spec:
        s, h = spec["rlimit_fsize"]
        resource.setrlimit(resource.RLIMIT_FSIZE, (rl(s), rl(h)))
    for name, how in (spec.get("sig") or {}).items():
        signo = getattr(signal, name)
        if how in ("ignore",):
            signal.signal(signo, signal.SIG_IGN)
        if how in ("handler", "handler+block"):
            signal.signal(signo, lambda *a: None)
        if how in ("block", "handler+block"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signo})
    if "cwd" in spec:
        os.chdir(spec["cwd"])
    if "umask" in spec:
        os.umask(spec["umask"])
    if "setresgid" in spec:
        os.setresgid(*spec["setresgid"])
    if "setgroups" in spec:
        os.setgroups(spec["setgroups"])
    if "setresuid" in spec:
        os.setresuid(*spec["setresuid"])
    if "setfsuid" in spec:
        libc.setfsuid(spec["setfsuid"])
    if "prctl_dumpable" in spec:
        if libc.prctl(PR_SET_DUMPABLE, spec["prctl_dumpable"], 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    sys.stdout.write(f"READY {os.getpid()}\n")
    sys.stdout.flush()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "fault":
            ctypes.string_at(0)
        elif cmd == "abort":
            os.abort()
        elif cmd == "exit":
            os._exit(0)
        elif cmd == "ping":
            sys.stdout.write("pong\n")
            sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
