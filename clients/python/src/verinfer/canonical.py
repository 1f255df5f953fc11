"""RFC 8785 (JCS) canonical JSON, restricted to what verinfer records hold.

Records carry integers only (amounts are decimal strings), so numbers must
be integers within +/-(2^53 - 1); a float or a larger integer is refused
rather than encoded in a way another implementation might not reproduce.
Object members are sorted by the UTF-16 code units of their names, and
strings are escaped as ECMAScript's JSON.stringify does (RFC 8785 3.2.2.2).
"""

from __future__ import annotations

from typing import Any, Optional

MAX_SAFE_INTEGER = 2**53 - 1

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class CanonicalError(ValueError):
    """A value that has no canonical encoding in verinfer's profile."""


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20:
            out.append("\\u%04x" % code)
        elif 0xD800 <= code <= 0xDFFF:
            raise CanonicalError("a string holds a lone surrogate")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _utf16(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def canonical(value: Any, skip: Optional[str] = None) -> str:
    """The canonical JSON text of `value`; `skip` leaves out one top-level
    member (the signature, to get the bytes a signature covers)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalError(f"number {value} is not an integer within +/-(2^53-1)")
        return str(value)
    if isinstance(value, float):
        raise CanonicalError(f"number {value} is not an integer within +/-(2^53-1)")
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise CanonicalError("object member names must be strings")
        names = sorted((k for k in value if k != skip), key=_utf16)
        return "{" + ",".join(_string(k) + ":" + canonical(value[k]) for k in names) + "}"
    raise CanonicalError(f"a {type(value).__name__} cannot be encoded canonically")


def canonical_bytes(value: Any, skip: Optional[str] = None) -> bytes:
    """UTF-8 of :func:`canonical`."""
    return canonical(value, skip).encode("utf-8")
