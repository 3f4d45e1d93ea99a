"""render/json.py: the compact path (no circular-reference check) writes exactly what
json.dumps writes, shared sub-objects included (batch results share read-only parts)."""

import json

from coredoctor.render import json as rjson


def test_compact_dumps_is_json_dumps_byte_for_byte():
    shared = {"kind": "manual", "text": "caf\u00e9 \"q\" \n", "n": [1, 2.5, None, True]}
    doc = rjson.check_document("6.18", [{"pid": p, "fixes": [shared, shared], "x": {"y": shared}}
                                        for p in (2, 3)], {"gone": 1})
    assert rjson.dumps(doc, pretty=False) == json.dumps(doc, separators=(",", ":"))
    assert rjson.dumps(doc, pretty=True) == json.dumps(doc, indent=2)
    assert json.loads(rjson.dumps(doc, pretty=False)) == doc


def _group_snapshot(comm):
    import copy
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    snap = json.load(open(os.path.join(os.path.dirname(here), "fixtures", "dropped-suid0.json")))
    base = max(snap["processes"], key=lambda p: p["pid"])
    for i in range(6):  # six processes with the same facts: one batch template stands for them
        p = copy.deepcopy(base)
        p["pid"] = 41000 + i
        p["nspid"] = [p["pid"]]
        p["comm"] = comm
        snap["processes"].append(p)
    snap["targets"] = [p["pid"] for p in snap["processes"]]
    return snap


def _check_text(snap):
    from coredoctor.kernel import batch, gates
    results = gates.evaluate_targets(snap, snap["targets"], "SIGSEGV", None)
    doc = rjson.check_document(snap["kernel"]["release"], results, {"gone": 0})
    return doc, sum(isinstance(t, batch.Bound) for t in results)


def test_targets_written_from_their_batch_template_are_the_same_text():
    doc, bound = _check_text(_group_snapshot("worker"))
    assert bound >= 5  # the template path was taken
    assert rjson.dumps(doc, pretty=False) == json.dumps(doc, separators=(",", ":"))


def test_a_name_whose_escape_forms_the_sentinel_is_not_written_from_the_template():
    """U+4718 is escaped as \\u4718: beside the digits 296305 the JSON text holds the sentinel
    pid 4718296305, which the name itself does not: the template's text is not used there."""
    from coredoctor.kernel import batch
    assert batch.pick_sentinels("") == [4718296305]
    doc, bound = _check_text(_group_snapshot("\u4718296305"))
    assert bound >= 5
    assert rjson.dumps(doc, pretty=False) == json.dumps(doc, separators=(",", ":"))
