"""The mega fund and its sub-funds, as the fund catalogue defines them.

A fund invests at some stages of a firm's life in some strategic industries (its remit),
up to its capacity, on the votes of its investment committee. A sub-fund names its
parent; the capacities of a parent's sub-funds are carved out of the parent's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, model_validator

from shared.domain import Part, StrategicIndustry

MAX_WON = 2**53 - 1
"""Amounts are integer won, at most the largest integer a JSON number carries exactly."""

Capacity = Annotated[int, Field(ge=0, le=MAX_WON)]


class Stage(StrEnum):
    """What an investment pays for."""

    RND = "rnd"
    """Joint research and development."""
    CLINICAL = "clinical"
    """Clinical trials."""
    EXPORT = "export"
    """Overseas expansion and exports."""
    MNA = "mna"
    """Mergers and acquisitions."""


class Remit(Part):
    """The stages and industries a fund may invest in."""

    stages: tuple[Stage, ...] = Field(min_length=1)
    industries: tuple[StrategicIndustry, ...] = Field(min_length=1)

    def covers(self, stage: str, industry: str) -> bool:
        return stage in self.stages and industry in self.industries


class Committee(Part):
    """The investment committee: the officers who vote, and how many ``for`` votes approve."""

    members: tuple[str, ...] = Field(min_length=1)
    """Officer subjects (the ``sub`` of their tokens)."""
    quorum: int = Field(ge=1)

    @model_validator(mode="after")
    def _reachable(self) -> Committee:
        if len(set(self.members)) != len(self.members):
            raise ValueError("a committee names a member twice")
        if any(not member.strip() for member in self.members):
            raise ValueError("a committee member must be named")
        if self.quorum > len(self.members):
            raise ValueError(
                f"a quorum of {self.quorum} cannot be reached by {len(self.members)} members"
            )
        return self


class Fund(Part):
    """One fund of the catalogue (capacity in integer won)."""

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    capacity: Capacity
    remit: Remit
    committee: Committee
    parent: str | None = None
    """The id of the fund this one is a sub-fund of; None for a top-level fund."""


def lineage(funds: Mapping[str, Fund], fund_id: str) -> list[str]:
    """The fund and its parents, the fund first."""
    chain = []
    current = funds.get(fund_id)
    while current is not None:
        chain.append(current.id)
        current = funds.get(current.parent) if current.parent else None
    return chain


def catalogue_version(document: Mapping[str, Any]) -> str:
    """The version a catalogue document declares (recorded in the verification facts)."""
    return str(document.get("version", "unversioned"))


def load_funds(document: Mapping[str, Any]) -> dict[str, Fund]:
    """Funds by id from ``{"version", "assumptions", "funds": [...]}``, checked as a whole.

    Ids are unique; a parent exists and no fund is its own ancestor; a sub-fund's remit
    lies within its parent's; the capacities of a fund's sub-funds sum to no more than
    its own. Any breach is a ``ValueError`` naming the fund.
    """
    listed = [Fund.model_validate(entry) for entry in document["funds"]]
    funds = {fund.id: fund for fund in listed}
    if len(funds) != len(listed):
        raise ValueError("the fund catalogue names a fund id twice")
    for fund in listed:
        _check_ancestry(fund, funds)
    for parent in listed:
        children = [f for f in listed if f.parent == parent.id]
        carved = sum(child.capacity for child in children)
        if carved > parent.capacity:
            raise ValueError(
                f"the sub-funds of {parent.id} ({', '.join(c.id for c in children)}) hold "
                f"{carved} won, more than its capacity of {parent.capacity} won"
            )
    return funds


def _check_ancestry(fund: Fund, funds: Mapping[str, Fund]) -> None:
    seen = {fund.id}
    ancestor = fund
    while ancestor.parent is not None:
        parent = funds.get(ancestor.parent)
        if parent is None:
            raise ValueError(f"fund {ancestor.id} names an unknown parent {ancestor.parent!r}")
        if parent.id in seen:
            raise ValueError(f"fund {fund.id} is its own ancestor")
        seen.add(parent.id)
        ancestor = parent
    if fund.parent is not None:
        parent_remit = funds[fund.parent].remit
        outside = [str(s) for s in fund.remit.stages if s not in parent_remit.stages] + [
            str(i) for i in fund.remit.industries if i not in parent_remit.industries
        ]
        if outside:
            raise ValueError(
                f"sub-fund {fund.id} invests outside the remit of {fund.parent}: "
                + ", ".join(outside)
            )


__all__ = [
    "MAX_WON",
    "Committee",
    "Fund",
    "Remit",
    "Stage",
    "catalogue_version",
    "lineage",
    "load_funds",
]
