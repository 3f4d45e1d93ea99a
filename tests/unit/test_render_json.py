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
