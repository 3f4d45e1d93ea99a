#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see the coredoctor repository's pyproject.toml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: coredoctor_info
short_description: Would a crash now leave a core dump? (coredoctor check, read-only)
version_added: "0.1.0"
description:
  - Runs C(coredoctor check --json) on the managed host and returns its C(coredoctor.check/1)
    document, for every process (the default, C(--all)) or for the processes the selectors name.
  - Adds C(summary), the host's line in a fleet report, who would lose a core, by blocking gate.
  - Read-only, it changes nothing, so it runs in check mode too, and C(changed) is always false.
  - coredoctor must be installed on the managed host, the Debian package (C(/usr/bin/coredoctor))
    or the zipapp from C(packaging/build-dist) (C(coredoctor.pyz), run with the managed host's
    Python, see O(coredoctor)). It needs root, so use C(become) for a non-root login.
  - Containers share their host's kernel. On a container that is a managed host, coredoctor sees
    the container's processes and the host's sysctls (kernel.core_pattern, fs.suid_dumpable).
options:
  target:
    description:
      - Process names, pids or systemd units (C(NAME.service)), as on coredoctor's command line.
    type: list
    elements: str
    default: []
  pid:
    description: Process ids.
    type: list
    elements: int
    default: []
  unit:
    description: systemd units (C(NAME.service), C(.scope), C(.socket), C(.mount)) whose processes to check.
    type: list
    elements: str
    default: []
  container:
    description:
      - Every process of these containers, passed on as C(coredoctor check --container). Give a
        container's name, its id, or an id prefix of at least 12 hex digits as C(podman ps) and
        C(docker ps) show them (podman, docker, containerd, CRI-O, LXC, systemd-nspawn).
      - With O(target), O(pid) or O(unit), their processes are checked as well.
      - A word that names no running container, or more than one, fails the task with
        coredoctor's line (exit 2).
      - A coredoctor older than C(check --container) checks every process and keeps those whose
        C(/proc/PID/cgroup) names one of these ids (ids only, then; podman, docker, containerd,
        CRI-O), and only those of them that the other selectors name.
    type: list
    elements: str
    default: []
  signal:
    description: The fatal signal to predict for (C(SIGSEGV), C(SIGABRT), a number).
    type: str
    default: SIGSEGV
  how:
    description: Whether the signal is raised by a fault or sent with kill(). Default, as coredoctor decides.
    type: str
    choices: [fault, kill]
  coredoctor:
    description:
      - The coredoctor to run. A path ending in C(.pyz) is a zipapp, run with the Python running
        this module.
      - Default, C(coredoctor) on PATH, else C(/usr/local/lib/coredoctor/coredoctor.pyz).
    type: path
notes:
  - Supports check mode, in which it runs as in normal mode, since it changes nothing.
  - The exit code of C(coredoctor check) (1 when a process would not dump) is not a failure.
    Usage errors (exit 2, for example no process of that name) fail the task with coredoctor's
    one-line message.
seealso:
  - module: coredoctor.coredoctor.coredoctor_fix
author:
  - coredoctor developers
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Every process on the host
  coredoctor.coredoctor.coredoctor_info:
  register: cd

- name: Who would lose a core, by blocking gate
  ansible.builtin.debug:
    var: cd.summary.by_gate

- name: One service and one pid, with the zipapp
  coredoctor.coredoctor.coredoctor_info:
    unit: [nginx.service]
    pid: [24441]
    coredoctor: /usr/local/lib/coredoctor/coredoctor.pyz

- name: The processes of one container, by id prefix (coredoctor check --container)
  coredoctor.coredoctor.coredoctor_info:
    container: [3f4e5d6c7b8a]

- name: Two containers by name, and the host's nginx
  coredoctor.coredoctor.coredoctor_info:
    container: [web, db]
    unit: [nginx.service]
"""

RETURN = r"""
check:
  description: coredoctor's C(coredoctor.check/1) document (schema, kernel, targets, skipped).
  returned: success
  type: dict
  sample: {"schema": "coredoctor.check/1", "kernel": "6.1.0-18-amd64", "targets": [
    {"pid": 812, "comm": "ovs-vswitchd", "dumps": false, "blocking_gate": "dumpable",
     "verdict": "ovs-vswitchd (pid 812): a SIGSEGV now would NOT leave a core -- ..."}]}
summary:
  description: The host's line of a fleet report.
  returned: success
  type: dict
  contains:
    total:
      description: Processes checked.
      type: int
    core:
      description: Processes whose crash now would leave a core.
      type: int
    no_core:
      description: Processes whose crash would leave none.
      type: int
    undecided:
      description: Processes coredoctor could not decide for (a helper it cannot see into).
      type: int
    by_gate:
      description: Gate id to the processes (pid, comm, unit) it blocks, or leaves undecided.
      type: dict
  sample: {"total": 97, "core": 90, "no_core": 7, "undecided": 0,
           "by_gate": {"dumpable": [{"pid": 812, "comm": "ovs-vswitchd", "unit": "ovs-vswitchd.service"}]}}
all_dump:
  description: True when every checked process would leave a core (coredoctor check's exit 0).
  returned: success
  type: bool
cmd:
  description: The command that ran.
  returned: always
  type: list
  elements: str
"""

import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coredoctor.coredoctor.plugins.module_utils.coredoctor import (
    EXIT_CHECK_NO_CORE, EXIT_OK, check_argv, coredoctor_command, filter_containers, json_result, read_cgroup,
    run, summary, unknown_option)

CHECK = "coredoctor.check/1"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            target=dict(type="list", elements="str", default=[]),
            pid=dict(type="list", elements="int", default=[]),
            unit=dict(type="list", elements="str", default=[]),
            container=dict(type="list", elements="str", default=[]),
            signal=dict(type="str", default="SIGSEGV"),
            how=dict(type="str", choices=["fault", "kill"]),
            coredoctor=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    base = coredoctor_command(module, sys.executable)
    sel = (p["target"], p["pid"], p["unit"], p["signal"], p["how"])
    try:
        cmd = base + check_argv(*sel, containers=p["container"])
    except ValueError as e:
        module.fail_json(msg=str(e), cmd=[])
    result = run(module, cmd)
    if p["container"] and unknown_option(result[0], result[2], "--container"):
        # a coredoctor older than check --container: every process, then the cgroup filter here
        cmd = base + check_argv(*sel)
        doc = json_result(module, cmd, CHECK, run(module, cmd), ok=(EXIT_OK, EXIT_CHECK_NO_CORE))
        try:
            doc = filter_containers(doc, p["container"], read_cgroup)
        except ValueError as e:
            module.fail_json(msg=str(e), cmd=cmd)
    else:
        doc = json_result(module, cmd, CHECK, result, ok=(EXIT_OK, EXIT_CHECK_NO_CORE))
    s = summary(doc)
    module.exit_json(changed=False, check=doc, summary=s, all_dump=s["total"] == s["core"], cmd=cmd)


if __name__ == "__main__":
    main()
