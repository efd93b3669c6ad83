"""The JSON text the services store, publish and answer is the standard library's, written faster."""

from __future__ import annotations

import enum
import json
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import jsontext


def standard(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# every code point but the surrogates (which no UTF-8 text holds), control characters and
# U+2028 included; integers over the whole 64-bit range and past it
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(alphabet=st.characters(codec="utf-8")),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet=st.characters(codec="utf-8"), max_size=6), children)
    ),
    max_leaves=20,
)


@settings(max_examples=500)
@given(values)
def test_the_text_is_the_standard_librarys_byte_for_byte(value: Any) -> None:
    assert jsontext.dumps(value) == standard(value)
    assert jsontext.dumps_bytes(value) == standard(value).encode()


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_reads_back_the_same(value: float) -> None:
    assert json.loads(jsontext.dumps({"rate": value})) == {"rate": value}


class Colour(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    "value",
    [
        {"amount": 2**64},  # past orjson's integers
        {"note": "\ud800"},  # a lone surrogate
        {1: "one"},  # a key that is not a string
        {"colour": Colour.RED},  # a str subclass: written by its value
    ],
)
def test_what_orjson_refuses_is_written_as_before(value: Any) -> None:
    assert jsontext.dumps(value) == standard(value)


def test_what_the_standard_library_refuses_stays_refused() -> None:
    with pytest.raises(TypeError):
        jsontext.dumps({"on": date(2026, 12, 3)})
    with pytest.raises(TypeError):
        jsontext.dumps_bytes({"on": date(2026, 12, 3)})
