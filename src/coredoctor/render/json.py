"""
JSON output
-----------
The ``coredoctor.check/1`` contract (see the README): other tools read these names.
"""

import json

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Dict, List, Optional

__all__ = ["check_document", "dumps"]

CHECK_SCHEMA = "coredoctor.check/1"


def check_document(kernel_release: str, targets: "List[Dict[str, Any]]",
                   skipped: "Optional[Dict[str, Any]]" = None) -> "Dict[str, Any]":
    doc: "Dict[str, Any]" = {"schema": CHECK_SCHEMA, "kernel": kernel_release, "targets": targets}
    if skipped:
        doc["skipped"] = skipped
    return doc


def _compact(o: "Any") -> str:
    return json.dumps(o, separators=(",", ":"), check_circular=False)


#: stands for the targets list while the rest of a check document is encoded
_PLACEHOLDER = "\x00coredoctor targets\x00"


def dumps(doc: "Any", pretty: bool = True) -> str:
    """Indented for a person; compact (and C-encoded, much faster) for large machine output.

    The compact path skips the encoder's circular-reference check: a check document is a tree
    (results share read-only parts, :mod:`coredoctor.kernel.batch`, but nothing refers back to
    itself), and the check's bookkeeping (a dict of every container's id, entered and left once
    per dict and list) was half of the encoding time of ``check --all`` (6.5 MB over 2,000
    processes: 100 -> 55 ms). And a check document's targets that one batch template stands for
    (:class:`coredoctor.kernel.batch.Bound`) are written as that template's text with the pid
    put in, where the first member's own encoding proved it the same text. The text written is
    the same byte for byte."""
    if pretty:
        return json.dumps(doc, indent=2)
    targets = doc.get("targets") if isinstance(doc, dict) else None
    if not isinstance(targets, list) or not any(getattr(t, "rebinder", None) is not None for t in targets):
        return _compact(doc)
    rest = _compact(dict(doc, targets=_PLACEHOLDER))
    hole = json.dumps(_PLACEHOLDER)
    if rest.count(hole) != 1:
        return _compact(doc)
    texts: "Dict[int, Optional[str]]" = {}  # id(rebinder) -> its template's text, or None: not usable
    parts: "List[str]" = []
    for t in targets:
        rb = getattr(t, "rebinder", None)
        text = None
        if rb is not None:
            k = id(rb)
            if k not in texts:
                # the template's text with the pid put in must be this member's own text: a
                # sentinel's digits that the encoding itself made (a \uXXXX escape beside digits
                # in a hostile name) would show here, and the template is then not used
                text = _compact(t)
                tmpl = _compact(rb.template)
                texts[k] = tmpl if tmpl.replace(rb.s, str(t.pid)) == text else None
            elif texts[k] is not None:
                text = texts[k].replace(rb.s, str(t.pid))  # type: ignore[union-attr]
        parts.append(text if text is not None else _compact(t))
    return rest.replace(hole, "[" + ",".join(parts) + "]", 1)
