"""Request bodies every programme shares; a programme's own bodies derive from :class:`Body`."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from shared.domain import Decision, Firm, FirmSize


def _refuse_nul(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain the NUL character")
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _refuse_nul(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key)
            _refuse_nul(item)


def _a_json_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


JSON_INTEGER = BeforeValidator(_a_json_number)
"""An integer as the document's ``integer`` means it: ``5`` or ``5.0``; never ``true``
or ``"5"``, which pydantic's lax mode (FastAPI validates parsed JSON in it) would take.
``Annotated[int, JSON_INTEGER] = Field(gt=0)``, or ``Annotated[int, Field(gt=0),
JSON_INTEGER]``: bounds put outside it would be missing from the document."""


def _a_json_string(value: Any) -> Any:
    if not isinstance(value, str):
        raise PydanticCustomError("date_type", "Input should be a date as YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_a_json_string)]
"""A date as the document's ``string`` of format ``date`` means it: never the number ``0``,
which lax mode takes for 1970-01-01."""


NOT_BLANK = r"[^\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
r"""Documents what stripping does to a string that must not be empty: one character that is
not white space as pydantic strips it (Unicode's White_Space), spelled out. ``\S`` read by
an ECMAScript client (JSON Schema's regex dialect) lets U+0085 through, which is stripped,
and refuses U+FEFF, which is kept: a client of the schema sent ``"\u0085"`` as a milestone
and got 422. Python's own ``str.strip`` would also strip U+001C-U+001F: pydantic does not."""


def _not_blank_documented(schema: dict[str, Any], model: type[Any]) -> None:
    """A required-length string is stripped before its length is checked: ``"\n"`` is
    refused as empty. Say so in the document, else a client (or schemathesis) takes it
    for valid."""
    for declared in schema.get("properties", {}).values():
        for branch in [declared, *declared.get("anyOf", [])]:
            if (
                branch.get("type") == "string"
                and branch.get("minLength", 0) >= 1
                and not {"pattern", "enum", "const", "format"} & set(branch)
            ):
                branch["pattern"] = NOT_BLANK


class Body(BaseModel):
    """A request body: unknown fields refused, strings stripped, no NUL characters anywhere
    (PostgreSQL cannot store them; SQLite could, so both refuse them here).

    Its integers, dates and booleans are :data:`JSON_INTEGER`, :data:`Day` and ``StrictBool``:
    what the document says they are, where pydantic's lax mode would also take ``true``
    for one won, ``0`` for 1970-01-01 and ``0`` or ``"yes"`` for a yes-or-no."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra=_not_blank_documented
    )

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        _refuse_nul(value)
        return value


class FirmIn(Body):
    """The applying firm, as every programme asks for it."""

    firm_id: str = Field(min_length=1, max_length=64, examples=["123-45-67890"])
    name: str = Field(min_length=1, max_length=200)
    founded_on: Day
    size: FirmSize
    cluster: str = Field(min_length=1, max_length=100, examples=["osong-bio"])
    industry: str = Field(min_length=1, max_length=100, examples=["advanced_bio"])
    technology_innovative: StrictBool = Field(
        default=False, description="certified as a technology-innovative SME"
    )

    def to_domain(self) -> Firm:
        return Firm(**self.model_dump())


class DecisionIn(Body):
    decision: Decision
    reason: str = Field(default="", max_length=2000)


class WithdrawalIn(Body):
    reason: str = Field(default="", max_length=2000)
