"""What symbolizing a user stack costs the tracer (coredoctor.trace.symbols).

Symbolizes a 3-frame stack of this very process (libc's setresuid, two functions of the Python
binary or libpython) and prints medians over alternating rounds:
  cold      new Symbolizer: capture + first symbolize (reads maps, parses the ELF files)
  capture   capture() again with unchanged maps (the tracer calls it on every fork/exec)
  fork      capture() of a fork child (maps byte-identical to a layout already seen)
  parent=   capture(child, parent=pid): the parent's layout, nothing read
  warm      symbolize() of a stack seen before (the 10k-credential-changes/s case)
  miss      symbolize() of 3 new addresses each time (ELF already parsed)
Usage: python3 bench/symbolize.py [rounds]
"""
import ctypes
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from coredoctor.trace.symbols import Symbolizer, format_frame  # noqa: E402


def addr(fn):
    return ctypes.cast(fn, ctypes.c_void_p).value


def per_call(fn, n):
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n * 1e6


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    libc = ctypes.CDLL(None)
    stack = [addr(libc.setresuid) + 0x24, addr(ctypes.pythonapi.PyObject_Call) + 0x10,
             addr(ctypes.pythonapi.Py_RunMain) + 0x20]
    pid = os.getpid()
    child = os.fork()
    if child == 0:
        signal.pause()
        os._exit(0)
    try:
        res = {k: [] for k in ("cold", "capture", "fork", "parent", "warm", "miss")}
        for _ in range(rounds):
            t = time.perf_counter()
            s = Symbolizer()
            s.capture(pid)
            frames = s.symbolize(pid, stack)
            res["cold"].append((time.perf_counter() - t) * 1e3)
            res["capture"].append(per_call(lambda i: s.capture(pid), 2000))
            res["fork"].append(per_call(lambda i: (s.forget(child), s.capture(child)), 2000))
            res["parent"].append(per_call(lambda i: (s.forget(child), s.capture(child, parent=pid)), 20000))
            res["warm"].append(per_call(lambda i: s.symbolize(pid, stack), 50000))
            res["miss"].append(per_call(lambda i: s.symbolize(pid, [a + 1 + (i % 4000) for a in stack]), 4000))
            s.close()
        print("stack:", " <- ".join(format_frame(f) for f in frames))
        print(f"mappings: {len(s.maps(pid))}, rounds: {rounds}")
        m = {k: statistics.median(v) for k, v in res.items()}
        print(f"median: cold {m['cold']:.1f} ms, capture unchanged {m['capture']:.1f} us, fork child "
              f"{m['fork']:.1f} us (with parent= {m['parent']:.2f} us), warm stack {m['warm']:.2f} us, new addresses {m['miss']:.1f} us per stack")
        print(f"at 10,000 stacks/s (warm): {m['warm'] * 1e4 / 1e6 * 100:.1f}% of one CPU")
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
