"""coredoctor.trace.symbols against real processes: small C programs built here print the
addresses of their own functions, of a function in a shared library linked at a base address,
and of libc's setresuid (dlsym); the symbolizer must name them through /proc/PID/maps, also once
the program exited, after its binary was deleted and replaced, and when it runs in another mount
namespace. Then the real thing: tracefs's options/userstacktrace on sys_enter_setresuid, in a
private instance, with tracefs mounted as found and, in a private mount namespace, unmounted first
so that the test mounts it itself.

Run as a script (``python test_symbols.py --trace EXE``) it performs the tracefs experiment alone
and prints JSON: that is how it runs inside ``unshare -m``.
"""
import json
import os
import platform
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "src"))

from coredoctor.elf import read_elf_path  # noqa: E402
from coredoctor.trace.symbols import (Symbolizer, format_frame, parse_maps, parse_userobj,  # noqa: E402
                                      symbolize_maps, userobj_address)

try:
    import pytest
except ImportError:  # script mode inside a namespace needs no pytest
    pytest = None

LIB = r"""
/* static: a non-PIE executable that took the address of an exported function would get its own
   PLT slot (the canonical address), not the function in the library */
__attribute__((noinline)) static int cd_lib_func(int x) { return x * 7; }
void *cd_lib_addr(void) { return (void *)cd_lib_func; }
int cd_lib_call(int x) { return cd_lib_func(x); }
"""
PROG = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
void *cd_lib_addr(void);
int cd_lib_call(int);
#ifdef SHIFT
__attribute__((noinline, used)) void cd_shift(void) { __asm__ volatile(".skip 4096, 0x90"); }
#endif
__attribute__((noinline, aligned(64))) int cd_leaf(int x) { return x * 3 + 1; }
__attribute__((noinline, aligned(64))) void cd_do_setresuid(void) {
    uid_t u = getuid();
    if (setresuid(u, u, u) != 0) perror("setresuid");
}
int main(void) {
    printf("main %p\ncd_leaf %p\ncd_do_setresuid %p\ncd_lib_func %p\nsetresuid %p\nREADY\n",
           (void *)main, (void *)cd_leaf, (void *)cd_do_setresuid, cd_lib_addr(),
           dlsym(RTLD_DEFAULT, "setresuid"));
    fflush(stdout);
    char buf[64];
    while (fgets(buf, sizeof buf, stdin)) {
        if (!strncmp(buf, "setresuid", 9)) cd_do_setresuid();
        if (!strncmp(buf, "fork", 4)) {
            pid_t c = fork();
            if (c == 0) { pause(); _exit(0); }
            printf("child %d\n", (int)c);
            fflush(stdout);
            continue;
        }
        if (!strncmp(buf, "dlopen ", 7)) {
            buf[strcspn(buf, "\n")] = 0;
            void *h = dlopen(buf + 7, RTLD_NOW);
            void *(*get)(void) = h ? (void *(*)(void))dlsym(h, "cd_lib_addr") : 0;
            printf("plug %p\n", get ? get() : 0);
            fflush(stdout);
            continue;
        }
        printf("done %d\n", cd_leaf(1) + cd_lib_call(1));
        fflush(stdout);
    }
    return 0;
}
"""
OWN = ("main", "cd_leaf", "cd_do_setresuid")


def build(d):
    """Compile the variants into directory *d*; returns {name: path}."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "lib.c"), "w") as f:
        f.write(LIB)
    with open(os.path.join(d, "prog.c"), "w") as f:
        f.write(PROG)
    cc = ["gcc", "-O1", "-fno-omit-frame-pointer", "-falign-functions=64", "-fno-toplevel-reorder"]
    lib = os.path.join(d, "libcdsym.so")
    subprocess.run([*cc, "-shared", "-fPIC", "-Wl,-Ttext-segment=0x20000000", "-o", lib,
                    os.path.join(d, "lib.c")], check=True)
    link = ["-L" + d, "-lcdsym", "-Wl,-rpath," + d, "-ldl"]
    out = {"lib": lib, "plug": os.path.join(d, "libcdplug.so")}
    subprocess.run([*cc, "-shared", "-fPIC", "-o", out["plug"], os.path.join(d, "lib.c")], check=True)
    for name, extra in (("pie", ["-pie", "-fPIE"]), ("nopie", ["-no-pie", "-fno-PIE"]),
                        ("rdynamic", ["-pie", "-fPIE", "-rdynamic"]), ("shifted", ["-pie", "-fPIE", "-DSHIFT"])):
        out[name] = os.path.join(d, name)
        subprocess.run([*cc, *extra, "-o", out[name], os.path.join(d, "prog.c"), *link], check=True)
    for name, src in (("stripped", "pie"), ("rdynamic_stripped", "rdynamic")):
        out[name] = os.path.join(d, name)
        shutil.copy(out[src], out[name])
        subprocess.run(["strip", out[name]], check=True)
    return out


def nm_funcs(path):
    r = subprocess.run(["nm", "-S", "--defined-only", path], capture_output=True, text=True, check=True)
    out = {}
    for line in r.stdout.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "TtWi":
            out[p[3].split("@")[0]] = (int(p[0], 16), int(p[1], 16))
    return out


def build_id(path):
    r = subprocess.run(["readelf", "-n", path], capture_output=True, text=True, check=True)
    m = re.search(r"Build ID: ([0-9a-f]+)", r.stdout)
    return m.group(1)


class Prog:
    """A running variant: its printed addresses in .addrs; commands over stdin."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.p.pid
        self.addrs = {}
        for line in self.p.stdout:
            if line.strip() == "READY":
                break
            k, v = line.split()
            self.addrs[k] = int(v, 16)
        assert set(self.addrs) == {*OWN, "cd_lib_func", "setresuid"}, self.addrs

    def cmd(self, c):
        self.p.stdin.write(c + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline()

    def stop(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


# --- the tracefs experiment (also run as a script inside a private mount namespace) ---

def _tracefs_mounts():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "tracefs":
                out.append(left.split()[4])
    return out


def trace_setresuid(exe, unmount_first=False):
    """Run *exe*, trace its setresuid with options/userstacktrace in a private instance, and
    return what was seen. *unmount_first*: only inside a private mount namespace."""
    if unmount_first:
        for mp in sorted(_tracefs_mounts(), key=len, reverse=True):
            subprocess.run(["umount", mp], check=True)
        assert not _tracefs_mounts()
    mounts = _tracefs_mounts()
    root, mounted = (mounts[0], False) if mounts else ("/sys/kernel/tracing", True)
    if mounted:
        subprocess.run(["mount", "-t", "tracefs", "nodev", root], check=True)
    inst = os.path.join(root, "instances", f"cdsym-test-{os.getpid()}")
    prog = Prog([exe])
    sym = Symbolizer()
    res = {"mounted_by_us": mounted, "printed": prog.addrs, "pid": prog.pid}
    try:
        sym.capture(prog.pid)
        os.mkdir(inst)
        ev = os.path.join(inst, "events", "syscalls", "sys_enter_setresuid")

        def put(path, value):
            with open(path, "w") as f:
                f.write(value)

        put(os.path.join(ev, "filter"), f"common_pid == {prog.pid}")
        put(os.path.join(inst, "options", "userstacktrace"), "1")
        put(os.path.join(ev, "enable"), "1")
        assert prog.cmd("setresuid").startswith("done")
        put(os.path.join(ev, "enable"), "0")
        with open(os.path.join(inst, "trace")) as f:
            res["raw"] = f.read()
        put(os.path.join(inst, "options", "sym-userobj"), "1")
        with open(os.path.join(inst, "trace")) as f:
            res["userobj"] = f.read()
        res["maps"] = sym.maps(prog.pid)
        stack = [ln for ln in res["raw"].splitlines() if ln.startswith(" => ")]
        res["addrs"] = [int(re.search(r"<([0-9a-f]+)>", ln).group(1), 16) for ln in stack]
        res["frames"] = sym.symbolize(prog.pid, res["addrs"])
    finally:
        prog.stop()
        sym.close()
        if os.path.isdir(inst):
            for opt in ("sym-userobj", "userstacktrace"):
                try:
                    with open(os.path.join(inst, "options", opt), "w") as f:
                        f.write("0")
                except OSError:
                    pass
            os.rmdir(inst)
        if mounted:
            subprocess.run(["umount", root], check=True)
    return res


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--trace":
    print(json.dumps(trace_setresuid(sys.argv[2], unmount_first=True)))
    sys.exit(0)


# --- tests ---

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="reads other processes' map_files and tracefs: run as root"),
              pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("nm")),
                                 reason="needs gcc and binutils (apt-get install gcc)")]


@pytest.fixture(scope="module")
def progs(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("symprogs")))


@pytest.fixture
def run():
    started = []

    def start(argv):
        p = Prog(argv if isinstance(argv, list) else [argv])
        started.append(p)
        return p
    yield start
    for p in started:
        p.stop()


def check_own(frames, names, exe, expect_names, funcs):
    for name, f in zip(names, frames):
        assert f["module"] == os.path.realpath(exe), f
        assert f["build_id"] == build_id(exe)
        if expect_names:
            assert f["symbol"] == name and f["symoff"] == "0x1", f
            assert f["vaddr"] == hex(funcs[name][0] + 1)
        else:
            assert f["symbol"] is None and f["symoff"] is None, f
            assert f["vaddr"] == hex(funcs[name][0] + 1)


@pytest.mark.parametrize("variant,named", [("pie", True), ("nopie", True), ("rdynamic_stripped", True),
                                           ("stripped", False)])
def test_own_functions_library_and_libc(progs, run, variant, named):
    """+1 into each function: the name and offset, the link-time address nm gives, the build-id
    readelf gives; in a shared library linked at 0x20000000 (vaddr != file offset) and in libc
    (setresuid, not its alias __setresuid). A stripped PIE exports nothing: no names, never wrong
    ones."""
    exe = progs[variant]
    p = run(exe)
    s = Symbolizer()
    assert s.capture(p.pid)
    names = [*OWN, "cd_lib_func", "setresuid"]
    frames = s.symbolize(p.pid, [p.addrs[n] + 1 for n in names])
    unstripped = {"stripped": "pie", "rdynamic_stripped": "rdynamic"}.get(variant, variant)
    check_own(frames[:3], OWN, exe, named, nm_funcs(progs[unstripped]))
    lib = frames[3]
    assert lib["module"] == os.path.realpath(progs["lib"]) and lib["symbol"] == "cd_lib_func"
    assert lib["symoff"] == "0x1" and lib["vaddr"] == hex(nm_funcs(progs["lib"])["cd_lib_func"][0] + 1)
    assert int(lib["vaddr"], 16) != int(lib["offset"], 16)
    libc = frames[4]
    assert os.path.basename(libc["module"]) == "libc.so.6"
    assert (libc["symbol"], libc["symoff"]) == ("setresuid", "0x1")
    assert format_frame(libc) == "setresuid+0x1 (libc.so.6)"
    if variant == "nopie":
        assert int(frames[0]["vaddr"], 16) == int(frames[0]["addr"], 16)  # loaded at its link address
        assert int(frames[0]["offset"], 16) != int(frames[0]["vaddr"], 16)
    s.close()


def test_past_the_end_and_outside_mappings(progs, run):
    """An address in the padding after cd_leaf (aligned(64)) names nothing; so do addresses in
    no mapping, anonymous memory, or given as garbage."""
    exe = progs["pie"]
    p = run(exe)
    start, size = nm_funcs(exe)["cd_leaf"]
    leaf = p.addrs["cd_leaf"]
    s = Symbolizer()
    f_in, f_out, f_none, f_bad = s.symbolize(p.pid, [leaf + size - 1, leaf + size, 0x10, "zz"])
    assert f_in["symbol"] == "cd_leaf"
    assert f_out["symbol"] is None and f_out["module"] == os.path.realpath(exe)
    assert format_frame(f_out).endswith(f"(pie+{hex(start + size)})")
    assert f_none == {"addr": "0x10", "module": None, "offset": None, "vaddr": None, "symbol": None,
                      "symoff": None, "build_id": None}
    assert f_bad["addr"] is None and f_bad["symbol"] is None
    stack = next(m for m in s.maps(p.pid) if m["path"] == "[stack]")
    assert s.symbolize(p.pid, [stack["start"] + 8])[0]["symbol"] is None


def test_after_exit_and_for_a_pid_never_seen(progs, run):
    p = run(progs["pie"])
    s = Symbolizer()
    s.capture(p.pid)
    pid, addr = p.pid, p.addrs["cd_leaf"] + 2
    p.stop()
    assert not os.path.exists(f"/proc/{pid}")
    f, = s.symbolize(pid, [addr])
    assert (f["symbol"], f["symoff"]) == ("cd_leaf", "0x2")
    assert s.capture(pid) is False  # gone: what was captured stays
    s.forget(pid)
    assert s.symbolize(pid, [addr])[0]["symbol"] is None  # forgotten, gone: nulls, no exception


def test_without_held_handles_and_for_kernel_threads(progs, run, tmp_path):
    """max_handles=0: files are opened when first symbolized: through map_files while the process
    lives, afterwards only through a path whose inode is still the mapped one (an unlinked
    binary then has no names, not wrong ones); a kernel thread (empty maps) gives nulls."""
    exe = str(tmp_path / "prog")
    shutil.copy(progs["pie"], exe)
    with Symbolizer(max_handles=0) as s:
        p = run(exe)
        s.capture(p.pid)
        pid, leaf = p.pid, p.addrs["cd_leaf"] + 1
        p.stop()
        assert s.symbolize(pid, [leaf])[0]["symbol"] == "cd_leaf"  # host path, same inode
    with Symbolizer(max_handles=0) as s:
        shutil.copy(progs["pie"], exe)
        p = run(exe)
        s.capture(p.pid)
        pid, leaf = p.pid, p.addrs["cd_leaf"] + 1
        p.stop()
        os.unlink(exe)
        f, = s.symbolize(pid, [leaf])
        assert f["symbol"] is None and f["module"] == exe and f["offset"] is not None
        assert s.symbolize(2, [0xffffffff81000000])[0]["symbol"] is None


def test_handle_budget(progs, run):
    """With room for 2 handles, capturing a process that maps 4 files holds at most 2 more file
    descriptors, and every frame is still named while it lives (the others open on demand)."""
    p = run(progs["pie"])
    fds = len(os.listdir("/proc/self/fd"))
    with Symbolizer(max_handles=2) as s:
        s.capture(p.pid)
        assert len({(m["dev"], m["inode"]) for m in s.maps(p.pid) if m["inode"]}) >= 4
        assert len(os.listdir("/proc/self/fd")) <= fds + 2
        names = [*OWN, "cd_lib_func", "setresuid"]
        frames = s.symbolize(p.pid, [p.addrs[n] + 1 for n in names])
        assert [f["symbol"] for f in frames] == names
        assert len(os.listdir("/proc/self/fd")) <= fds + 2
    assert len(os.listdir("/proc/self/fd")) == fds


def test_capture_is_cheap_when_nothing_changed(progs, run):
    p = run(progs["pie"])
    s = Symbolizer()
    s.capture(p.pid)
    before = s.maps(p.pid)
    s.symbolize(p.pid, [p.addrs["main"]])
    s.capture(p.pid)
    assert s.maps(p.pid) is before  # same layout object, nothing re-parsed
    q = run(progs["pie"])  # another process: its own layout (ASLR), files shared
    s.capture(q.pid)
    assert s.maps(q.pid) is not before
    assert s.symbolize(q.pid, [q.addrs["main"]])[0]["symbol"] == "main"


def test_fork_child_and_library_loaded_later(progs, run):
    """A fork child shares its parent's captured layout (capture(child, parent=) reads nothing;
    its maps are byte-identical anyway); a library dlopen()ed after the capture is found by the
    re-capture that an address outside every mapping triggers."""
    p = run(progs["pie"])
    with Symbolizer() as s:
        s.capture(p.pid)
        child = int(p.cmd("fork").split()[1])
        try:
            assert s.capture(child, parent=p.pid) and s.maps(child) is s.maps(p.pid)
            s.forget(child)
            assert s.capture(child) and s.maps(child) is s.maps(p.pid)
            assert s.symbolize(child, [p.addrs["cd_leaf"] + 1])[0]["symbol"] == "cd_leaf"
        finally:
            os.kill(child, 9)
        before = s.maps(p.pid)
        plug = int(p.cmd("dlopen " + progs["plug"]).split()[1], 16)
        assert plug
        f, = s.symbolize(p.pid, [plug + 1])
        assert f["module"] == os.path.realpath(progs["plug"]) and (f["symbol"], f["symoff"]) == ("cd_lib_func", "0x1")
        assert s.maps(p.pid) is not before


def test_deleted_and_replaced_binary(progs, run, tmp_path):
    """The executable is unlinked and another program is put at its path: map_files still reads
    the mapped file; without map_files the new file's inode does not match and gives no names
    (not the wrong ones the new file would give)."""
    exe = str(tmp_path / "victim")
    shutil.copy(progs["pie"], exe)
    p = run(exe)
    os.unlink(exe)
    shutil.copy(progs["shifted"], exe)
    wrong = nm_funcs(exe)
    assert wrong["cd_leaf"][0] != nm_funcs(progs["pie"])["cd_leaf"][0]
    with Symbolizer() as s:
        f, = s.symbolize(p.pid, [p.addrs["cd_leaf"] + 1])
        assert f["module"] == exe + " (deleted)"
        assert (f["symbol"], f["symoff"]) == ("cd_leaf", "0x1")
        assert format_frame(f) == "cd_leaf+0x1 (victim (deleted))"
    with Symbolizer(use_map_files=False) as s:
        f, = s.symbolize(p.pid, [p.addrs["cd_leaf"] + 1])
        assert f["module"] == exe + " (deleted)" and f["offset"] is not None
        assert f["symbol"] is None and f["build_id"] is None


def test_other_mount_namespace(progs, run, tmp_path):
    """The program runs in a private mount namespace where a bind mount puts the real binary
    over a directory that holds a different program on the host: map_files and
    /proc/PID/root/PATH both read the process's file; the host path would give wrong names."""
    real, decoy = tmp_path / "real", tmp_path / "decoy"
    real.mkdir()
    decoy.mkdir()
    shutil.copy(progs["pie"], real / "prog")
    shutil.copy(progs["shifted"], decoy / "prog")
    p = run(["unshare", "-m", "--propagation", "private", "--", "sh", "-c",
             f"mount --bind {real} {decoy} && exec {decoy}/prog"])
    assert os.readlink(f"/proc/{p.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    for use_map_files in (True, False):
        with Symbolizer(use_map_files=use_map_files) as s:
            f, = s.symbolize(p.pid, [p.addrs["cd_do_setresuid"] + 1])
            assert f["module"] == f"{decoy}/prog"
            assert (f["symbol"], f["symoff"]) == ("cd_do_setresuid", "0x1"), (use_map_files, f)
            assert f["build_id"] == build_id(str(real / "prog"))
    host = symbolize_maps(parse_maps(open(f"/proc/{p.pid}/maps").read()), [p.addrs["cd_do_setresuid"] + 1],
                          lambda m: read_elf_path(m["path"]))
    assert host[0]["symbol"] != "cd_do_setresuid"  # what reading the host path blindly would say


def test_debug_file_by_build_id(progs, run, tmp_path):
    """A stripped binary whose symbols are in DEBUG_DIR/.build-id/xx/rest.debug (as debuginfo
    packages install them) is named from there."""
    exe = str(tmp_path / "prog")
    shutil.copy(progs["pie"], exe)
    bid = build_id(exe)
    dbg = tmp_path / "debug" / ".build-id" / bid[:2] / (bid[2:] + ".debug")
    dbg.parent.mkdir(parents=True)
    subprocess.run(["objcopy", "--only-keep-debug", exe, str(dbg)], check=True)
    subprocess.run(["strip", exe], check=True)
    p = run(exe)
    with Symbolizer(debug_dir=str(tmp_path / "nodebug")) as s:
        assert s.symbolize(p.pid, [p.addrs["cd_leaf"] + 1])[0]["symbol"] is None
    with Symbolizer(debug_dir=str(tmp_path / "debug")) as s:
        f, = s.symbolize(p.pid, [p.addrs["cd_leaf"] + 1])
        assert (f["symbol"], f["symoff"], f["build_id"]) == ("cd_leaf", "0x1", bid)


def test_libc_from_dynsym_without_debug_files(progs, run, tmp_path):
    p = run(progs["pie"])
    with Symbolizer(debug_dir=str(tmp_path)) as s:
        f, = s.symbolize(p.pid, [p.addrs["setresuid"] + 3])
        assert (f["symbol"], f["symoff"]) == ("setresuid", "0x3")


def test_recorded_maps_pure(progs, run):
    """symbolize_maps on a recorded maps list (a snapshot) gives what the live symbolizer gives."""
    p = run(progs["nopie"])
    maps = parse_maps(open(f"/proc/{p.pid}/maps").read())
    assert all(m["start"] < m["end"] for m in maps) and any(m["path"] == "[stack]" for m in maps)
    elves = {}
    for m in maps:
        if m["path"] and m["path"].startswith("/") and m["path"] not in elves:
            elves[m["path"]] = read_elf_path(m["path"])
    addrs = [p.addrs[n] + 1 for n in (*OWN, "cd_lib_func", "setresuid")]
    recorded = json.loads(json.dumps(maps))
    with Symbolizer() as s:
        assert symbolize_maps(recorded, addrs, elves) == s.symbolize(p.pid, addrs)
    bare = symbolize_maps(recorded, addrs)
    assert bare[0]["module"] == os.path.realpath(progs["nopie"]) and bare[0]["symbol"] is None and bare[0]["offset"]


def _check_trace(res, exe):
    """The kernel's user stack for setresuid: the first entry is the user IP in libc's setresuid
    (the syscall instruction's successor); libc's syscall wrappers keep no frame pointer, so the
    frame-pointer walk continues from cd_do_setresuid's frame and its caller (main) is next."""
    print(res["raw"])
    print(res["userobj"])
    print("\n".join(format_frame(f) for f in res["frames"]))
    if "<user stack trace>" not in res["raw"] and "sys_setresuid(" in res["raw"] \
            and platform.machine() != "x86_64":
        # the event came and no stack with it: ftrace_trace_userstack() is an empty stub without
        # CONFIG_USER_STACKTRACE_SUPPORT, which arm64 selects only in later kernels (Debian 12's
        # arm64 6.1 offers the option and writes nothing; x86 always selects it, so there this fails)
        pytest.skip("this kernel writes no user stack records (no CONFIG_USER_STACKTRACE_SUPPORT)")
    assert "<user stack trace>" in res["raw"]
    frames = res["frames"]
    assert len(frames) >= 2, res["raw"]
    top = frames[0]
    assert top["symbol"] == "setresuid" and os.path.basename(top["module"]) == "libc.so.6", frames
    funcs = nm_funcs(exe)
    mine = [f for f in frames if f["module"] == os.path.realpath(exe)]
    assert mine, frames
    f = mine[0]
    assert f["symbol"] in ("cd_do_setresuid", "main"), frames
    lo, size = funcs[f["symbol"]]
    assert lo < int(f["vaddr"], 16) <= lo + size  # a return address: after the call, inside the caller
    # options/sym-userobj, read while the process lived: PATH[+0xOFF] relative to the VMA
    entries = [parse_userobj(ln) for ln in res["userobj"].splitlines() if ln.startswith(" => ")]
    assert len(entries) == len(frames)
    for e, fr in zip(entries, frames):
        assert e["path"] == fr["module"] and e["addr"] is None
        assert userobj_address(e, res["maps"]) == int(fr["addr"], 16)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel/tracing"), reason="kernel without tracefs")
def test_tracefs_userstacktrace_as_mounted(progs):
    """tracefs as this machine has it (mounted, or mounted here and unmounted afterwards)."""
    before = _tracefs_mounts()
    res = trace_setresuid(progs["pie"])
    assert _tracefs_mounts() == before
    if before:
        assert not os.path.exists(os.path.join(before[0], "instances", f"cdsym-test-{os.getpid()}"))
    _check_trace(res, progs["pie"])


@pytest.mark.skipif(not os.path.isdir("/sys/kernel/tracing"), reason="kernel without tracefs")
def test_tracefs_userstacktrace_unmounted_in_private_namespace(progs):
    """In a private mount namespace with every tracefs mount removed, the experiment mounts
    tracefs itself; the host's mounts are untouched."""
    before = _tracefs_mounts()
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "--", sys.executable, os.path.abspath(__file__),
                        "--trace", progs["nopie"]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _tracefs_mounts() == before
    res = json.loads(r.stdout)
    assert res["mounted_by_us"] is True
    _check_trace(res, progs["nopie"])
