"""Language runtimes that catch SIGSEGV (coredoctor.runtimes), on real programs: a Go program
(Debian golang-go, built here once per session) with and without GOTRACEBACK=crash, Python with
faulthandler, a HotSpot JVM with and without -XX:-CreateCoredumpOnCrash. For each: check's
verdict on the running process (the signal gate pass/fail instead of "a handler decides", dumps
true/false), then a real fault, and what the kernel did: a core at the path check gave, or none.

The runtime re-raises some faults as SIGABRT (Go's crash(), HotSpot's os::abort()): the core
pattern here ends in %s, so the path check gives must carry the signal the runtime re-raises."""
import glob
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

import lab as L

HERE = os.path.dirname(os.path.abspath(__file__))

GO_SRC = """package main

import "os"

var p *int

func main() {
	os.Stdout.WriteString("READY\\n")
	b := make([]byte, 1)
	os.Stdin.Read(b)
	*p = 1 // a real fault: SIGSEGV, which the Go runtime catches
}
"""

JAVA_SRC = """import java.lang.reflect.Field;
import sun.misc.Unsafe;

public class Crash {
    public static void main(String[] a) throws Exception {
        Field f = Unsafe.class.getDeclaredField("theUnsafe");
        f.setAccessible(true);
        Unsafe u = (Unsafe) f.get(null);
        System.out.println("READY");
        System.out.flush();
        System.in.read();
        u.putAddress(0, 1);  // a real fault in the JVM: SIGSEGV, a crash (not a Java exception)
    }
}
"""

PY_SRC = ("import ctypes, sys\nprint('READY', flush=True)\nsys.stdin.readline()\n"
          "ctypes.string_at(0)  # a real fault: SIGSEGV\n")


@pytest.fixture(scope="session")
def go_program(tmp_path_factory):
    go = shutil.which("go") or "/usr/lib/go/bin/go"
    L.require_installed(go, "golang-go")
    d = tmp_path_factory.mktemp("gobuild")
    (d / "crashgo.go").write_text(GO_SRC)
    env = dict(os.environ, GOCACHE=str(d / "cache"), GOPATH=str(d / "gopath"), GO111MODULE="off",
               CGO_ENABLED="0")
    subprocess.run([go, "build", "-o", str(d / "crashgo"), str(d / "crashgo.go")], check=True, env=env,
                   cwd=str(d), timeout=180, capture_output=True)
    os.chmod(d, 0o755)
    return str(d / "crashgo")


@pytest.fixture(scope="session")
def java_class(tmp_path_factory):
    javac = shutil.which("javac") or "/usr/bin/javac"
    L.require_installed(javac, "default-jdk-headless")
    d = tmp_path_factory.mktemp("javabuild")
    (d / "Crash.java").write_text(JAVA_SRC)
    subprocess.run([javac, "-nowarn", "-d", str(d), str(d / "Crash.java")], check=True, timeout=180,
                   capture_output=True)
    os.chmod(d, 0o755)
    return str(d)


def _unlimited_core():
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _start(argv, env, cwd):
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, cwd=cwd, preexec_fn=_unlimited_core)
    deadline = time.time() + 60
    line = b""
    while time.time() < deadline and not line.startswith(b"READY"):
        line = p.stdout.readline()
        if not line:
            break
    if not line.startswith(b"READY"):
        L.end(p)
        raise RuntimeError(f"{argv[0]} did not start: {line!r} {p.stderr.read()[:2000]!r}")
    return p


def _check(pid):
    r = L.coredoctor("check", "--json", str(pid))
    assert r.returncode in (0, 1, 3), r.stderr
    t = json.loads(r.stdout)["targets"][0]
    sig = next(g for g in t["gates"] if g["id"] == "signal")
    return t, sig


def _fault(p, timeout=60):
    p.stdin.write(b"\n")
    p.stdin.flush()
    p.stdin.close()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        L.end(p)
        raise
    err = p.stderr.read().decode("utf-8", "replace")
    p.stdout.close()
    p.stderr.close()
    return p.returncode, err


def _setup(labdir):
    root, _ = labdir
    cores = L.make_cores(root)
    # no %e: the thread that dumps names it, and a JVM's threads have many names
    L.set_sysctls({"kernel.core_pattern": f"{cores}/core.%p.%s", "kernel.core_uses_pid": 0,
                   "fs.suid_dumpable": 0})
    return root, cores


def _core_of(cores, pid):
    """The core of *pid* once it has been reaped: a file core is written by the dying task in
    do_coredump() before it exits, so there is nothing to wait for."""
    m = glob.glob(os.path.join(cores, f"core.{pid}.*"))
    assert len(m) <= 1, m
    return (m[0], os.path.getsize(m[0])) if m else (None, 0)


def _assert_core_verdict(t, sig, expect_sig_status):
    assert sig["status"] == expect_sig_status, sig
    if expect_sig_status == "pass":
        assert t["dumps"] is True, (t["verdict"], t["gates"])
    else:
        assert t["dumps"] is False and t["blocking_gate"] == "signal", (t["verdict"], t["gates"])


@pytest.mark.parametrize("traceback", [None, "single", "crash"])
def test_go_gotraceback(labdir, go_program, traceback):
    root, cores = _setup(labdir)
    env = {k: v for k, v in os.environ.items() if k != "GOTRACEBACK"}
    if traceback is not None:
        env["GOTRACEBACK"] = traceback
    p = _start([go_program], env, root)
    try:
        t, sig = _check(p.pid)
    except BaseException:
        L.end(p)
        raise
    crash = traceback == "crash"
    _assert_core_verdict(t, sig, "pass" if crash else "fail")
    assert "a Go program" in sig["evidence"] and "signal_unix.go" in sig["evidence"]
    if not crash:
        o = sig.get("origin")
        assert o and o["kind"] == "runtime" and o["program"] == "go", sig
        assert o["text"] == (None if traceback is None else f"GOTRACEBACK={traceback}")
        assert any("GOTRACEBACK=crash" in f["summary"] for f in t["fixes"]), t["fixes"]
    dest = t["core_destination"]["path"]
    rc, err = _fault(p)
    path, size = _core_of(cores, p.pid)
    assert "panic: runtime error: invalid memory address or nil pointer dereference" in err, err[-2000:]
    if crash:
        # crash() -> dieFromSignal(SIGABRT): killed by SIGABRT with a core, where check said
        assert rc == -signal.SIGABRT, (rc, err[-500:])
        assert path == dest and size > 0, (path, dest, os.listdir(cores))
        assert path.endswith(f".{int(signal.SIGABRT)}"), path
    else:
        # fatalpanic -> exit(2): no signal, no core
        assert rc == 2, (rc, err[-500:])
        assert path is None, os.listdir(cores)


@pytest.mark.parametrize("how", ["-X", "env"])
def test_python_faulthandler(labdir, how):
    root, cores = _setup(labdir)
    script = os.path.join(root, "pyfault.py")
    with open(script, "w") as f:
        f.write(PY_SRC)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    argv = [sys.executable, script]
    if how == "-X":
        argv = [sys.executable, "-X", "faulthandler", script]
    else:
        env["PYTHONFAULTHANDLER"] = "1"
    p = _start(argv, env, root)
    try:
        t, sig = _check(p.pid)
    except BaseException:
        L.end(p)
        raise
    _assert_core_verdict(t, sig, "pass")
    assert "faulthandler" in sig["evidence"], sig
    dest = t["core_destination"]["path"]
    rc, err = _fault(p)
    assert "Fatal Python error: Segmentation fault" in err, err[-1000:]
    assert rc == -signal.SIGSEGV, rc
    path, size = _core_of(cores, p.pid)
    assert path == dest and size > 0, (path, dest, os.listdir(cores))


@pytest.mark.parametrize("flag", [None, "argv", "JAVA_TOOL_OPTIONS"])
def test_java_create_coredump_on_crash(labdir, java_class, flag):
    root, cores = _setup(labdir)
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS",
                                                           "_JAVA_OPTIONS")}
    argv = ["java", "-Xmx32m", "-Xss512k", "-XX:+UseSerialGC", "-Xint", "-XX:-UsePerfData",
            f"-XX:ErrorFile={root}/hs_err_%p.log", "-cp", java_class]
    if flag == "argv":
        argv.append("-XX:-CreateCoredumpOnCrash")
    elif flag == "JAVA_TOOL_OPTIONS":
        env["JAVA_TOOL_OPTIONS"] = "-XX:-CreateCoredumpOnCrash"
    argv.append("Crash")
    p = _start(argv, env, root)
    try:
        t, sig = _check(p.pid)
    except BaseException:
        L.end(p)
        raise
    on = flag is None
    _assert_core_verdict(t, sig, "pass" if on else "fail")
    assert "HotSpot" in sig["evidence"] and "os_posix.cpp" in sig["evidence"], sig
    if not on:
        o = sig.get("origin")
        assert o and o["kind"] == "runtime" and o["program"] == "java", sig
        assert o["text"] == "-XX:-CreateCoredumpOnCrash"
        assert (o["argv"] == ["-XX:-CreateCoredumpOnCrash"]) == (flag == "argv"), o
        assert flag in sig["evidence"] if flag == "JAVA_TOOL_OPTIONS" else "command line" in sig["evidence"]
    dest = t["core_destination"]["path"]
    rc, err = _fault(p, timeout=120)
    assert os.path.exists(f"{root}/hs_err_{p.pid}.log"), (rc, err[-1000:])
    path, size = _core_of(cores, p.pid)
    if on:
        # os::abort(true) -> ::abort(): SIGABRT with the default action, a core where check said
        assert rc == -signal.SIGABRT, (rc, err[-1000:])
        assert path == dest and size > 0, (path, dest, os.listdir(cores))
        assert path.endswith(f".{int(signal.SIGABRT)}"), path
    else:
        # os::abort(false) -> ::_exit(1): no signal, no core
        assert rc == 1, (rc, err[-1000:])
        assert path is None, os.listdir(cores)


RUST_SRC = """use std::io::Read;
fn main() {
    println!("READY");
    let mut b = [0u8; 1];
    let _ = std::io::stdin().read(&mut b);
    unsafe { std::ptr::write_volatile(std::ptr::null_mut::<i32>(), 1); } // a real fault: SIGSEGV
}
"""


def test_rust_stack_overflow_handler_lets_a_fault_dump(labdir, tmp_path_factory):
    rustc = shutil.which("rustc") or os.path.expanduser("~/.cargo/bin/rustc")
    if not os.path.exists(rustc):
        pytest.skip("no rustc (Debian's rustc, or rustup): the Rust row is covered by tests/unit only")
    d = tmp_path_factory.mktemp("rustbuild")
    (d / "crashrs.rs").write_text(RUST_SRC)
    subprocess.run([rustc, "-O", str(d / "crashrs.rs"), "-o", str(d / "crashrs")], check=True, timeout=180,
                   capture_output=True)
    os.chmod(d, 0o755)
    root, cores = _setup(labdir)
    p = _start([str(d / "crashrs")], dict(os.environ), root)
    try:
        t, sig = _check(p.pid)
    except BaseException:
        L.end(p)
        raise
    _assert_core_verdict(t, sig, "pass")
    assert "a Rust program" in sig["evidence"] and "stack_overflow.rs" in sig["evidence"], sig
    dest = t["core_destination"]["path"]
    rc, _err = _fault(p)
    assert rc == -signal.SIGSEGV, rc
    path, size = _core_of(cores, p.pid)
    assert path == dest and size > 0, (path, dest, os.listdir(cores))


def test_node_trap_handler_re_raises_a_kill_sent_sigsegv(labdir):
    node = shutil.which("node")
    L.require_installed(node or "/usr/bin/node", "nodejs")
    root, cores = _setup(labdir)
    p = _start([node, "-e", "console.log('READY'); process.stdin.resume()"], dict(os.environ), root)
    try:
        r = L.coredoctor("check", "--json", "--how", "kill", str(p.pid))
        t = json.loads(r.stdout)["targets"][0]
        sig = next(g for g in t["gates"] if g["id"] == "signal")
    except BaseException:
        L.end(p)
        raise
    _assert_core_verdict(t, sig, "pass")
    assert "a Node.js process" in sig["evidence"], sig
    dest = t["core_destination"]["path"]
    os.kill(p.pid, signal.SIGSEGV)   # kill-sent: V8's handler is not a wasm trap -> SIG_DFL, raise()
    p.wait(60)
    assert p.returncode == -signal.SIGSEGV, p.returncode
    for f in (p.stdin, p.stdout, p.stderr):
        f.close()
    path, size = _core_of(cores, p.pid)
    assert path == dest and size > 0, (path, dest, os.listdir(cores))
