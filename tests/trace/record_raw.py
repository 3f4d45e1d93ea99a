"""Record a binary trace fixture: the instance's header and format files and the raw ring-buffer
pages of a real run of the actor (renamed like a trace line, a credential drop, a fork and exec,
a real SIGSEGV), as JSON for tests/unit/test_trace_raw.py.

    sudo .venv/bin/python tests/trace/record_raw.py tests/fixtures/trace/raw-$(uname -r | cut -d. -f1,2).json
"""
import base64
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "src"))

from coredoctor.trace import tracefs  # noqa: E402


def main(out):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os.execv(sys.executable, [sys.executable, os.path.join(HERE, "actor.py"), "name:x-1 [000] ..: a=b)",
                                  "setresgid:-1,65534,-1", "prctl:1", "fault"])
    os.close(r)
    with tracefs.Instance(userstack=True, buffer_kb=1024) as inst:
        inst._write("trace_clock", "mono")
        inst.setup(pids=[pid])
        dec, notes = inst.raw_decoder()
        if dec is None:
            raise SystemExit(f"no binary reading here: {notes}")
        inst.open_raw(page_size=dec.header.page_size)
        os.write(w, b"g")
        os.close(w)
        pages = []
        done = False
        while True:
            got, drained = inst.read_raw(timeout=0.1)
            pages += got
            if done and drained and not got:
                break
            if not done and os.waitpid(pid, os.WNOHANG)[0] == pid:
                done = True
                time.sleep(0.2)
        formats = {}
        for ev in inst.enabled + ["ftrace/user_stack"]:
            formats[ev] = inst._events_file(f"{ev}/format")
        rec = {"kernel": os.uname().release, "pid": pid, "page_size": dec.header.page_size,
               "header_page": inst._events_file("header_page"), "header_event": inst._events_file("header_event"),
               "formats": formats, "pages": [[cpu, base64.b64encode(b).decode()] for cpu, b in pages]}
    with open(out, "w") as f:
        json.dump(rec, f, indent=0)
    print(f"{out}: {len(pages)} pages, pid {pid}, kernel {rec['kernel']}")


if __name__ == "__main__":
    main(sys.argv[1])
