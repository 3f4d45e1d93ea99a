"""
The gate table
--------------
The kernel's decision path as an ordered table of :class:`Gate` records (see
kernel-coredump-path.md). Order follows the kernel: the signal side (``get_signal()``), then
``vfs_coredump()`` (``do_coredump()`` before 6.17), then the file, pipe or socket branch, then
what user space does with the core. The evaluator reads ``order`` (strictly increasing, the
order the kernel meets the checks in), ``branch`` (which core_pattern kinds the gate is on) and
``blocking`` (a failure stops the kernel there). Each row cites its source.
"""

from typing import Any, Callable, Dict, Optional, Tuple

from coredoctor.kernel import predicates as P

__all__ = ["Gate", "GATES", "GATE_IDS", "BRANCHES", "on_branch"]

#: branch -> the core_pattern kinds (file, pipe, socket) a gate of that branch applies to
BRANCHES: Dict[str, Tuple[str, ...]] = {
    "signal": ("file", "pipe", "socket"),    # get_signal(): before any core_pattern is read
    "common": ("file", "pipe", "socket"),    # vfs_coredump() before the branch
    "branch": ("file", "pipe", "socket"),    # in every branch, with a branch-specific rule
    "file": ("file",),
    "pipe": ("pipe",),
    "socket": ("socket",),
    "handler": ("pipe", "socket"),           # user space, after the kernel handed the core over
    "content": ("file", "pipe", "socket"),   # what the core holds, wherever it goes
}


class Gate:
    """One gate of the core-dump path."""
    __slots__ = ("id", "order", "branch", "blocking", "title", "kernel_ref", "predicate")

    def __init__(self, id: str, order: int, branch: str, blocking: bool, title: str,  # noqa: A002
                 kernel_ref: str, predicate: Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]) -> None:
        self.id, self.order, self.branch, self.blocking, self.title = id, order, branch, blocking, title
        self.kernel_ref, self.predicate = kernel_ref, predicate

    def __repr__(self) -> str:
        return f"Gate({self.id!r}, {self.order})"


def on_branch(g: Gate, kind: str) -> bool:
    return kind in BRANCHES[g.branch]


GATES: Tuple[Gate, ...] = (
    Gate("signal", 10, "signal", True, "the signal reaches its default action",
         "get_signal(), sig_kernel_coredump(), force_sig_info_to_task() -- kernel/signal.c (3.10-6.19)", P.signal),
    Gate("kernel-config", 15, "common", True, "the kernel can dump at all",
         "vfs_coredump(): !binfmt->core_dump; CONFIG_COREDUMP -- fs/coredump.c (3.10-6.19)", P.kernel_config),
    Gate("dumpable", 20, "common", True, "the process is dumpable",
         "vfs_coredump(): __get_dumpable(cprm.mm_flags) == 0 -- fs/coredump.c; set by commit_creds() "
         "kernel/cred.c, begin_new_exec() fs/exec.c, prctl(PR_SET_DUMPABLE) kernel/sys.c (3.10-6.19)", P.dumpable),
    Gate("rlimit-core", 30, "branch", True, "RLIMIT_CORE allows a core",
         "file: cprm.limit < binfmt->min_coredump; pipe: cprm.limit == 1 -- do_coredump()/coredump_file(), "
         "coredump_pipe() fs/coredump.c (3.10-6.19; pipe message reworded in 6.12, c114e9948c2b)", P.rlimit_core),
    Gate("suid-path", 40, "file", True, "dumpable=2 needs an absolute core name",
         "need_suid_safe && corename[0] != '/' -- fs/coredump.c (since 3.6)", P.suid_path),
    Gate("pipe-handler", 50, "pipe", True, "the pipe helper can be started",
         "call_usermodehelper_exec(UMH_WAIT_EXEC) -- fs/coredump.c; \"Core dump to |%s pipe failed\"",
         P.pipe_handler),
    Gate("socket-handler", 55, "socket", True, "a server listens on the core socket",
         "coredump_sock_connect() -- fs/coredump.c (6.16+; @@ protocol 6.17+)", P.socket_handler),
    Gate("core-dir", 60, "file", True, "the core's directory can be written",
         "filp_open()/file_open_root(O_CREAT|O_EXCL|O_NOFOLLOW) -- fs/coredump.c; may_open(), "
         "generic_permission() fs/namei.c (3.10-6.19; init_task root for dumpable=2 since 4.x)", P.core_dir),
    Gate("core-file", 70, "file", True, "the core file can be created and kept",
         "do_unlinkat() unless dumpable=2; i_nlink/S_ISREG/owner/\"(i_mode & 0677) != 0600\" checks -- "
         "fs/coredump.c (unlink and checks since ~4.3; absent in RHEL7's 3.10; messages 5.15+)", P.core_file),
    Gate("space", 80, "file", True, "there is room for the core",
         "dump_emit() -> __kernel_write() ENOSPC -- fs/coredump.c", P.space),
    Gate("handler-policy", 90, "handler", True, "the handler keeps the core",
         "user space: systemd-coredump (src/coredump/coredump.c), apport (data/apport)", P.handler_policy),
    Gate("rlimit-fsize", 100, "file", False, "RLIMIT_FSIZE does not cut the core",
         "generic_write_check_limits() mm/filemap.c via dump_emit()", P.rlimit_fsize),
    Gate("coredump-filter", 110, "content", False, "the core holds the memory that matters",
         "vma_dump_size(), MMF_DUMP_FILTER_* -- fs/coredump.c, include/linux/sched/coredump.h", P.coredump_filter),
)

GATE_IDS: Tuple[str, ...] = tuple(g.id for g in GATES)
