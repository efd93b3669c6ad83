"""JSON text as the services store, publish and answer it: compact, non-ASCII written as is.

``orjson`` writes it, in C. On the fund service's submit and vote paths the standard
library's encoder was about 8 % of the service's CPU at peak (projection documents, stored
responses, event payloads, HTTP answers).

- What ``orjson`` refuses, the standard library writes as before (an integer past 64 bits,
  a lone surrogate, a non-string key), so nothing that was written before is refused now.
  The other way round, a datetime, a date or a dataclass stays refused (passed through to
  the standard library), but ``orjson`` writes a ``UUID`` or a plain ``Enum`` member, which
  the standard library refused; no document, response or payload holds one (they are
  built as JSON values: strings, whole numbers, lists and objects).
- For every value without floats the text is the one ``json.dumps(value, separators=(",",
  ":"), ensure_ascii=False)`` wrote, byte for byte; a test holds the two together. A float
  may be spelt otherwise (``1e-7`` for ``1e-07``) and reads back the same. ``orjson`` writes
  a float NaN or infinity as ``null`` where the standard library wrote ``NaN``, which is not
  JSON; no service holds a float (money is whole won, rates are decimal text).
- This text is never hashed: the public hashing rule is RFC 8785's (``shared.contracts``).
- It is still read with the standard library: ``orjson`` reads an integer past 64 bits as a
  float, and amounts must stay exact.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# datetimes, dataclasses and subclasses go to the standard library (which refuses a datetime
# and a dataclass, and writes a str or int subclass by its value): orjson would write them
_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def dumps_bytes(value: Any) -> bytes:
    """The compact UTF-8 JSON of ``value``."""
    try:
        return orjson.dumps(value, default=_refuse, option=_PASSTHROUGH)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps(value: Any) -> str:
    """The compact JSON text of ``value``, as ``str``."""
    try:
        return orjson.dumps(value, default=_refuse, option=_PASSTHROUGH).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
