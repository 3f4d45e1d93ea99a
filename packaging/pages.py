"""
The prose of coredoctor's man pages: what argparse does not hold
---------------------------------------------------------------
One entry per page: ``coredoctor`` for coredoctor(8), and the subcommand's name for
coredoctor-NAME(8). SYNOPSIS and OPTIONS are generated from the parser (:mod:`gen`); this table
has the sections bcc's man pages use (DESCRIPTION, EXIT STATUS, FILES, OVERHEAD for tools that
trace, EXAMPLES, SEE ALSO). A paragraph that starts with ``$ `` is an example command (its other
lines explain it); a ``(term, text)`` pair is a tagged paragraph.

``tests/packaging/test_docs.py`` fails when a subcommand of the parser has no entry here (or the
other way round), when an entry lacks a required section, when a tracing command has no
OVERHEAD, and when an example names an option that the parser does not have -- so the
prose cannot silently fall behind the options.

Exit codes and file paths are those of the code (``cli.py``, ``errors.py``, ``fix/journal.py``,
``trace/tracefs.py``, ``history/``); figures are the README's (``bench/``).
"""

from typing import Dict, List, Union

Section = Union[str, List[object]]

#: sections every page must have besides NAME, SYNOPSIS and OPTIONS
REQUIRED = ("DESCRIPTION", "EXIT STATUS", "FILES", "EXAMPLES", "SEE ALSO")
#: subcommands that trace the kernel live: their page must say what that costs
TRACING = ("trace", "watch")

_ERRORS = ("2", "bad usage, no such target, not run as root where root is needed, a corrupt "
           "snapshot, or an error the system reported; the reason is one line on standard error")
_INTERRUPTED = ("130", "interrupted (SIGINT)")

PAGES: Dict[str, Dict[str, Section]] = {
    "coredoctor": {
        "NAME": "why a crash would leave no core dump, and what to change so that it does",
        "DESCRIPTION": [
            "coredoctor reads, for a running process, everything the kernel consults when that "
            "process dies of a fatal signal -- the signal's disposition, the process's dumpable flag "
            "and credentials, its RLIMIT_CORE and RLIMIT_FSIZE, kernel.core_pattern and the handler it "
            "names, fs.suid_dumpable, the core directory's owner, mode and free space in the process's "
            "mount namespace -- and evaluates the kernel's core-dump gates in the kernel's order. It "
            "names the first gate that blocks, the evidence it read, and the smallest change that "
            "would let the next crash leave a core.",
            "Only the snapshot layer reads the system; a snapshot saved on one host can be evaluated "
            "on another (check --from). Most commands read other processes' credentials and limits "
            "and must run as root. The output of every command is plain text by default and JSON "
            "with --json (the schemas coredoctor.check/1, snapshot/1, fix/1, crashes/1, canary/1 "
            "change only by addition).",
        ],
        "EXIT STATUS": [
            ("0", "success (for check: every target would leave a core)"),
            ("1", "check and canary: at least one target would leave no core, or it is undecided"),
            _ERRORS,
            _INTERRUPTED,
            "Each command's page lists its own codes.",
        ],
        "ENVIRONMENT": [
            ("COREDOCTOR_STATE_DIR", "where fix keeps its journal (default /var/lib/coredoctor)"),
        ],
        "FILES": [
            ("/proc/PID/", "status, limits, stat, cgroup, mountinfo, root and cwd of each process read"),
            ("/proc/sys/kernel/core_pattern", "where the kernel writes a core, or which handler "
             "receives it (also core_pipe_limit and core_uses_pid)"),
            ("/proc/sys/fs/suid_dumpable", "whether processes that changed credentials may dump"),
            ("/var/lib/coredoctor/fixes/", "the journal of applied fixes (see coredoctor-fix(8))"),
        ],
        "EXAMPLES": [
            "$ sudo coredoctor check ovs-vswitchd\nA process name, a pid, or a unit (NAME.service).",
            "$ sudo coredoctor check --all\nEvery process on the host, one line per blocking gate.",
            "$ sudo coredoctor snapshot --all > host.json\n$ coredoctor check --from host.json\n"
            "Read a customer's host there, evaluate it anywhere else, offline.",
            "$ coredoctor explain-flags 204\nDecode an mm->flags value read with crash or drgn.",
        ],
        "SEE ALSO": ["core(5)", "proc(5)", "prctl(2)", "setrlimit(2)", "sysctl(8)",
                     "systemd-coredump(8)", "coredumpctl(1)"],
    },
    "check": {
        "DESCRIPTION": [
            "Predict, for each target, whether a crash now -- by the signal given with --signal, raised "
            "as --how says -- would leave a core, and if not, which gate of the kernel's core-dump path "
            "would stop it. One target prints the whole report: every gate in the kernel's order, "
            "the evidence read (with its source), and for a failing gate the commands that fix it, "
            "and whether the process must be restarted. Several targets or --all print a summary "
            "grouped by the blocking gate.",
            "Targets are process names (comm or the executable's name), pids, or systemd units "
            "(NAME.service, .scope, .socket, .mount). With --from FILE the targets are looked up in "
            "a snapshot made by coredoctor snapshot, and root is not needed.",
            "--container NAME|ID selects every process of a container (podman, Docker, containerd, "
            "CRI-O, LXC, systemd-nspawn), found from each process's cgroup and named from the "
            "runtime's own state on disk: its name, its id, or an id prefix of 12 or more hex digits. "
            "The report names the container of each target, and --all groups its table by "
            "container, the host's processes first. COREDOCTOR_HOSTROOT=DIR reads the runtime's "
            "state under DIR (a node's root mounted read-only there, in a DaemonSet).",
        ],
        "EXIT STATUS": [
            ("0", "every target would leave a core"),
            ("1", "at least one target would not, or is undecided"),
            _ERRORS,
            _INTERRUPTED,
        ],
        "FILES": [
            ("/proc/PID/", "the target's credentials, limits, signal dispositions, dumpable flag "
             "(pidfd PIDFD_GET_INFO where the kernel has it), cgroup, root, cwd and mounts"),
            ("/proc/sys/kernel/core_pattern", "the core's path or the handler, with core_pipe_limit "
             "and core_uses_pid"),
            ("/proc/sys/fs/suid_dumpable", "the dumpable value after a credential change"),
            ("/var/lib/containers/storage/", "podman's and CRI-O's containers.json and bundle "
             "config.json (names, images, annotations), read-only, like /var/lib/docker/containers/ "
             "and /run/containerd/"),
        ],
        "EXAMPLES": [
            "$ sudo coredoctor check ovs-vswitchd\nThe whole report for every process of that name.",
            "$ sudo coredoctor check --pid 24441 --json\nFor scripts (schema coredoctor.check/1).",
            "$ sudo coredoctor check --pid 24441 --signal SIGABRT --how kill\nAnother signal, sent "
            "with kill() rather than raised by a fault.",
            "$ coredoctor check --from host.json --all\nEvery process of a saved snapshot, offline.",
            "$ sudo coredoctor check --container web --json\nEvery process of the container named "
            "web; each target's container object names runtime, id, name, image, pod and namespace.",
        ],
        "SEE ALSO": ["coredoctor-snapshot(8)", "coredoctor-fix(8)", "coredoctor-canary(8)", "core(5)"],
    },
    "snapshot": {
        "DESCRIPTION": [
            "Read everything check needs about the targets and the host -- processes, sysctls, the "
            "core directory's facts, the crash handler, units -- and write it as one JSON document "
            "(schema coredoctor.snapshot/1). The snapshot holds no core and no memory of the "
            "processes, but it does hold their command lines and credentials: treat it as you would "
            "a ps listing. Evaluate it anywhere with coredoctor check --from FILE.",
            "With --output FILE the document is written to a temporary file beside FILE and renamed "
            "over it, so a reader never sees half a snapshot.",
        ],
        "EXIT STATUS": [("0", "the snapshot was written"), _ERRORS, _INTERRUPTED],
        "FILES": [
            ("/proc/PID/", "each target's state, as for coredoctor-check(8)"),
            ("/proc/sys/kernel/", "core_pattern, core_pipe_limit, core_uses_pid"),
        ],
        "EXAMPLES": [
            "$ sudo coredoctor snapshot --all > host.json\nThe whole host, on the customer's machine.",
            "$ python3 coredoctor.pyz snapshot --all > host.json\nThe same from the single-file "
            "zipapp, where nothing is installed.",
            "$ sudo coredoctor snapshot nginx.service -o nginx.json",
        ],
        "SEE ALSO": ["coredoctor-check(8)"],
    },
    "fix": {
        "DESCRIPTION": [
            "Plan the smallest change that lets the target's next crash leave a core: which sysctl, "
            "limit, systemd drop-in or directory to change, why, what else on the host would undo it "
            "(a later sysctl.d file, apport, a hardening baseline) and what it costs in security. "
            "Without --apply nothing changes. With --apply each change is journaled with the exact "
            "bytes and values it replaces before it is made, and a fix id is printed; --rollback ID "
            "puts back exactly what was there. fix never deletes a core.",
        ],
        "EXIT STATUS": [
            ("0", "the plan was printed, or the fix was applied or rolled back (an action that failed "
             "is reported in the output)"),
            ("2", "bad usage, a target that names nothing, --all (fix takes targets), a plan that "
             "refuses to apply, or not run as root"),
            _INTERRUPTED,
        ],
        "ENVIRONMENT": [("COREDOCTOR_STATE_DIR", "the journal's directory (default /var/lib/coredoctor)")],
        "FILES": [
            ("/var/lib/coredoctor/fixes/", "one JSON file per fix: every action and what it replaced"),
            ("/etc/sysctl.d/90-coredoctor.conf", "the sysctls a fix keeps across reboots (it sorts "
             "after systemd-coredump's 50-coredump.conf)"),
            ("/etc/systemd/system/UNIT.d/90-coredoctor-core.conf", "LimitCORE= for a unit's processes"),
            ("/etc/systemd/system/UNIT.d/90-coredoctor-umask.conf", "UMask= for a unit's processes"),
            ("/var/crash/", "the core directory a fix may create (mode 1777)"),
        ],
        "EXAMPLES": [
            "$ sudo coredoctor fix ovs-vswitchd\nThe plan only: what would change, why, and the risk.",
            "$ sudo coredoctor fix ovs-vswitchd --apply\nDo it; prints a fix id.",
            "$ sudo coredoctor fix --list",
            "$ sudo coredoctor fix --rollback 20261201T093000-1a2b3c\nRestore exactly what was there "
            "before that fix.",
        ],
        "SEE ALSO": ["coredoctor-check(8)", "coredoctor-canary(8)", "sysctl.d(5)", "systemd.exec(5)"],
    },
    "crashes": {
        "DESCRIPTION": [
            "List the crashes that already happened, newest first, from every source present: the "
            "kernel log, the journal, syslog files, the audit log (ANOM_ABEND), apport's reports and "
            "the stores of crash handlers (systemd-coredump). Records of one crash from several "
            "sources are merged. For each crash it says whether its core survived -- present, "
            "missing, truncated, empty -- and if not, which gate stopped it, with the kernel's own "
            "words where the kernel logged a refusal.",
            "Log lines, journal entries and files under /var/crash are written by whoever crashed: "
            "they are read as untrusted input and symlinks there are not followed.",
        ],
        "EXIT STATUS": [("0", "the listing was printed (also when there was no crash)"), _ERRORS, _INTERRUPTED],
        "FILES": [
            ("/dev/kmsg", "the kernel log"),
            ("/var/log/journal/, /run/log/journal/", "the journal (read with journalctl)"),
            ("/var/log/syslog, /var/log/kern.log, /var/log/messages", "syslog files and their "
             "rotations (.1, .gz)"),
            ("/var/log/audit/audit.log", "ANOM_ABEND records"),
            ("/var/crash/", "apport's reports"),
            ("/var/lib/systemd/coredump/", "systemd-coredump's store"),
        ],
        "EXAMPLES": [
            "$ sudo coredoctor crashes --since \"2 days ago\"",
            "$ sudo coredoctor crashes --since 2026-11-25T01:36:00Z --json",
            "$ sudo coredoctor crashes --source audit --source kmsg\nOnly some sources.",
            "$ sudo coredoctor crashes --log /srv/copy/kern.log.2.gz\nA syslog file copied from "
            "another host.",
        ],
        "SEE ALSO": ["coredoctor-check(8)", "coredumpctl(1)", "journalctl(1)", "ausearch(8)"],
    },
    "canary": {
        "DESCRIPTION": [
            "Prove a prediction with a real crash: fork a throwaway process (named cd-canary) that "
            "goes through the same credential change as the target -- it starts as root and switches "
            "to the target's user and groups, so the kernel sets its dumpable flag the way it set "
            "the target's -- with the target's RLIMIT_CORE, RLIMIT_FSIZE, cwd, umask and "
            "coredump_filter; ask check's model about it; make it fault for real; and look where the "
            "core landed. The canary's core is removed afterwards unless --keep is given.",
            "When the kernel's outcome differs from the prediction, that is a bug in coredoctor's "
            "model: the exit status is 4 and the report says which gate disagreed.",
        ],
        "EXIT STATUS": [
            ("0", "the canary left a core, as predicted"),
            ("1", "the canary left no core, as predicted"),
            ("4", "the kernel did otherwise than predicted"),
            _ERRORS,
            _INTERRUPTED,
        ],
        "FILES": [
            ("/proc/sys/kernel/core_pattern", "where to look for the canary's core"),
            ("/var/crash/", "where a handler such as apport reports the canary"),
        ],
        "EXAMPLES": [
            "$ sudo coredoctor canary --like 24441\nA canary with that process's ids, limits, cwd "
            "and umask.",
            "$ sudo coredoctor canary --user openvswitch --group hugetlbfs --json",
        ],
        "SEE ALSO": ["coredoctor-check(8)", "coredoctor-fix(8)", "credentials(7)"],
    },
    "trace": {
        "DESCRIPTION": [
            "Follow processes live and report each moment the kernel sets their dumpable flag -- "
            "set*id(), capset(), execve() of a set-user-ID program, prctl(PR_SET_DUMPABLE) -- with the "
            "user-space stack that made the change, and every fatal signal with check's prediction "
            "next to what the kernel then did. With -- CMD the command is started under trace, held "
            "until the kernel filters are in place; --name also catches processes started later.",
            "It uses tracepoints every stock kernel has (syscall, sched and signal events; no "
            "kprobes, headers or debuginfo) in a private tracefs instance with kernel-side filters, "
            "so nothing of the host's own tracing changes. The instance is removed on every exit; "
            "one left by a killed run is removed at the start of the next.",
        ],
        "EXIT STATUS": [
            ("<status of CMD>", "with -- CMD, the command's own exit status"),
            ("0", "otherwise, when the duration ended or every watched process exited"),
            _ERRORS,
            _INTERRUPTED,
        ],
        "FILES": [
            ("/sys/kernel/tracing/instances/coredoctor-PID/", "the private tracefs instance (tracefs is "
             "mounted there for the run when it is mounted nowhere)"),
        ],
        "OVERHEAD": [
            "The kernel records an event for each credential syscall, prctl(), execve(), fork, exit "
            "and signal of the watched processes only (the filters run in the kernel); each event "
            "carries a user-space stack unless --no-stack is given. The instance's ring buffer is 8 "
            "MiB per CPU.",
            "Measured with bench/trace_cred.py (a workload changing its effective uid 10,500 times a "
            "second, 2 CPUs, kernel 6.18): the workload slowed by 2.1% in wall time and 1.4% in its "
            "own CPU time under coredoctor trace --json, with no transition lost; recording alone "
            "cost 1%. Processes that change credentials much more often pay proportionally more, and "
            "symbolizing stacks costs coredoctor's own CPU time, not the traced process's.",
        ],
        "EXAMPLES": [
            "$ sudo coredoctor trace -- ovs-ctl --ovs-user=openvswitch start\nRun a command under "
            "trace; the trace goes to standard error, the command's output passes through.",
            "$ sudo coredoctor trace --name ovs-vswitchd\nAlso processes of that name not started yet.",
            "$ sudo coredoctor trace --unit nginx.service --json --duration 600",
        ],
        "SEE ALSO": ["coredoctor-check(8)", "prctl(2)", "setresuid(2)"],
    },
    "metrics": {
        "NAME": "the host's core-dump readiness and lost cores as Prometheus metrics",
        "DESCRIPTION": [
            "Evaluate every process as check --all does (a SIGSEGV now), read the crash history as "
            "crashes does, and print the Prometheus text exposition: coredoctor_processes by verdict "
            "and blocking gate, coredoctor_target_would_dump (1 or 0) for each service and container, "
            "coredoctor_crashes_total by the fate of the core and the gate that cost it, "
            "coredoctor_dumpability_losses_total (counted by coredoctor watch), "
            "coredoctor_last_run_timestamp_seconds, coredoctor_run_duration_seconds and coredoctor_info. "
            "No sample carries a pid label or a timestamp.",
            "With --textfile DIR the text goes to DIR/coredoctor.prom through a temporary file in DIR "
            "and a rename, for node_exporter's textfile collector (Debian: "
            "/var/lib/prometheus/node-exporter); the shipped coredoctor-metrics.timer runs it every "
            "five minutes. The counters are kept across runs in the state directory: a crash still in "
            "the logs is counted once.",
        ],
        "EXIT STATUS": [("0", "the metrics were printed or written"), _ERRORS, _INTERRUPTED],
        "FILES": [
            ("/var/lib/coredoctor/metrics.json", "the counters across runs (COREDOCTOR_STATE_DIR)"),
            ("DIR/coredoctor.prom", "with --textfile DIR"),
            ("/usr/lib/systemd/system/coredoctor-metrics.timer", "runs coredoctor-metrics.service"),
        ],
        "EXAMPLES": [
            "$ sudo coredoctor metrics --textfile /var/lib/prometheus/node-exporter\nWhat the timer "
            "runs; node_exporter serves it with its own metrics.",
            "$ sudo coredoctor metrics --no-crashes\nOnly the predictions, without reading the logs.",
        ],
        "SEE ALSO": ["coredoctor-check(8)", "coredoctor-crashes(8)", "prometheus-node-exporter(1)"],
    },
    "explain-flags": {
        "NAME": "decode an mm->flags value",
        "DESCRIPTION": [
            "Decode the value of a process's mm->flags, as read from a kernel crash dump or a live "
            "kernel with crash(8) or drgn: the dumpable bits (SUID_DUMP_DISABLE, SUID_DUMP_USER, "
            "SUID_DUMP_ROOT), the coredump_filter bits and the other flags. The value is decimal, "
            "or hexadecimal with 0x. Reads nothing from the system and needs no root.",
        ],
        "EXIT STATUS": [("0", "the value was decoded"), ("2", "not a number, or negative")],
        "FILES": ["None: the value is all it reads."],
        "EXAMPLES": [
            "$ coredoctor explain-flags 204\nThe dumpable bits 0-1 are 00 (dumpable=0, "
            "SUID_DUMP_DISABLE) and the coredump_filter is 00000033.",
            "$ coredoctor explain-flags 0x8000cd --json",
        ],
        "SEE ALSO": ["coredoctor-check(8)", "core(5)", "drgn(1)"],
    },
}
