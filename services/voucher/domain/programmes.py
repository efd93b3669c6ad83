"""Voucher programmes as the catalogue defines them (the industries are the shared vocabulary)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.domain import StrategicIndustry


class ServiceCategory(StrEnum):
    """Business-support services a voucher pays for."""

    LEGAL = "legal"
    ACCOUNTING = "accounting"
    TAX = "tax"
    CONSULTING = "consulting"
    INTELLECTUAL_PROPERTY = "intellectual_property"
    REGULATORY = "regulatory"
    MARKETING = "marketing"


@dataclass(frozen=True, slots=True)
class Programme:
    """A voucher programme as the catalogue defines it (amounts in integer won)."""

    id: str
    name: str
    clusters: tuple[str, ...]
    industries: tuple[StrategicIndustry, ...]
    service_categories: tuple[ServiceCategory, ...]
    max_startup_age_years: int
    max_amount_per_firm: int
    four_eyes_threshold: int
    voucher_validity_days: int
    budget_total: int
    catalogue_version: str = "unversioned"
    """The version of the catalogue document the programme was read from."""

    def __post_init__(self) -> None:
        if min(self.max_amount_per_firm, self.budget_total, self.four_eyes_threshold) < 0:
            raise ValueError(f"programme {self.id}: amounts cannot be negative")
        if self.max_startup_age_years < 1 or self.voucher_validity_days < 1:
            raise ValueError(f"programme {self.id}: age and validity must be positive")

    @classmethod
    def from_dict(cls, data: dict[str, Any], catalogue_version: str = "unversioned") -> Programme:
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            clusters=tuple(str(c) for c in data["clusters"]),
            industries=tuple(StrategicIndustry(i) for i in data["industries"]),
            service_categories=tuple(ServiceCategory(c) for c in data["service_categories"]),
            max_startup_age_years=int(data["max_startup_age_years"]),
            max_amount_per_firm=int(data["max_amount_per_firm"]),
            four_eyes_threshold=int(data["four_eyes_threshold"]),
            voucher_validity_days=int(data["voucher_validity_days"]),
            budget_total=int(data["budget_total"]),
            catalogue_version=catalogue_version,
        )


def load_catalogue(data: dict[str, Any]) -> dict[str, Programme]:
    """Programmes by id from a catalogue document ``{"version": ..., "programmes": [...]}``."""
    version = str(data.get("version", "unversioned"))
    programmes = [Programme.from_dict(p, version) for p in data["programmes"]]
    by_id = {p.id: p for p in programmes}
    if len(by_id) != len(programmes):
        raise ValueError("the catalogue names a programme id twice")
    return by_id
