"""
Snapshot validation
-------------------
A snapshot handed over for ``check --from`` is attacker-controlled input. :func:`load` reads
one within bounds and :func:`validate` checks it completely against :data:`FIELDS` before any
of it reaches the gate model, so that the model only ever sees the shapes ``snapshot.take()``
produces. The first bad field is named in one line::

    host.json: processes[3].creds.uid[0]: expected an integer 0..4294967295, got "x" (corrupt snapshot)

Bounds, checked in this order (each before the next step can be hurt by the input):

- size: at most :data:`MAX_BYTES` (64 MiB; ``snapshot --all`` of a host with 10,000 processes
  is ~15 MB), refused from ``fstat`` before reading, and the read itself stops there;
- text: UTF-8;
- nesting: at most :data:`MAX_DEPTH` levels of ``[``/``{`` (a real snapshot has 6), counted
  on the text before ``json`` recurses into it;
- numbers: integers of at most 20 digits (any 64-bit value), finite floats; no NaN/Infinity;
- every field in :data:`FIELDS`: its type, range, length; then the cross-references
  (:data:`RULES`: unique pids, targets present, ``dest`` keys present in ``paths``).

Fields not in the table are kept (snapshots are extended by addition) but bounded like the rest.
"""

import json
import os
import re
import sys
from collections import namedtuple

from coredoctor.errors import SnapshotError

__all__ = ["load", "validate", "parse", "FIELDS", "RULES", "MAX_BYTES", "MAX_DEPTH", "SCHEMA"]

SCHEMA = "coredoctor.snapshot/1"
MAX_BYTES = 64 << 20
MAX_DEPTH = 32
MAX_INT_DIGITS = 20
MAX_STR = 1 << 16  # any one string (a cgroup path, a helper's error) stays below this

U32 = (0, (1 << 32) - 1)
U64 = (0, (1 << 64) - 1)
S64 = (-(1 << 63), (1 << 63) - 1)
PID = (1, 1 << 22)       # PID_MAX_LIMIT (include/linux/threads.h)
PID0 = (0, 1 << 22)      # a ppid / tracer pid: 0 for none
PATH_MAX = 4096 + 64     # PATH_MAX, plus " (deleted)" and the like


class Field(namedtuple("Field", "kind lo hi maxlen minlen required const",
                       defaults=(None, None, None, 0, (), None))):
    """One row: what a value at that path must be. *kind* lists the JSON types allowed
    (``int``, ``num``, ``str``, ``hex``, ``bool``, ``null``, ``object``, ``map``, ``list``);
    ``object`` names its *required* keys, ``map`` has free keys (its values are the row
    ``PATH.*``); ``list`` items are the row ``PATH[]``; *lo*..*hi* bound an integer, *minlen*..
    *maxlen* a string's, a list's or an object's length; *const* the one string allowed."""
    __slots__ = ()


def _f(kind: str, rng: "tuple | None" = None, **kw: object) -> Field:
    if rng is not None:
        kw["lo"], kw["hi"] = rng
    return Field(kind, **kw)


#: path -> Field. Paths: ``a.b`` keys, ``[]`` list items, ``.*`` any key of a map. Each row's
#: source is what snapshot/ writes there (the module named in the comment) and the kernel's
#: own bound where there is one.
FIELDS = {
    "": _f("object", required=("schema", "kernel", "sysctl", "processes", "targets")),
    "schema": _f("str", const=SCHEMA),
    "taken_at": _f("num|null", (0, 1 << 40)),                        # time.time()
    # snapshot/sysctl.py read_kernel()
    "kernel": _f("object", required=("release", "signals", "features")),
    "kernel.release": _f("str", maxlen=256),                          # uname(2) fields are 65 bytes
    "kernel.machine": _f("str|null", maxlen=256),
    "kernel.hostname": _f("str|null", maxlen=256),                    # %h in core_pattern
    "kernel.page_size": _f("int|null", (512, 1 << 30)),
    "kernel.signals": _f("map", maxlen=256, required=("SIGSEGV",)),
    "kernel.signals.*": _f("int", (1, 128)),                          # _NSIG is 64 (128 on MIPS)
    "kernel.features": _f("map", maxlen=256),
    "kernel.features.*": _f("bool|null"),
    "kernel.features.core_modes": _f("list|null", maxlen=16),
    "kernel.features.core_modes[]": _f("str", maxlen=64),
    "kernel.disabled": _f("list", maxlen=64),
    "kernel.disabled[]": _f("str", maxlen=64),
    # snapshot/sysctl.py read_sysctls(): None where the file is absent (older kernels)
    "sysctl": _f("map", maxlen=256, required=("kernel.core_pattern",)),
    "sysctl.*": _f("int|str|null", S64, maxlen=4096),
    "sysctl.kernel.core_pattern": _f("str", maxlen=4096),             # CORENAME_MAX_SIZE is 128
    "sysctl.fs.suid_dumpable": _f("int|null", (0, 2)),                # proc_dointvec_minmax 0..2
    "sysctl.kernel.core_pipe_limit": _f("int|null", (0, (1 << 31) - 1)),
    "sysctl.kernel.core_uses_pid": _f("int|null", (-(1 << 31), (1 << 31) - 1)),
    "sysctl.kernel.core_modes": _f("str|null", maxlen=4096),
    "sysctl.kernel.core_file_note_size_limit": _f("int|null", U64),
    # show_unhandled_signals and printk's rate limit (proc_dointvec: int)
    "sysctl.debug.exception-trace": _f("int|null", (-(1 << 31), (1 << 31) - 1)),
    "sysctl.kernel.printk_ratelimit": _f("int|null", (-(1 << 31), (1 << 31) - 1)),
    "sysctl.kernel.printk_ratelimit_burst": _f("int|null", (-(1 << 31), (1 << 31) - 1)),
    "targets": _f("list"),
    "targets[]": _f("int", PID),
    "skipped": _f("map|null", maxlen=64),
    "skipped.*": _f("int", (0, 1 << 31)),
    # snapshot/proc.py read_process()
    "processes": _f("list"),
    "processes[]": _f("object", required=("pid", "creds", "dumpable", "limits", "sig")),
    "processes[].pid": _f("int", PID),
    "processes[].comm": _f("str|null", maxlen=64),                    # TASK_COMM_LEN 16 (escaped)
    "processes[].ppid": _f("int|null", PID0),
    "processes[].state": _f("str|null", maxlen=8),
    "processes[].tracer_pid": _f("int|null", PID0),
    "processes[].nspid": _f("list|null", maxlen=33, minlen=1),        # MAX_PID_NS_LEVEL 32
    "processes[].nspid[]": _f("int", PID),
    "processes[].threads": _f("int|null", (1, (1 << 31) - 1)),
    "processes[].creds": _f("object", required=("uid", "gid")),
    "processes[].creds.uid": _f("list", minlen=4, maxlen=4),          # real, effective, saved, fs
    "processes[].creds.uid[]": _f("int", U32),
    "processes[].creds.gid": _f("list", minlen=4, maxlen=4),
    "processes[].creds.gid[]": _f("int", U32),
    "processes[].creds.groups": _f("list|null", maxlen=65536),        # NGROUPS_MAX
    "processes[].creds.groups[]": _f("int", U32),
    "processes[].creds.cap_prm": _f("hex|null", maxlen=16),
    "processes[].creds.cap_eff": _f("hex|null", maxlen=16),
    "processes[].creds.cap_bnd": _f("hex|null", maxlen=16),
    "processes[].creds.user": _f("str|null", maxlen=256),
    "processes[].creds.group": _f("str|null", maxlen=256),
    "processes[].creds.keep_caps": _f("bool|null"),
    "processes[].sig": _f("object"),
    "processes[].sig.blocked": _f("hex|null", maxlen=32),
    "processes[].sig.ignored": _f("hex|null", maxlen=32),
    "processes[].sig.caught": _f("hex|null", maxlen=32),
    "processes[].thread_blocked": _f("list|null", maxlen=1 << 22),
    "processes[].thread_blocked[]": _f("hex", maxlen=32),
    "processes[].umask": _f("int|null", (0, 0o7777)),
    "processes[].core_dumping": _f("bool|null"),
    "processes[].mem": _f("object|null"),
    "processes[].mem.rss": _f("int|null", U64),
    "processes[].mem.anon": _f("int|null", U64),
    "processes[].mem.shmem": _f("int|null", U64),
    "processes[].proc_owner": _f("list|null", minlen=2, maxlen=2),
    "processes[].proc_owner[]": _f("int", U32),
    "processes[].limits": _f("object", required=("core",)),
    "processes[].limits.core": _f("list", minlen=2, maxlen=2),        # [soft, hard], null unlimited
    "processes[].limits.core[]": _f("int|null", U64),
    "processes[].limits.fsize": _f("list|null", minlen=2, maxlen=2),
    "processes[].limits.fsize[]": _f("int|null", U64),
    "processes[].coredump_filter": _f("hex|null", maxlen=16),
    "processes[].exe": _f("str|null", maxlen=PATH_MAX),
    "processes[].cwd": _f("str|null", maxlen=PATH_MAX),
    "processes[].root_id": _f("str|null", maxlen=64),
    "processes[].cwd_id": _f("str|null", maxlen=64),
    "processes[].root_is_host": _f("bool|null"),
    "processes[].userns_is_host": _f("bool|null"),
    "processes[].uts_is_host": _f("bool|null"),
    "processes[].unit": _f("str|null", maxlen=256),
    "processes[].cgroup": _f("str|null", maxlen=PATH_MAX),
    # snapshot/containers.py from_cgroup() + complete(): null on the host
    "processes[].container": _f("object|null", required=("runtime", "id")),
    "processes[].container.runtime": _f("str", maxlen=32),
    "processes[].container.id": _f("str|null", maxlen=256),
    "processes[].container.name": _f("str|null", maxlen=256),         # containers.MAX_FIELD
    "processes[].container.image": _f("str|null", maxlen=256),
    "processes[].container.pod": _f("str|null", maxlen=256),
    "processes[].container.namespace": _f("str|null", maxlen=256),
    "processes[].container.pod_uid": _f("str|null", maxlen=64),
    "processes[].container.qos": _f("str|null", maxlen=16),
    "processes[].container.driver": _f("str|null", maxlen=16),
    "processes[].container.format": _f("str|null", maxlen=64),
    "processes[].container.uuid": _f("str|null", maxlen=32),           # nspawn's container_uuid
    "processes[].container.leader": _f("int|null", rng=(1, 4194304)),  # the systemd-nspawn pid
    # containers.CONMON / USER_MANAGER: a rootless container, its owner on the host, its conmon
    "processes[].container.rootless": _f("bool|null"),
    "processes[].container.owner_uid": _f("int|null", rng=(0, 4294967295)),
    "processes[].container.conmon": _f("int|null", rng=(1, 4194304)),
    "processes[].container.bundle_dir": _f("str|null", maxlen=PATH_MAX),
    "processes[].container.cuuid": _f("str|null", maxlen=64),
    "processes[].container.runtime_path": _f("str|null", maxlen=256),
    "processes[].container.exit_dir": _f("str|null", maxlen=256),
    # containers.FUSE_OVERLAY: the upper layer of a fuse-overlayfs root, from its serving process
    "processes[].container.fuse_overlay": _f("object|null", required=("dev", "upperdir")),
    "processes[].container.fuse_overlay.dev": _f("str", maxlen=32),
    "processes[].container.fuse_overlay.merged": _f("str|null", maxlen=PATH_MAX),
    "processes[].container.fuse_overlay.upperdir": _f("str", maxlen=PATH_MAX),
    "processes[].container.fuse_overlay.pid": _f("int|null", rng=(1, 4194304)),
    "processes[].container.fuse_overlay.state": _f("str|null", maxlen=64),
    "processes[].container.namespace_containerd": _f("str|null", maxlen=80),
    "processes[].container.cgroup": _f("str|null", maxlen=PATH_MAX),
    "processes[].container.bundle": _f("str|null", maxlen=PATH_MAX),
    "processes[].container.state": _f("list|null", maxlen=16),
    "processes[].container.state[]": _f("str", maxlen=PATH_MAX),
    "processes[].thread_comms_same": _f("bool|null"),
    "processes[].dumpable": _f("object", required=("candidates",)),
    "processes[].dumpable.value": _f("int|null", (0, 2)),
    "processes[].dumpable.candidates": _f("list", minlen=1, maxlen=3),
    "processes[].dumpable.candidates[]": _f("int", (0, 2)),
    "processes[].dumpable.source": _f("str|null", maxlen=64),
    "processes[].dumpable.evidence": _f("str", maxlen=4096),
    "processes[].exe_stat": _f("object|null"),
    "processes[].exe_stat.mode": _f("int", U32),
    "processes[].exe_stat.uid": _f("int", U32),
    "processes[].exe_stat.gid": _f("int", U32),
    "processes[].exe_stat.setuid": _f("bool|null"),
    "processes[].exe_stat.setgid": _f("bool|null"),
    "processes[].exe_stat.fcaps": _f("bool|null"),
    # snapshot/proc/runtime.py read_runtime(): only the markers, variables and words of coredoctor.runtimes
    "processes[].runtime": _f("object|null", required=("markers",)),
    "processes[].runtime.markers": _f("list", maxlen=64),
    "processes[].runtime.markers[]": _f("str", maxlen=256),
    "processes[].runtime.env": _f("map|null", maxlen=64),
    "processes[].runtime.env.*": _f("str", maxlen=256),                 # runtimes.ENV_MAX
    "processes[].runtime.env_known": _f("bool|null"),
    "processes[].runtime.argv": _f("list|null", maxlen=32),             # runtimes.ARGV_MAX
    "processes[].runtime.argv[]": _f("str", maxlen=256),
    "processes[].runtime.error": _f("str|null", maxlen=256),
    # snapshot/__init__.py _destination_facts(): dumpable value -> a key of "paths"
    "processes[].dest": _f("map|null", maxlen=3),
    "processes[].dest.*": _f("object", required=("key",)),
    "processes[].dest.*.key": _f("str", maxlen=PATH_MAX + 64),
    "processes[].dest.*.file": _f("object|null"),
    "processes[].dest.*.file.exists": _f("bool|null"),
    "processes[].dest.*.file.mode": _f("int", U32),
    "processes[].dest.*.file.uid": _f("int", U32),
    "processes[].dest.*.file.gid": _f("int", U32),
    "processes[].dest.*.file.nlink": _f("int", U64),
    "processes[].dest.*.file.size": _f("int", U64),
    "processes[].dest.*.file.error": _f("str|null", maxlen=64),
    # snapshot/mounts.py read(): the process's mount namespace (when not init's) and id maps
    "processes[].mnt_ns": _f("str|null", maxlen=64),                 # "mnt:[INODE]"
    "processes[].uid_map": _f("list|null", maxlen=340),               # UID_GID_MAP_MAX_EXTENTS
    "processes[].uid_map[]": _f("list", minlen=3, maxlen=3),          # inside, outside, count
    "processes[].uid_map[][]": _f("int", (0, 1 << 32)),
    "processes[].gid_map": _f("list|null", maxlen=340),
    "processes[].gid_map[]": _f("list", minlen=3, maxlen=3),
    "processes[].gid_map[][]": _f("int", (0, 1 << 32)),
    # snapshot/ctspec.py read(): what the container's runtime set, and its defaults
    "processes[].container_spec": _f("object|null"),
    "processes[].container_spec.bundle": _f("str|null", maxlen=PATH_MAX),
    "processes[].container_spec.rlimit_core": _f("list|null", minlen=2, maxlen=2),
    "processes[].container_spec.rlimit_core[]": _f("int|null", U64),
    "processes[].container_spec.autoremove": _f("bool|null"),
    "processes[].container_spec.autoremove_from": _f("str|null", maxlen=PATH_MAX + 64),
    "processes[].container_spec.apport_socket": _f("bool|null"),
    "container_handler": _f("object|null"),
    "container_handler.systemd_coredump_forwards": _f("bool|null"),
    "runtime_defaults": _f("list|null", maxlen=1024),
    "runtime_defaults[]": _f("object", required=("runtime", "file")),
    "runtime_defaults[].runtime": _f("str", maxlen=64),
    "runtime_defaults[].file": _f("str", maxlen=PATH_MAX),
    "runtime_defaults[].line": _f("int|null", (1, 1 << 31)),
    "runtime_defaults[].text": _f("str|null", maxlen=512),
    "runtime_defaults[].core": _f("list|null", minlen=2, maxlen=2),
    "runtime_defaults[].core[]": _f("int|null", U64),
    # snapshot/mounts.py read(): "host" (/proc/1/mountinfo) and one table per mnt_ns
    "mounts": _f("map|null", maxlen=1 << 16),
    "mounts.*": _f("list", maxlen=4096),
    "mounts.*[]": _f("object", required=("id", "parent", "dev", "root", "mountpoint", "fstype")),
    "mounts.*[].id": _f("int", U32),
    "mounts.*[].parent": _f("int", U32),
    "mounts.*[].dev": _f("str", maxlen=32),                           # MAJ:MIN
    "mounts.*[].root": _f("str", maxlen=PATH_MAX),
    "mounts.*[].mountpoint": _f("str", maxlen=PATH_MAX),
    "mounts.*[].fstype": _f("str", maxlen=256),
    "mounts.*[].source": _f("str|null", maxlen=PATH_MAX),
    "mounts.*[].super_options": _f("str|null", maxlen=MAX_STR),      # overlay lowerdir= lists are long
    # snapshot/handlers.py read_handler()
    "handler": _f("object|null"),
    "handler.helper": _f("object|null"),
    "handler.helper.path": _f("str", maxlen=PATH_MAX),
    "handler.helper.exists": _f("bool|null"),
    "handler.helper.error": _f("str|null", maxlen=256),
    "handler.helper.regular": _f("bool|null"),
    "handler.helper.mode": _f("int", U32),
    "handler.helper.executable": _f("bool|null"),
    "handler.helper.interpreter": _f("str|null", maxlen=PATH_MAX),
    "handler.helper.interpreter_exists": _f("bool|null"),
    "handler.helper.format": _f("str|null", maxlen=64),
    "handler.systemd_coredump": _f("object|null"),
    "handler.systemd_coredump.conf": _f("map|null", maxlen=256),
    "handler.systemd_coredump.conf.*": _f("str", maxlen=4096),
    "handler.systemd_coredump.conf._files": _f("list", maxlen=1024),
    "handler.systemd_coredump.conf._files[]": _f("str", maxlen=PATH_MAX),
    "handler.systemd_coredump.socket_known": _f("bool|null"),
    "handler.systemd_coredump.socket": _f("str|null", maxlen=64),
    "handler.apport": _f("object|null"),
    "handler.apport.enabled": _f("bool|null"),
    # snapshot/abrt.py read_abrt()
    "handler.abrt": _f("object|null"),
    "handler.abrt.abrt": _f("map|null", maxlen=256),
    "handler.abrt.abrt.*": _f("str", maxlen=4096),
    "handler.abrt.ccpp": _f("map|null", maxlen=256),
    "handler.abrt.ccpp.*": _f("str", maxlen=4096),
    "handler.abrt.pkgdata": _f("map|null", maxlen=256),
    "handler.abrt.pkgdata.*": _f("str", maxlen=4096),
    "handler.abrt.files": _f("list|null", maxlen=16),
    "handler.abrt.files[]": _f("str", maxlen=PATH_MAX),
    "handler.abrt.daemon": _f("object|null"),
    "handler.abrt.daemon.pidfile": _f("str|null", maxlen=PATH_MAX),
    "handler.abrt.daemon.pid": _f("int|null", PID),
    "handler.abrt.daemon.running": _f("bool|null"),
    "handler.abrt.saved_core_pattern": _f("str|null", maxlen=4096),
    "handler.abrt.free_bytes": _f("int|null", U64),
    "handler.path": _f("str|null", maxlen=PATH_MAX),
    "handler.exists": _f("bool|null"),
    "handler.is_socket": _f("bool|null"),
    "handler.listening": _f("str|null", maxlen=64),
    "handler.listening_known": _f("bool|null"),
    # snapshot/fs.py walk_dir()
    # snapshot/units.py read(): MANAGERPID:UNIT -> the unit's files under its manager's root
    "units": _f("map|null", maxlen=65536),
    "units.*": _f("object", required=("unit", "root", "files")),
    "units.*.unit": _f("str", maxlen=256),
    "units.*.root": _f("str", maxlen=PATH_MAX),
    "units.*.masked": _f("bool|null"),
    "units.*.manager_pid": _f("int|null", PID),
    "units.*.manager_comm": _f("str|null", maxlen=64),
    "units.*.error": _f("str|null", maxlen=256),
    "units.*.files": _f("list", maxlen=1024),
    "units.*.files[]": _f("object", required=("path", "text")),
    "units.*.files[].path": _f("str", maxlen=PATH_MAX),
    "units.*.files[].text": _f("str|null", maxlen=1 << 16),
    "units.*.files[].links": _f("list|null", maxlen=64),
    "units.*.files[].links[]": _f("str", maxlen=PATH_MAX),
    "units.*.files[].error": _f("str|null", maxlen=256),
    "units.*.files[].kind": _f("str|null", maxlen=16),
    "units.*.env": _f("map|null", maxlen=64),
    "units.*.env.*": _f("str|null", maxlen=1 << 16),
    "units.*.env_errors": _f("map|null", maxlen=64),
    "units.*.env_errors.*": _f("str", maxlen=256),
    "units.*.users": _f("map|null", maxlen=256),
    "units.*.users.*": _f("str", maxlen=64),
    "units.*.groups": _f("map|null", maxlen=256),
    "units.*.groups.*": _f("str", maxlen=64),
    "units.*.system": _f("list|null", maxlen=1024),
    "units.*.system[]": _f("object", required=("path", "text")),
    "units.*.system[].path": _f("str", maxlen=PATH_MAX),
    "units.*.system[].text": _f("str|null", maxlen=1 << 16),
    "units.*.system[].links": _f("list|null", maxlen=64),
    "units.*.system[].links[]": _f("str", maxlen=PATH_MAX),
    "units.*.system[].error": _f("str|null", maxlen=256),
    # snapshot/units.py read_limits(): limits.conf, limits.d/*.conf
    "limits_conf": _f("list|null", maxlen=1024),
    "limits_conf[]": _f("object", required=("path", "text")),
    "limits_conf[].path": _f("str", maxlen=PATH_MAX),
    "limits_conf[].text": _f("str|null", maxlen=1 << 16),
    "limits_conf[].links": _f("list|null", maxlen=64),
    "limits_conf[].links[]": _f("str", maxlen=PATH_MAX),
    "limits_conf[].error": _f("str|null", maxlen=256),
    # snapshot/daemonconf.py read(): the daemons' argv and config files (origin/daemons.py)
    "daemons": _f("object|null", required=("procs", "files")),
    "daemons.procs": _f("map", maxlen=1 << 16),
    "daemons.procs.*": _f("object", required=("program", "argv", "files")),
    "daemons.procs.*.program": _f("str", maxlen=64),
    "daemons.procs.*.argv": _f("list", maxlen=256),
    "daemons.procs.*.argv[]": _f("str", maxlen=MAX_STR),
    "daemons.procs.*.conf_argv": _f("list", maxlen=256),
    "daemons.procs.*.conf_argv[]": _f("str", maxlen=MAX_STR),
    "daemons.procs.*.files": _f("list", maxlen=32),
    "daemons.procs.*.files[]": _f("object", required=("path",)),
    "daemons.procs.*.files[].path": _f("str", maxlen=PATH_MAX),
    "daemons.procs.*.files[].key": _f("str", maxlen=PATH_MAX + 64),
    "daemons.procs.*.files[].how": _f("str", maxlen=16),
    "daemons.procs.*.files[].from": _f("str|null", maxlen=PATH_MAX),
    "daemons.procs.*.files[].line": _f("int|null", (1, 1 << 31)),
    "daemons.files": _f("map", maxlen=256),
    "daemons.files.*": _f("object"),
    "daemons.files.*.text": _f("str|null", maxlen=MAX_STR),
    "daemons.files.*.error": _f("str|null", maxlen=64),
    "daemons.files.*.truncated": _f("bool"),
    "daemons.wrappers": _f("map", maxlen=64),
    "daemons.wrappers.*": _f("object"),
    "daemons.wrappers.*.lines": _f("list", maxlen=16),
    "daemons.wrappers.*.lines[]": _f("list", maxlen=2, minlen=2),
    "daemons.wrappers.*.lines[][]": _f("int|str", maxlen=MAX_STR),
    "daemons.skipped": _f("int", (0, 1 << 31)),
    "paths": _f("map|null"),
    "paths.*": _f("object", required=("dir", "walk", "exists")),
    "paths.*.dir": _f("str", maxlen=PATH_MAX),
    "paths.*.walk": _f("list", maxlen=4096),
    "paths.*.walk[]": _f("object", required=("mode", "uid", "gid", "path")),
    "paths.*.walk[].mode": _f("int", U32),
    "paths.*.walk[].uid": _f("int", U32),
    "paths.*.walk[].gid": _f("int", U32),
    "paths.*.walk[].path": _f("str", maxlen=PATH_MAX),
    "paths.*.exists": _f("bool"),
    "paths.*.error": _f("str|null", maxlen=64),
    "paths.*.missing": _f("str|null", maxlen=PATH_MAX),
    "paths.*.host_path": _f("str|null", maxlen=PATH_MAX + 64),
    "paths.*.fs": _f("object|null", required=("bfree", "bavail")),
    "paths.*.fs.readonly": _f("bool|null"),
    "paths.*.fs.frsize": _f("int|null", U64),
    "paths.*.fs.bavail": _f("int", U64),
    "paths.*.fs.bfree": _f("int", U64),
    "paths.*.fs.favail": _f("int|null", U64),
    "paths.*.fs.fstype": _f("str|null", maxlen=256),
    "paths.*.fs.super_options": _f("str|null", maxlen=4096),
}

_KIND_WORDS = {"int": "an integer", "num": "a number", "str": "a string", "hex": "a hex string",
               "bool": "true or false", "null": "null", "object": "an object", "map": "an object",
               "list": "a list"}
_HEX = re.compile(r"[0-9a-fA-F]+\Z")


class Bad(Exception):
    """The first bad field: where (display path) and what."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where or '(top level)'}: {what}")
        self.where, self.what = where, what


def _shown(v: object) -> str:
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _expected(spec: Field) -> str:
    words = []
    for k in spec.kind.split("|"):
        w = _KIND_WORDS[k]
        if k == "int" and spec.lo is not None:
            w += f" {spec.lo}..{spec.hi}"
        if k == "str" and spec.const is not None:
            w = json.dumps(spec.const)
        words.append(w)
    return " or ".join(words)


def _type_ok(k: str, v: object, spec: Field) -> bool:
    if k == "null":
        return v is None
    if k == "bool":
        return isinstance(v, bool)
    if k == "int":
        return isinstance(v, int) and not isinstance(v, bool) and (spec.lo is None or spec.lo <= v <= spec.hi)
    if k == "num":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and \
            (spec.lo is None or spec.lo <= v <= spec.hi)
    if k == "str":
        return isinstance(v, str) and (spec.const is None or v == spec.const)
    if k == "hex":
        return isinstance(v, str) and bool(_HEX.match(v))
    if k in ("object", "map"):
        return isinstance(v, dict)
    if k == "list":
        return isinstance(v, list)
    raise AssertionError(k)


def _display(where: str, key: str) -> str:
    if re.match(r"[A-Za-z_][A-Za-z0-9_]*\Z", key):
        return f"{where}.{key}" if where else key
    return f"{where}[{json.dumps(key)}]"


def _check(v: object, pattern: str, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise Bad(where, f"nested deeper than {MAX_DEPTH} levels")
    spec = FIELDS.get(pattern)
    if spec is None:  # a field this version does not read: bounded, not interpreted
        _check_any(v, where, depth)
        return
    kinds = spec.kind.split("|")
    if not any(_type_ok(k, v, spec) for k in kinds):
        raise Bad(where, f"expected {_expected(spec)}, got {_shown(v)}")
    if isinstance(v, (str, list, dict)):
        n = len(v)
        if spec.maxlen is not None and n > spec.maxlen or n < spec.minlen:
            unit = "characters" if isinstance(v, str) else "entries"
            hi = spec.maxlen if spec.maxlen is not None else "any"
            raise Bad(where, f"expected {spec.minlen}..{hi} {unit}, got {n}")
        if isinstance(v, str) and n > MAX_STR:
            raise Bad(where, f"a string of {n} characters (at most {MAX_STR})")
    if isinstance(v, dict):
        for r in spec.required:
            if r not in v:
                raise Bad(_display(where, r), "missing (required)")
        for key, child in v.items():
            sub = f"{pattern}.{key}" if pattern else key
            if sub not in FIELDS and f"{pattern}.*" in FIELDS:
                sub = f"{pattern}.*"
            _check(child, sub, _display(where, key), depth + 1)
    elif isinstance(v, list):
        for i, item in enumerate(v):
            _check(item, f"{pattern}[]", f"{where}[{i}]", depth + 1)


def _check_any(v: object, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise Bad(where, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, str) and len(v) > MAX_STR:
        raise Bad(where, f"a string of {len(v)} characters (at most {MAX_STR})")
    if isinstance(v, dict):
        for key, child in v.items():
            _check_any(child, _display(where, key), depth + 1)
    elif isinstance(v, list):
        for i, item in enumerate(v):
            _check_any(item, f"{where}[{i}]", depth + 1)


def _unique_pids(snap: dict) -> None:
    seen = set()
    for i, p in enumerate(snap["processes"]):
        if p["pid"] in seen:
            raise Bad(f"processes[{i}].pid", f"pid {p['pid']} appears twice")
        seen.add(p["pid"])


def _targets_present(snap: dict) -> None:
    pids = {p["pid"] for p in snap["processes"]}
    for i, t in enumerate(snap["targets"]):
        if t not in pids:
            raise Bad(f"targets[{i}]", f"target pid {t} has no process entry")


def _dumpable_consistent(snap: dict) -> None:
    for i, p in enumerate(snap["processes"]):
        d = p["dumpable"]
        if d.get("value") is not None and d["value"] not in d["candidates"]:
            raise Bad(f"processes[{i}].dumpable.value",
                      f"{d['value']} is not one of the candidates {d['candidates']}")


def _dest_keys_present(snap: dict) -> None:
    paths = snap.get("paths") or {}
    for i, p in enumerate(snap["processes"]):
        for v, entry in (p.get("dest") or {}).items():
            if v not in ("0", "1", "2"):
                raise Bad(_display(f"processes[{i}].dest", v), "expected a dumpable value 0, 1 or 2")
            if entry["key"] not in paths:
                raise Bad(f"processes[{i}].dest.{v}.key", f"{_shown(entry['key'])} is not a key of paths")


_ID_OPTION = re.compile(r"[0-9]{1,10}\Z")


def _super_options(snap: dict) -> None:
    """ext2/3/4 ``resuid=``/``resgid=`` are ids (ext4_parse_param(): a uid/gid), decimal."""
    for key, facts in (snap.get("paths") or {}).items():
        opts = (facts.get("fs") or {}).get("super_options") or ""
        for o in opts.split(","):
            name, _, val = o.partition("=")
            if name in ("resuid", "resgid") and not _ID_OPTION.match(val):
                raise Bad(_display(_display("paths", key), "fs") + ".super_options",
                          f"{name}= must be a decimal id, got {_shown(val)}")


#: what no single field can say: checked in this order after every field is well-typed
RULES = [_unique_pids, _targets_present, _dumpable_consistent, _dest_keys_present,
         _super_options]


def validate(snap: object) -> None:
    """Raise :class:`Bad` naming the first field of *snap* that ``take()`` could not have written."""
    if not isinstance(snap, dict):
        raise Bad("", f"expected an object (a coredoctor snapshot), got {_shown(snap)}")
    _check(snap, "", "", 0)
    for rule in RULES:
        rule(snap)


_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """Deepest ``[``/``{`` nesting in JSON *text* (strings skipped); stops counting past *limit*."""
    depth = deepest = 0
    for m in _TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif c in "]}":
            depth -= 1
    return deepest


class _Number(ValueError):
    pass


def _parse_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise _Number(f"an integer of {len(s.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(s)


def _parse_float(s: str) -> float:
    if len(s) > 64:
        raise _Number(f"a number of {len(s)} characters")
    v = float(s)
    if v in (float("inf"), float("-inf")):
        raise _Number(f"{s[:40]} is not a finite number")
    return v


def _parse_constant(s: str) -> float:
    raise _Number(f"{s} is not JSON")


def parse(text: str) -> object:
    """JSON *text* within the bounds above; ValueError (one line) otherwise."""
    if nesting_depth(text) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)


def _read_bounded(path: str) -> bytes:
    if path == "-":
        fd, close = 0, False  # the process's stdin, whatever sys.stdin was replaced with
    else:
        fd, close = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK), True
    try:
        st = os.fstat(fd)
        import stat as st_mod
        if st_mod.S_ISDIR(st.st_mode):
            raise SnapshotError(f"{path} is a directory, not a snapshot file")
        if st_mod.S_ISREG(st.st_mode) and st.st_size > MAX_BYTES:
            raise SnapshotError(f"{path}: {st.st_size} bytes, larger than a snapshot can be "
                                f"({MAX_BYTES} bytes at most)")
        if close:
            os.set_blocking(fd, True)
        chunks, total = [], 0
        while True:
            b = os.read(fd, min(1 << 20, MAX_BYTES + 1 - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > MAX_BYTES:
                raise SnapshotError(f"{path}: larger than a snapshot can be ({MAX_BYTES} bytes at most)")
        return b"".join(chunks)
    finally:
        if close:
            os.close(fd)


def load(path: str) -> dict:
    """Read, parse and validate the snapshot file *path* (``-`` for stdin).

    Every failure is one :class:`SnapshotError` line naming the file and the first bad field.
    """
    name = "stdin" if path == "-" else path
    try:
        raw = _read_bounded(path)
    except FileNotFoundError:
        raise SnapshotError(f"snapshot file not found: {path}")
    except OSError as e:
        raise SnapshotError(f"cannot read {name}: {e.strerror or e}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SnapshotError(f"{name} is not valid JSON (not UTF-8 at byte {e.start})")
    try:
        data = parse(text)
    except (ValueError, RecursionError) as e:  # RecursionError: only if MAX_DEPTH were raised too far
        why = str(e) if isinstance(e, _Number) else f"{e.__class__.__name__}: {e}"
        raise SnapshotError(f"{name} is not valid JSON ({why})")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SnapshotError(f"{name} is not a coredoctor snapshot (schema {SCHEMA} expected)")
    try:
        validate(data)
    except Bad as e:
        raise SnapshotError(f"{name}: {e} (corrupt snapshot)")
    return data
