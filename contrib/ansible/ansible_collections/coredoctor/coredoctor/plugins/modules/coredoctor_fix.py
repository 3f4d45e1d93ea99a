#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see the coredoctor repository's pyproject.toml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: coredoctor_fix
short_description: Make the next crash of a process leave a core (coredoctor fix), reversibly
version_added: "0.1.0"
description:
  - Plans the smallest change that lets the named processes' next crash leave a core
    (C(coredoctor fix --json)) and applies it (C(coredoctor fix --apply)). Every apply is
    journaled on the managed host under a fix id, which O(rollback) takes to restore exactly
    what was there before.
  - In check mode, it returns the plan and changes nothing. With C(--diff), it shows before and
    after of each sysctl, file, directory and live limit that the plan would change.
  - C(changed) is true only when something was changed, or in check mode would be. A plan
    that is already in place plans nothing, so a second apply reports C(changed=false). An
    action that could not be made (a live limit of another user's process without
    CAP_SYS_RESOURCE) is a warning and in C(fix.errors), not a change.
  - Changes that a person has to make (restart a daemon, persist a limit in its start script)
    are returned in C(fix.needs_restart) and C(fix.manual), never made.
  - coredoctor must be installed on the managed host, the Debian package or the zipapp (see
    M(coredoctor.coredoctor.coredoctor_info)). It needs root.
  - Containers share their host's kernel. kernel.core_pattern and fs.suid_dumpable are host-wide,
    so a fix applied on a container that is a managed host changes its host, and every other
    container on it. Files (C(/etc/sysctl.d/90-coredoctor.conf), the core directory) are
    written in the container. Apply sysctl fixes on the host itself.
options:
  target:
    description: Process names, pids or systemd units (C(NAME.service)) to fix, as on coredoctor's command line.
    type: list
    elements: str
    default: []
  pid:
    description: Process ids to fix.
    type: list
    elements: int
    default: []
  signal:
    description: The fatal signal the fix is for.
    type: str
    default: SIGSEGV
  how:
    description: Whether the signal is raised by a fault or sent with kill().
    type: str
    choices: [fault, kill]
  rollback:
    description:
      - A fix id (returned as C(id) by an earlier apply, listed by C(coredoctor fix --list)).
        Restores what was there before that fix. The targets are then ignored.
      - A fix already rolled back reports C(changed=false).
    type: str
  coredoctor:
    description:
      - The coredoctor to run. A path ending in C(.pyz) is a zipapp, run with the Python running this module.
      - Default, C(coredoctor) on PATH, else C(/usr/local/lib/coredoctor/coredoctor.pyz).
    type: path
notes:
  - Supports check mode and diff mode.
  - A plan that coredoctor refuses (fs.suid_dumpable=2 with a relative core_pattern) fails
    the task when applying. In check mode it is returned in C(fix.refused), with a warning.
  - The fix journal lives in C(/var/lib/coredoctor/fixes) (C(COREDOCTOR_STATE_DIR) in the
    task's C(environment) moves it).
seealso:
  - module: coredoctor.coredoctor.coredoctor_info
author:
  - coredoctor developers
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: What would it take for ovs-vswitchd to dump? (run with --check --diff)
  coredoctor.coredoctor.coredoctor_fix:
    target: [ovs-vswitchd]
  check_mode: true
  register: plan

- name: Apply it
  coredoctor.coredoctor.coredoctor_fix:
    target: [ovs-vswitchd]
  register: applied

- name: Undo it
  coredoctor.coredoctor.coredoctor_fix:
    rollback: "{{ applied.id }}"
  when: applied.id
"""

RETURN = r"""
fix:
  description:
    - coredoctor's C(coredoctor.fix/1) document, the plan (targets, conflicts, actions, reported,
      needs_restart, security, warnings, manual, refused) and, after an apply, applied, id and errors.
    - For O(rollback), the rollback document (id, state, restored, notes).
  returned: success
  type: dict
id:
  description: The id of the fix this task applied (for O(rollback)), or the id it rolled back. Null when nothing was applied.
  returned: success
  type: str
  sample: 20261201T121533-3fa2c1
actions:
  description: What the fix changes, or in check mode would change (C(fix.actions)).
  returned: success
  type: list
  elements: dict
needs_restart:
  description: Processes that keep their state until restarted by hand (their dumpable flag was copied at a privilege change).
  returned: success
  type: list
  elements: dict
restored:
  description: With O(rollback), what was restored.
  returned: when rollback
  type: list
  elements: str
cmd:
  description: The last coredoctor command that ran.
  returned: always
  type: list
  elements: str
"""

import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coredoctor.coredoctor.plugins.module_utils.coredoctor import (
    applied_something, coredoctor_command, fix_argv, plan_diff, read_limit, read_text, run_json)


def _rollback(module, base):
    fix_id = module.params["rollback"]
    listed = run_json(module, base + ["fix", "--list", "--json"], "coredoctor.fix/1")
    entry = next((e for e in listed.get("fixes") or [] if e.get("id") == fix_id), None)
    if entry is None:
        module.fail_json(msg="no fix %s on this host (coredoctor fix --list)" % fix_id, cmd=base + ["fix", "--list"])
    done = [a for a in entry.get("actions") or [] if a.get("done")]
    if entry.get("state") == "rolled-back":
        module.exit_json(changed=False, id=fix_id, fix=entry, restored=[], actions=[], needs_restart=[],
                         cmd=base + ["fix", "--list", "--json"])
    if module.check_mode:
        module.exit_json(changed=True, id=fix_id, fix=entry, restored=[], actions=done, needs_restart=[],
                         cmd=base + ["fix", "--list", "--json"])
    cmd = base + ["fix", "--rollback", fix_id, "--json"]
    doc = run_json(module, cmd, "coredoctor.fix/1")
    module.exit_json(changed=True, id=fix_id, fix=doc, restored=doc.get("restored") or [], actions=done,
                     needs_restart=[], cmd=cmd)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            target=dict(type="list", elements="str", default=[]),
            pid=dict(type="list", elements="int", default=[]),
            signal=dict(type="str", default="SIGSEGV"),
            how=dict(type="str", choices=["fault", "kill"]),
            rollback=dict(type="str"),
            coredoctor=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    base = coredoctor_command(module, sys.executable)
    if p["rollback"]:
        _rollback(module, base)
    try:
        plan_cmd = base + fix_argv(p["target"], p["pid"], p["signal"], p["how"])
        apply_cmd = base + fix_argv(p["target"], p["pid"], p["signal"], p["how"], apply=True)
    except ValueError as e:
        module.fail_json(msg=str(e), cmd=[])
    plan = run_json(module, plan_cmd, "coredoctor.fix/1")
    diff = plan_diff(plan, read_text, read_limit)
    result = dict(actions=plan.get("actions") or [], needs_restart=plan.get("needs_restart") or [])
    if plan.get("refused"):
        module.warn("coredoctor refuses part of this plan: " + "; ".join(plan["refused"]))
    if not plan.get("actions"):
        module.exit_json(changed=False, id=None, fix=plan, cmd=plan_cmd, **result)
    if module.check_mode:
        module.exit_json(changed=True, id=None, fix=plan, diff=diff, cmd=plan_cmd, **result)
    doc = run_json(module, apply_cmd, "coredoctor.fix/1")
    for e in doc.get("errors") or []:
        module.warn(e)
    module.exit_json(changed=applied_something(doc), id=doc.get("id"), fix=doc, diff=diff, cmd=apply_cmd,
                     actions=doc.get("actions") or [], needs_restart=doc.get("needs_restart") or [])


if __name__ == "__main__":
    main()
