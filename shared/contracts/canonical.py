"""RFC 8785 JSON Canonicalization Scheme (JCS), for the public hashing rule.

Written out here (not delegated) because it sits on the append hot path and
because an auditor should be able to read the whole rule in one page; the test
suite checks it against an independent implementation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any

import orjson

MAX_SAFE_INTEGER = 2**53 - 1


class CanonicalizationError(ValueError):
    """The value has no RFC 8785 form (NaN, infinity, an unsafe integer, a non-JSON type)."""


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value."""
    if _plain(value):
        # orjson escapes strings as JCS does (the two-character forms, else \u00xx, nothing
        # else); with ASCII keys its sorted order is JCS's (UTF-16 and code-point order agree
        # there); without floats no number needs ECMAScript's formatting; integers are within
        # 2**53. The same bytes, in C; the test suite holds both to an independent JCS.
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: the careful way says what is wrong
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts).encode("utf-8")


def _plain(value: Any) -> bool:
    """Whether ``value`` is dicts, lists, strings, safe integers, booleans and None only,
    with ASCII keys: the values whose JCS form ``orjson`` writes byte for byte."""
    if type(value) is not dict and type(value) is not list:
        return _plain_scalar(value)
    stack = [value]
    while stack:
        item = stack.pop()
        members: Iterable[Any]
        if type(item) is dict:
            try:
                if not "".join(item).isascii():
                    return False
            except TypeError:  # a key that is not a string
                return False
            members = item.values()
        else:
            members = item
        for member in members:
            kind = type(member)
            if kind is str or member is None or kind is bool:
                continue
            if kind is int:
                if -MAX_SAFE_INTEGER <= member <= MAX_SAFE_INTEGER:
                    continue
                return False
            if kind is dict or kind is list:
                stack.append(member)
                continue
            return False  # floats, tuples, other mappings: the careful way
    return True


def _plain_scalar(value: Any) -> bool:
    kind = type(value)
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    return kind is str or value is None or kind is bool


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(encode_basestring(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalizationError(f"integer {value} is beyond 2**53-1; carry it as a string")
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key in sorted(value, key=_utf16_key):
            if not isinstance(key, str):
                raise CanonicalizationError(f"object key {key!r} is not a string")
            if not first:
                out.append(",")
            first = False
            out.append(encode_basestring(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalizationError(f"{type(value).__name__} is not a JSON value")


def _number(x: float) -> str:
    """ECMAScript Number.prototype.toString for a finite double (RFC 8785 section 3.2.2.3)."""
    if math.isnan(x) or math.isinf(x):
        raise CanonicalizationError("NaN and infinity have no JSON form")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    # repr gives the shortest round-tripping digits; rebuild them as (digits, exponent n)
    mantissa, _, exp = repr(abs(x)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    n = len(int_part.lstrip("0")) + (int(exp) if exp else 0)
    if not int_part.lstrip("0"):  # 0.000ddd
        n = -(len(frac_part) - len(frac_part.lstrip("0"))) + (int(exp) if exp else 0)
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-")
        body += str(abs(e))
    return sign + body
