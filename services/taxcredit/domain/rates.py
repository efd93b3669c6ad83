"""Rate tables and the credit arithmetic: versioned, date-effective, exact to the won.

Every figure is exact (``Fraction`` from integer won and decimal-string rates, never
float) and is floored to the won once, at the very end. Each credit comes with a
trace an auditor can redo by hand: every step names its formula, the exact values it
used and its exact value (``"p/q"`` where the value has no finite decimal form).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from math import floor
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from shared.domain import FirmSize, today_in_korea

MAX_HISTORY_YEARS = 3
"""The incremental part compares with the average of at most the three previous years."""

_PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def _rate(value: Any) -> Decimal:
    """A rate from a plain decimal string such as ``"0.10"`` (floats are refused: inexact)."""
    if isinstance(value, Decimal):
        rate = value
    elif isinstance(value, str) and _PLAIN_DECIMAL.fullmatch(value):
        rate = Decimal(value)
    else:
        raise ValueError('a rate is a decimal string such as "0.15"')
    if not rate.is_finite() or not 0 <= rate <= 1:
        raise ValueError("a rate lies between 0 and 1")
    return rate


Rate = Annotated[
    Decimal,
    BeforeValidator(_rate),
    PlainSerializer(lambda rate: format(rate, "f"), return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(0+(\.[0-9]+)?|0*1(\.0+)?)$",  # what _rate takes: digits, at most 1
            "description": "a plain decimal string between 0 and 1",
            "examples": ["0.15"],
        }
    ),
]
"""A rate in [0, 1], written as the decimal string it was given (``"0.10"`` stays ``"0.10"``)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BaseRates(_Frozen):
    """The base rate of the strategic investment credit, by firm size."""

    large: Rate
    medium: Rate
    sme: Rate

    def for_size(self, size: FirmSize) -> Decimal:
        rate: Decimal = getattr(self, FirmSize(size).value)
        return rate


class StrategicInvestmentRates(_Frozen):
    base_rate: BaseRates
    incremental_rate: Rate
    """On the increase of the year's investment over the average of the previous years."""


class SingleRate(_Frozen):
    rate: Rate


class RateTable(_Frozen):
    """One published rate table, in force from ``valid_from`` until a later one is published."""

    version: str = Field(pattern=r"^[A-Za-z0-9._-]{1,40}$")
    valid_from: date
    assumptions: tuple[str, ...] = ()
    """What the table assumes where the policy is silent (stated here, never in code)."""
    strategic_investment: StrategicInvestmentRates
    mna_technology_value: SingleRate
    corporate_venture_investment: SingleRate
    four_eyes_threshold: int = Field(ge=0, le=2**53 - 1)
    """A credit at or above this many won needs two officers' approvals."""

    @model_validator(mode="after")
    def _no_credit_above_the_investment(self) -> RateTable:
        rates = self.strategic_investment
        for size in FirmSize:
            if rates.base_rate.for_size(size) + rates.incremental_rate > 1:
                raise ValueError(
                    f"base_rate({size}) + incremental_rate is above 1: a credit would exceed "
                    "the investment"
                )
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RateTable:
        return cls.model_validate(dict(data))


def load_rate_tables(data: Mapping[str, Any]) -> tuple[RateTable, ...]:
    """The tables of a document ``{"tables": [<table>, ...]}``, in the document's order."""
    tables = tuple(RateTable.from_json(t) for t in data["tables"])
    if len({t.version for t in tables}) != len(tables):
        raise ValueError("the rate-table document names a version twice")
    return tables


# --- which table is in force ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishedTable:
    """A rate table as it was published: when, and its place in publication order."""

    table: RateTable
    published_at: datetime
    sequence: int
    """Publication order (the position of its ``rate_table.published`` event); later wins."""

    def __post_init__(self) -> None:
        if self.published_at.tzinfo is None:
            raise ValueError("published_at must be timezone-aware")


@dataclass(frozen=True, slots=True)
class TableLookup:
    """The table in force for an application, or why there is none."""

    as_of: date
    """The submission's date in Korea: the only date the choice depends on."""
    table: RateTable | None
    why_none: str | None = None


def lookup_table(
    tables: Iterable[PublishedTable], submitted_at: datetime, tax_year: int
) -> TableLookup:
    """The table in force for an application submitted at ``submitted_at`` for ``tax_year``.

    Candidates are the tables published at or before the submission moment whose
    ``valid_from`` is on or before the submission date (in Korea); of these the most
    recently published wins, whatever its ``valid_from``. A tax year earlier than the
    year of the earliest candidate's ``valid_from`` has no table. Tables published
    after the submission never count, so a consumer that verifies late decides the same.
    """
    as_of = today_in_korea(submitted_at)
    candidates = [
        t for t in tables if t.published_at <= submitted_at and t.table.valid_from <= as_of
    ]
    if not candidates:
        return TableLookup(
            as_of=as_of,
            table=None,
            why_none=f"no rate table published by the submission was in force on {as_of}",
        )
    first_year = min(t.table.valid_from for t in candidates).year
    if tax_year < first_year:
        return TableLookup(
            as_of=as_of,
            table=None,
            why_none=f"tax year {tax_year} is before {first_year}, the first year a rate "
            "table covers",
        )
    chosen = max(candidates, key=lambda t: t.sequence)
    return TableLookup(as_of=as_of, table=chosen.table)


def table_in_force(
    tables: Iterable[PublishedTable], submitted_at: datetime, tax_year: int
) -> RateTable | None:
    """The table :func:`lookup_table` chooses, or None."""
    return lookup_table(tables, submitted_at, tax_year).table


# --- credits and their traces -----------------------------------------------------------------

TraceInput = str | int


class TraceStep(_Frozen):
    """One step of a credit calculation, exact enough to redo by hand."""

    step: str
    formula: str
    """In words, e.g. ``base_rate(sme) × current_year``; non-finite values also to 6 places."""
    inputs: dict[str, TraceInput]
    """The exact values used: integer won as ints, rates and derived values as strings."""
    value: str
    """Exact: a finite decimal string, or ``"p/q"`` where the value has no finite decimal."""

    def __hash__(self) -> int:  # inputs is a dict: hash its items
        return hash((self.step, self.formula, tuple(sorted(self.inputs.items())), self.value))

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Credit(_Frozen):
    """A computed credit: the amount in won, the table it was computed with, and the trace."""

    amount: int = Field(ge=0)
    table_version: str
    trace: tuple[TraceStep, ...]
    """The last step is the floored credit and equals ``amount``."""

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Credit:
        return cls.model_validate(dict(data))


def exact(value: Fraction | int) -> str:
    """A value exactly: a finite decimal string where there is one, else ``"p/q"``."""
    value = Fraction(value)
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * 10**places // value.denominator  # exact: no remainder
    sign = "-" if value < 0 else ""
    if places == 0:
        return f"{sign}{scaled}"
    digits = str(scaled).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def _six_places(value: Fraction) -> str:
    scaled = round(value * 10**6)  # half to even
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled)).rjust(7, "0")
    return f"{sign}{digits[:-6]}.{digits[-6:]}"


def _step(name: str, formula: str, inputs: dict[str, TraceInput], value: Fraction) -> TraceStep:
    text = exact(value)
    if "/" in text:
        formula = f"{formula} = {text} ≈ {_six_places(value)} (to 6 decimal places)"
    return TraceStep(step=name, formula=formula, inputs=inputs, value=text)


def _rate_text(rate: Decimal) -> str:
    return format(rate, "f")


def _floored(table: RateTable, steps: list[TraceStep], before_rounding: Fraction) -> Credit:
    amount = floor(before_rounding)
    steps.append(
        _step(
            "credit",
            "floor(credit_before_rounding), to the won (the only rounding)",
            {"credit_before_rounding": exact(before_rounding)},
            Fraction(amount),
        )
    )
    return Credit(amount=amount, table_version=table.version, trace=tuple(steps))


def _won(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number of won, zero or more")
    return value


def strategic_investment_credit(
    table: RateTable, *, size: FirmSize, current_year: int, previous_years: Sequence[int]
) -> Credit:
    """floor(base_rate(size) × current_year + incremental_rate × max(0, current_year − average)).

    ``previous_years`` are the investments of tax_year − 1, − 2, − 3 (at most three;
    fewer for a younger firm); their average is their exact mean, 0 when none is given.
    """
    size = FirmSize(size)
    current = _won("current_year", current_year)
    history = [_won(f"previous_year_{i}", v) for i, v in enumerate(previous_years, start=1)]
    if len(history) > MAX_HISTORY_YEARS:
        raise ValueError(f"at most {MAX_HISTORY_YEARS} previous years are averaged")
    rates = table.strategic_investment
    base_rate = rates.base_rate.for_size(size)
    steps: list[TraceStep] = []

    base = Fraction(base_rate) * current
    steps.append(
        _step(
            "base_credit",
            f"base_rate({size.value}) × current_year",
            {"size": size.value, "base_rate": _rate_text(base_rate), "current_year": current},
            base,
        )
    )

    average = Fraction(sum(history), len(history)) if history else Fraction(0)
    names = [f"previous_year_{i}" for i in range(1, len(history) + 1)]
    if history:
        average_formula = f"({' + '.join(names)}) / {len(history)}"
    else:
        average_formula = "no previous years given: the average is 0"
    steps.append(
        _step(
            "average_previous_years",
            average_formula,
            {**dict(zip(names, history, strict=True)), "years": len(history)},
            average,
        )
    )

    increase = max(Fraction(0), current - average)
    steps.append(
        _step(
            "increase",
            "max(0, current_year − average_previous_years)",
            {"current_year": current, "average_previous_years": exact(average)},
            increase,
        )
    )

    incremental = Fraction(rates.incremental_rate) * increase
    steps.append(
        _step(
            "incremental_credit",
            "incremental_rate × increase",
            {"incremental_rate": _rate_text(rates.incremental_rate), "increase": exact(increase)},
            incremental,
        )
    )

    total = base + incremental
    steps.append(
        _step(
            "credit_before_rounding",
            "base_credit + incremental_credit",
            {"base_credit": exact(base), "incremental_credit": exact(incremental)},
            total,
        )
    )
    return _floored(table, steps, total)


def _single_rate_credit(
    table: RateTable, programme: str, rate: Decimal, amount_name: str, amount: int
) -> Credit:
    value = Fraction(rate) * _won(amount_name, amount)
    steps = [
        _step(
            "credit_before_rounding",
            f"rate({programme}) × {amount_name}",
            {"rate": _rate_text(rate), amount_name: amount},
            value,
        )
    ]
    return _floored(table, steps, value)


def mna_technology_credit(table: RateTable, *, technology_value: int) -> Credit:
    """floor(rate × technology_value): a technology-innovative SME's M&A credit."""
    return _single_rate_credit(
        table,
        "mna_technology_value",
        table.mna_technology_value.rate,
        "technology_value",
        technology_value,
    )


def venture_investment_credit(table: RateTable, *, amount_invested: int) -> Credit:
    """floor(rate × amount_invested): a corporation's investment in a venture firm or fund."""
    return _single_rate_credit(
        table,
        "corporate_venture_investment",
        table.corporate_venture_investment.rate,
        "amount_invested",
        amount_invested,
    )


__all__ = [
    "MAX_HISTORY_YEARS",
    "BaseRates",
    "Credit",
    "PublishedTable",
    "Rate",
    "RateTable",
    "SingleRate",
    "StrategicInvestmentRates",
    "TableLookup",
    "TraceStep",
    "exact",
    "load_rate_tables",
    "lookup_table",
    "mna_technology_credit",
    "strategic_investment_credit",
    "table_in_force",
    "venture_investment_credit",
]
