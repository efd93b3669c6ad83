"""The firm as every programme knows it: the applicant's own declaration."""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

BUSINESS_NUMBER = re.compile(r"[0-9]{3}-[0-9]{2}-[0-9]{5}")
"""A Korean business registration number, NNN-NN-NNNNN (ASCII digits only)."""


class FirmSize(StrEnum):
    SME = "sme"
    MEDIUM = "medium"
    LARGE = "large"


class Firm(BaseModel):
    """A firm as an application declares it (the shared contract of every programme)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    firm_id: str
    name: str
    founded_on: date
    size: FirmSize
    cluster: str
    industry: str
    technology_innovative: bool = False
    """Certified as a technology-innovative SME (M&A tax credits need it)."""

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Firm:
        return cls.model_validate(data)
