"""Reasons are data: the verdict sentence is composed from reason records, and the renderers
compose from the records too -- a process name that looks like sentence punctuation cannot shift
what the summary table shows."""
import copy
import json
import os

from coredoctor.kernel import gates, reasons
from coredoctor.render import text as rtext

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def _target(name="dropped-suid0.json", comm=None, **sysctl):
    snap = json.load(open(os.path.join(FIX, name)))
    snap["sysctl"].update(sysctl)
    if comm:
        for p in snap["processes"]:
            p["comm"] = comm
    return gates.evaluate_targets(snap, snap["targets"])[0]


def test_verdict_is_composed_from_the_records():
    t = _target()
    assert [(r["gate"], r["clause"]) for r in t["reasons"]] == [("dumpable", "not-dumpable")]
    assert t["reasons"][0]["values"]["cause"] == "privilege-change"
    assert t["verdict"].endswith(" -- " + reasons.clause_text(t["reasons"][0]))
    # change a value in the record: the sentence follows the record, not the other way round
    t2 = copy.deepcopy(t)
    t2["reasons"][0]["values"]["to"] = "www-data:www-data"
    assert "to www-data:www-data while fs.suid_dumpable was 0" in reasons.verdict(t2)


def test_summary_table_reads_records_not_sentences():
    hostile = "x -- y: z"
    t = _target(comm=hostile)
    other = dict(_target(), pid=2)
    table = rtext.summary_table([t, other, dict(other, pid=3), dict(other, pid=4)])
    row = next(line for line in table.splitlines() if hostile in line)
    assert row.split(hostile, 1)[1].strip().startswith("it is not dumpable (dumpable=0) since it switched")


def test_undecided_and_pipe_reasons():
    t = _target("dropped-suid0-nopidfd.json")
    if t["dumps"] is None:
        assert t["reasons"][0]["clause"] in ("dumpable-candidates", "text")
        assert reasons.reason_text(t) in t["verdict"]
    p = _target("pipe-missing-helper.json")
    assert p["dumps"] is False and p["reasons"][0]["clause"] == "helper-missing"
    assert p["verdict"].endswith(reasons.reason_text(p))
