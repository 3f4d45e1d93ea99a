"""A daemon the way Open vSwitch runs with --ovs-user: a monitor that starts as root, drops to
nobody:nogroup (setresgid, setgroups, setresuid) and then forks the worker it supervises -- so
the worker never changed credentials itself but inherited the monitor's dumpable flag at fork.

    daemon.py MONITOR_NAME WORKER_NAME

Prints ``READY <monitor pid> <worker pid>``; when its stdin closes it ends the worker (SIGKILL,
by pid, reaped) and exits. Run as root (examples/scenarios.py starts it)."""
import ctypes
import os
import resource
import signal
import sys


def name(comm: str) -> None:
    ctypes.CDLL(None).prctl(15, comm.encode(), 0, 0, 0)  # PR_SET_NAME


def main() -> None:
    monitor, worker = sys.argv[1], sys.argv[2]
    name(monitor)
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    os.setresgid(65534, 65534, 65534)
    os.setgroups([])
    os.setresuid(65534, 65534, 65534)
    pid = os.fork()
    if pid == 0:
        name(worker)
        os.close(0)
        while True:
            signal.pause()
    sys.stdout.write(f"READY {os.getpid()} {pid}\n")
    sys.stdout.flush()
    sys.stdin.read()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
