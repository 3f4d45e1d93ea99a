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


def dumps(doc: "Any", pretty: bool = True) -> str:
    """Indented for a person; compact (and C-encoded, much faster) for large machine output."""
    return json.dumps(doc, indent=2) if pretty else json.dumps(doc, separators=(",", ":"))
