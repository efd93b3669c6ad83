"""The national strategic industries and technologies every programme speaks of."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class StrategicIndustry(StrEnum):
    """The 12 national strategic industries of the cluster plan."""

    SEMICONDUCTORS = "semiconductors"
    SECONDARY_BATTERIES = "secondary_batteries"
    ADVANCED_MOBILITY = "advanced_mobility"
    NEXT_GENERATION_NUCLEAR = "next_generation_nuclear"
    ADVANCED_BIO = "advanced_bio"
    AEROSPACE_AND_MARINE = "aerospace_and_marine"
    HYDROGEN = "hydrogen"
    CYBERSECURITY = "cybersecurity"
    ARTIFICIAL_INTELLIGENCE = "artificial_intelligence"
    NEXT_GENERATION_COMMUNICATIONS = "next_generation_communications"
    ADVANCED_ROBOTICS_AND_MANUFACTURING = "advanced_robotics_and_manufacturing"
    QUANTUM = "quantum"


@dataclass(frozen=True, slots=True)
class StrategicTechnology:
    """One national strategic technology under the Restriction of Special Taxation Act."""

    id: str
    name: str
    group: StrategicIndustry


def load_technologies(data: Mapping[str, Any]) -> dict[str, StrategicTechnology]:
    """Technologies by id from ``{"version": ..., "technologies": [{"id", "name", "group"}]}``."""
    found = [
        StrategicTechnology(
            id=str(t["id"]), name=str(t["name"]), group=StrategicIndustry(t["group"])
        )
        for t in data["technologies"]
    ]
    by_id = {t.id: t for t in found}
    if len(by_id) != len(found):
        raise ValueError("the technology catalogue names an id twice")
    return by_id
