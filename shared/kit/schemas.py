"""Request bodies every programme shares; a programme's own bodies derive from :class:`Body`."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class Body(BaseModel):
    """A request body: unknown fields refused, strings stripped, no NUL characters anywhere
    (PostgreSQL cannot store them; SQLite could, so both refuse them here)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        _refuse_nul(value)
        return value


class FirmIn(Body):
    """The applying firm, as every programme asks for it."""

    firm_id: str = Field(min_length=1, max_length=64, examples=["123-45-67890"])
    name: str = Field(min_length=1, max_length=200)
    founded_on: date
    size: FirmSize
    cluster: str = Field(min_length=1, max_length=100, examples=["osong-bio"])
    industry: str = Field(min_length=1, max_length=100, examples=["advanced_bio"])
    technology_innovative: bool = Field(
        default=False, description="certified as a technology-innovative SME"
    )

    def to_domain(self) -> Firm:
        return Firm(**self.model_dump())


class DecisionIn(Body):
    decision: Decision
    reason: str = Field(default="", max_length=2000)


class WithdrawalIn(Body):
    reason: str = Field(default="", max_length=2000)
