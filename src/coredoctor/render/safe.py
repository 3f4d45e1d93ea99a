"""
Safe text
---------
Names, paths, argv and log text shown to an operator are attacker-controlled (any process can
rename itself). :func:`escape` makes a string printable on any terminal and unable to forge
output lines: control characters (C0 including ``\\n``, ``\\r``, ``\\t`` and ESC, DEL, C1),
lone surrogates (undecodable bytes read with ``surrogateescape``) and the Unicode line
separators and bidi overrides become visible escapes (``\\x1b``, ``\\n``, ``\\udcff``). A
backslash is left alone: the fix commands shown (``printf '...\\n'``) must stay exact.
:func:`clean` applies it to every
string in a structure (dict keys and values, lists, tuples), for the text renderers' inputs;
JSON output is not cleaned (``json.dumps`` escapes, and its consumers want the exact value).
"""

import re
from typing import Dict, List, TypeVar, overload

__all__ = ["escape", "clean"]

_K = TypeVar("_K")
_V = TypeVar("_V")
_T = TypeVar("_T")

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0, DEL, C1, the lone-surrogate range, and the Unicode line/paragraph
# separators and bidi overrides that can make a line look like another one
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _one(m: "re.Match[str]") -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def escape(s: str) -> str:
    """*s* with every control character and lone surrogate as a visible escape."""
    return _BAD.sub(_one, s)


# the same shape comes back (a dict subclass as a plain dict): the renderers read it as they
# would have read *obj*
@overload
def clean(obj: str) -> str: ...
@overload
def clean(obj: Dict[_K, _V]) -> Dict[_K, _V]: ...
@overload
def clean(obj: List[_V]) -> List[_V]: ...
@overload
def clean(obj: _T) -> _T: ...


def clean(obj: object) -> object:
    """A copy of *obj* with :func:`escape` applied to every string (keys included)."""
    if isinstance(obj, str):
        return escape(obj)
    if isinstance(obj, dict):
        return {clean(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clean(v) for v in obj)
    return obj
