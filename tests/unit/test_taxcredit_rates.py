"""Rate tables and credit arithmetic, against figures worked out by hand. Pure: no I/O."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from math import floor
from typing import Any

import pytest
from pydantic import ValidationError

from services.taxcredit.domain.rates import (
    Credit,
    PublishedTable,
    RateTable,
    TraceStep,
    exact,
    load_rate_tables,
    lookup_table,
    mna_technology_credit,
    strategic_investment_credit,
    table_in_force,
    venture_investment_credit,
)
from shared.domain import FirmSize, StrategicIndustry
from tests.unit.taxcredit_builders import (
    CATALOGUE_VERSION,
    DEFAULT_PUBLISHED,
    DEFAULT_TABLE,
    RATES_DOC,
    TECHNOLOGIES,
    a_table,
    published,
)

LARGE, MEDIUM, SME = FirmSize.LARGE, FirmSize.MEDIUM, FirmSize.SME

# --- worked cases -----------------------------------------------------------------------------
# (id, size, current_year, previous_years, credit worked out by hand). Table 2023-1:
# base 0.15 (large, medium) / 0.25 (SME); incremental 0.10 × max(0, current − average).

STRATEGIC_CASES: list[tuple[str, FirmSize, int, tuple[int, ...], int]] = [
    # 0.15 × 1,000,000,000 = 150,000,000; no history: average 0, increase 1,000,000,000,
    # 0.10 × 1,000,000,000 = 100,000,000; 150,000,000 + 100,000,000 = 250,000,000
    ("large-no-history", LARGE, 1_000_000_000, (), 250_000_000),
    # 0.15 × 10,000,000 = 1,500,000; + 0.10 × 10,000,000 = 1,000,000 → 2,500,000
    ("medium-no-history", MEDIUM, 10_000_000, (), 2_500_000),
    # 0.25 × 100,000,000 = 25,000,000; + 0.10 × 100,000,000 = 10,000,000 → 35,000,000 (35 %)
    ("sme-no-history", SME, 100_000_000, (), 35_000_000),
    # 0.15 × 800,000,000 = 120,000,000; average 600,000,000, increase 200,000,000,
    # 0.10 × 200,000,000 = 20,000,000 → 140,000,000
    ("medium-one-year", MEDIUM, 800_000_000, (600_000_000,), 140_000_000),
    # 0.25 × 300,000,000 = 75,000,000; average (200M + 100M) / 2 = 150,000,000,
    # 0.10 × 150,000,000 = 15,000,000 → 90,000,000
    ("sme-two-years", SME, 300_000_000, (200_000_000, 100_000_000), 90_000_000),
    # 0.25 × 400,000,000 = 100,000,000; average (300M + 200M + 100M) / 3 = 200,000,000,
    # 0.10 × 200,000,000 = 20,000,000 → 120,000,000
    ("sme-three-years", SME, 400_000_000, (300_000_000, 200_000_000, 100_000_000), 120_000_000),
    # 0.15 × 2,000,000,000 = 300,000,000; average (1.5G + 1.2G + 0.9G) / 3 = 1,200,000,000,
    # 0.10 × 800,000,000 = 80,000,000 → 380,000,000
    (
        "large-three-years",
        LARGE,
        2_000_000_000,
        (1_500_000_000, 1_200_000_000, 900_000_000),
        380_000_000,
    ),
    # falling: average (150M + 200M + 250M) / 3 = 200,000,000 > 100,000,000: increase 0;
    # 0.25 × 100,000,000 = 25,000,000
    ("sme-falling", SME, 100_000_000, (150_000_000, 200_000_000, 250_000_000), 25_000_000),
    # falling: 500,000,000 < 600,000,000: increase 0; 0.15 × 500,000,000 = 75,000,000
    ("large-falling-one-year", LARGE, 500_000_000, (600_000_000,), 75_000_000),
    # flat: average 120,000,000 = current: increase 0; 0.25 × 120,000,000 = 30,000,000
    ("sme-flat", SME, 120_000_000, (120_000_000, 120_000_000), 30_000_000),
    # average (1,000,000 + 1,000,000 + 1,000,001) / 3 = 3,000,001/3 = 1,000,000.333…;
    # increase 2,000,000 − 3,000,001/3 = 2,999,999/3; 0.10 × that = 2,999,999/30 = 99,999.966…;
    # 0.15 × 2,000,000 = 300,000; total 399,999.966… → 399,999
    ("large-average-not-whole", LARGE, 2_000_000, (1_000_000, 1_000_000, 1_000_001), 399_999),
    # 0.25 × 1,000,003 = 250,000.75; increase 3, 0.10 × 3 = 0.3; total 250,001.05 → 250,001
    # (flooring each part first would give 250,000 + 0 = 250,000)
    ("sme-floor-once", SME, 1_000_003, (1_000_000,), 250_001),
    # average (999,999 + 1,000,000 + 1,000,000) / 3 = 2,999,999/3 = 999,999.666…;
    # increase 1,000,003 − 2,999,999/3 = 10/3; 0.10 × 10/3 = 1/3;
    # 0.25 × 1,000,003 = 250,000.75; total 250,000.75 + 0.333… = 250,001.083… → 250,001
    # (flooring each part first would give 250,000 + 0 = 250,000)
    (
        "sme-floor-once-average-not-whole",
        SME,
        1_000_003,
        (999_999, 1_000_000, 1_000_000),
        250_001,
    ),
    # average (1,000,000 + 999,999) / 2 = 999,999.5; increase 1.5; 0.10 × 1.5 = 0.15;
    # 0.15 × 1,000,001 = 150,000.15; total 150,000.30 → 150,000
    ("medium-half-won-average", MEDIUM, 1_000_001, (1_000_000, 999_999), 150_000),
    # 0.15 × 333,333,333 = 49,999,999.95; average 0 (one year of nothing), increase 333,333,333,
    # 0.10 × 333,333,333 = 33,333,333.3; total 83,333,333.25 → 83,333,333
    # (flooring each part first would give 49,999,999 + 33,333,333 = 83,333,332)
    ("large-floor-once", LARGE, 333_333_333, (0,), 83_333_333),
]

FLOOR_ONCE_CASES = {"sme-floor-once", "sme-floor-once-average-not-whole", "large-floor-once"}

SINGLE_RATE_CASES: list[tuple[str, str, int, int]] = [
    # 0.10 × 1,234,567,891 = 123,456,789.1 → 123,456,789
    ("mna", "technology_value", 1_234_567_891, 123_456_789),
    # 0.10 × 9 = 0.9 → 0
    ("mna-under-a-won", "technology_value", 9, 0),
    # 0.05 × 987,654,321 = 49,382,716.05 → 49,382,716
    ("venture", "amount_invested", 987_654_321, 49_382_716),
    # 0.05 × 19 = 0.95 → 0
    ("venture-under-a-won", "amount_invested", 19, 0),
]


def _decimal_to_6_places(value: Fraction) -> str:
    with localcontext() as context:
        context.prec = 60
        quotient = Decimal(value.numerator) / Decimal(value.denominator)
        return str(quotient.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))


EXACT_VALUE = re.compile(r"-?[0-9]+(\.[0-9]*[1-9])?|-?[0-9]+/[0-9]+")


def assert_steps_are_exact(credit: Credit) -> None:
    for step in credit.trace:
        assert EXACT_VALUE.fullmatch(step.value), step
        assert step.formula
        if "/" in step.value:  # no finite decimal: the formula shows it to 6 places
            assert _decimal_to_6_places(Fraction(step.value)) in step.formula, step


def assert_trace_reproduces(credit: Credit) -> None:
    """The last step is the credit, the floor of the exact total given before it."""
    assert_steps_are_exact(credit)
    last = credit.trace[-1]
    assert last.step == "credit"
    assert last.value == str(credit.amount)
    before = {s.step: s for s in credit.trace}["credit_before_rounding"]
    assert last.inputs == {"credit_before_rounding": before.value}
    assert floor(Fraction(before.value)) == credit.amount
    assert credit.table_version == DEFAULT_TABLE.version


def strategic_steps(credit: Credit) -> dict[str, TraceStep]:
    steps = {s.step: s for s in credit.trace}
    assert [s.step for s in credit.trace] == [
        "base_credit",
        "average_previous_years",
        "increase",
        "incremental_credit",
        "credit_before_rounding",
        "credit",
    ]
    return steps


@pytest.mark.parametrize(
    ("size", "current", "previous", "expected"),
    [case[1:] for case in STRATEGIC_CASES],
    ids=[case[0] for case in STRATEGIC_CASES],
)
def test_strategic_investment_credit_matches_the_hand_worked_figure(
    size: FirmSize, current: int, previous: tuple[int, ...], expected: int
):
    credit = strategic_investment_credit(
        DEFAULT_TABLE, size=size, current_year=current, previous_years=previous
    )

    assert credit.amount == expected
    assert_trace_reproduces(credit)


@pytest.mark.parametrize(
    ("size", "current", "previous", "expected"),
    [case[1:] for case in STRATEGIC_CASES],
    ids=[case[0] for case in STRATEGIC_CASES],
)
def test_strategic_trace_multiplies_out_from_its_inputs(
    size: FirmSize, current: int, previous: tuple[int, ...], expected: int
):
    credit = strategic_investment_credit(
        DEFAULT_TABLE, size=size, current_year=current, previous_years=previous
    )
    steps = strategic_steps(credit)
    value = {name: Fraction(step.value) for name, step in steps.items()}

    base = steps["base_credit"]
    assert base.inputs["size"] == size.value
    assert (
        base.inputs["base_rate"]
        == RATES_DOC["tables"][0]["strategic_investment"]["base_rate"][size.value]
    )
    assert base.inputs["current_year"] == current
    assert Fraction(base.inputs["base_rate"]) * current == value["base_credit"]

    average = steps["average_previous_years"]
    declared = [average.inputs[f"previous_year_{i}"] for i in range(1, len(previous) + 1)]
    assert declared == list(previous)
    assert average.inputs["years"] == len(previous)
    mean = Fraction(sum(previous), len(previous)) if previous else Fraction(0)
    assert value["average_previous_years"] == mean

    increase = steps["increase"]
    assert increase.inputs == {"current_year": current, "average_previous_years": average.value}
    assert value["increase"] == max(Fraction(0), current - mean)

    incremental = steps["incremental_credit"]
    assert incremental.inputs == {"incremental_rate": "0.10", "increase": increase.value}
    assert Fraction("0.10") * value["increase"] == value["incremental_credit"]

    total = steps["credit_before_rounding"]
    assert total.inputs == {"base_credit": base.value, "incremental_credit": incremental.value}
    assert value["base_credit"] + value["incremental_credit"] == value["credit_before_rounding"]
    assert floor(value["credit_before_rounding"]) == expected == value["credit"]


@pytest.mark.parametrize(
    ("size", "current", "previous", "expected"),
    [case[1:] for case in STRATEGIC_CASES if case[0] in FLOOR_ONCE_CASES],
    ids=[case[0] for case in STRATEGIC_CASES if case[0] in FLOOR_ONCE_CASES],
)
def test_flooring_once_at_the_end_is_not_flooring_each_part(
    size: FirmSize, current: int, previous: tuple[int, ...], expected: int
):
    credit = strategic_investment_credit(
        DEFAULT_TABLE, size=size, current_year=current, previous_years=previous
    )
    steps = strategic_steps(credit)
    each_part_floored = floor(Fraction(steps["base_credit"].value)) + floor(
        Fraction(steps["incremental_credit"].value)
    )

    assert credit.amount == expected
    assert each_part_floored == expected - 1


def test_an_average_without_a_finite_decimal_is_kept_as_a_fraction_and_shown_to_6_places():
    credit = strategic_investment_credit(
        DEFAULT_TABLE,
        size=LARGE,
        current_year=2_000_000,
        previous_years=(1_000_000, 1_000_000, 1_000_001),
    )
    steps = strategic_steps(credit)

    assert steps["average_previous_years"].value == "3000001/3"
    assert "1000000.333333" in steps["average_previous_years"].formula
    assert steps["increase"].value == "2999999/3"
    assert "999999.666667" in steps["increase"].formula
    assert steps["incremental_credit"].value == "2999999/30"
    assert steps["credit_before_rounding"].value == "11999999/30"
    assert "399999.966667" in steps["credit_before_rounding"].formula
    assert credit.amount == 399_999


def test_trace_formulas_name_the_rates_a_person_can_look_up():
    credit = strategic_investment_credit(
        DEFAULT_TABLE, size=SME, current_year=400_000_000, previous_years=(300_000_000,)
    )
    steps = strategic_steps(credit)

    assert steps["base_credit"].formula == "base_rate(sme) × current_year"
    assert steps["incremental_credit"].formula == "incremental_rate × increase"
    assert steps["average_previous_years"].formula == "(previous_year_1) / 1"
    assert steps["base_credit"].value == "100000000"


def test_no_history_averages_to_zero():
    credit = strategic_investment_credit(
        DEFAULT_TABLE, size=MEDIUM, current_year=10_000_000, previous_years=()
    )
    average = strategic_steps(credit)["average_previous_years"]

    assert average.value == "0"
    assert average.inputs == {"years": 0}
    assert "average is 0" in average.formula


@pytest.mark.parametrize(
    ("case", "amount_name", "amount", "expected"),
    SINGLE_RATE_CASES,
    ids=[case[0] for case in SINGLE_RATE_CASES],
)
def test_mna_and_venture_credits_match_the_hand_worked_figure(
    case: str, amount_name: str, amount: int, expected: int
):
    if amount_name == "technology_value":
        credit = mna_technology_credit(DEFAULT_TABLE, technology_value=amount)
        rate = "0.10"
    else:
        credit = venture_investment_credit(DEFAULT_TABLE, amount_invested=amount)
        rate = "0.05"

    assert credit.amount == expected
    assert_trace_reproduces(credit)
    [before, _last] = credit.trace
    assert before.inputs == {"rate": rate, amount_name: amount}
    assert Fraction(rate) * amount == Fraction(before.value)


@pytest.mark.parametrize("previous", [(1, 2, 3, 4)], ids=["four-years"])
def test_more_than_three_previous_years_are_refused(previous: tuple[int, ...]):
    with pytest.raises(ValueError, match="at most 3"):
        strategic_investment_credit(
            DEFAULT_TABLE, size=SME, current_year=10, previous_years=previous
        )


@pytest.mark.parametrize(
    "call",
    [
        lambda: strategic_investment_credit(
            DEFAULT_TABLE, size=SME, current_year=-1, previous_years=()
        ),
        lambda: strategic_investment_credit(
            DEFAULT_TABLE, size=SME, current_year=1, previous_years=(-5,)
        ),
        lambda: mna_technology_credit(DEFAULT_TABLE, technology_value=-1),
        lambda: venture_investment_credit(DEFAULT_TABLE, amount_invested=-1),
    ],
    ids=["current", "previous", "mna", "venture"],
)
def test_negative_amounts_are_refused(call: Any):
    with pytest.raises(ValueError, match="won"):
        call()


def test_credit_json_is_amount_version_and_trace():
    credit = venture_investment_credit(DEFAULT_TABLE, amount_invested=987_654_321)

    doc = credit.to_json()

    assert doc == {
        "amount": 49_382_716,
        "table_version": "2023-1",
        "trace": [
            {
                "step": "credit_before_rounding",
                "formula": "rate(corporate_venture_investment) × amount_invested",
                "inputs": {"rate": "0.05", "amount_invested": 987_654_321},
                "value": "49382716.05",
            },
            {
                "step": "credit",
                "formula": "floor(credit_before_rounding), to the won (the only rounding)",
                "inputs": {"credit_before_rounding": "49382716.05"},
                "value": "49382716",
            },
        ],
    }
    assert Credit.from_json(json.loads(json.dumps(doc))) == credit
    assert [step.to_json() for step in credit.trace] == doc["trace"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(1, 3), "1/3"),
        (Fraction(10_000_003, 4), "2500000.75"),
        (Fraction(3, 40), "0.075"),
        (Fraction(-1, 8), "-0.125"),
        (Fraction(0), "0"),
        (Fraction(2_999_999, 30), "2999999/30"),
        (Fraction(1, 1000), "0.001"),
    ],
)
def test_exact_values_are_finite_decimals_or_fractions(value: Fraction, text: str):
    assert exact(value) == text
    assert Fraction(text) == value


# --- the table in force -----------------------------------------------------------------------

SUBMITTED_AT = datetime(2026, 3, 2, 0, 31, tzinfo=UTC)  # 2026-03-02 09:31 in Korea


def test_the_default_table_is_in_force_for_a_2025_claim():
    lookup = lookup_table([DEFAULT_PUBLISHED], SUBMITTED_AT, 2025)

    assert lookup.table == DEFAULT_TABLE
    assert lookup.as_of.isoformat() == "2026-03-02"
    assert lookup.why_none is None


def test_the_most_recently_published_table_wins_whatever_its_valid_from():
    newer_validity = published(
        a_table("2025-1", "2025-01-01", sme="0.30"),
        at=datetime(2025, 1, 1, tzinfo=UTC),
        sequence=2,
    )
    published_last = published(
        a_table("2024-9", "2024-06-01", sme="0.28"),
        at=datetime(2025, 6, 1, tzinfo=UTC),
        sequence=3,
    )

    chosen = table_in_force([published_last, DEFAULT_PUBLISHED, newer_validity], SUBMITTED_AT, 2025)

    assert chosen is not None
    assert chosen.version == "2024-9"


def test_a_table_not_yet_valid_on_the_submission_date_is_not_in_force():
    tomorrow = published(
        a_table("2026-2", "2026-03-03", sme="0.30"),
        at=datetime(2026, 2, 1, tzinfo=UTC),
        sequence=2,
    )

    chosen = table_in_force([DEFAULT_PUBLISHED, tomorrow], SUBMITTED_AT, 2025)

    assert chosen == DEFAULT_TABLE


def test_the_submission_date_is_the_korean_date():
    tomorrow = published(
        a_table("2026-2", "2026-03-03", sme="0.30"),
        at=datetime(2026, 2, 1, tzinfo=UTC),
        sequence=2,
    )
    korean_midnight = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 2026-03-03 00:00 in Korea

    lookup = lookup_table([DEFAULT_PUBLISHED, tomorrow], korean_midnight, 2025)

    assert lookup.as_of.isoformat() == "2026-03-03"
    assert lookup.table is not None and lookup.table.version == "2026-2"


def test_a_table_published_after_the_submission_moment_is_not_in_force():
    just_after = published(
        a_table("2026-1", "2026-01-01", sme="0.30"),
        at=datetime(2026, 3, 2, 0, 31, 0, 1, tzinfo=UTC),
        sequence=2,
    )

    assert table_in_force([DEFAULT_PUBLISHED, just_after], SUBMITTED_AT, 2025) == DEFAULT_TABLE
    at_the_moment = SUBMITTED_AT.replace(microsecond=1)
    chosen = table_in_force([DEFAULT_PUBLISHED, just_after], at_the_moment, 2025)
    assert chosen is not None and chosen.version == "2026-1"


def test_a_tax_year_before_the_first_table_has_no_table():
    lookup = lookup_table([DEFAULT_PUBLISHED], SUBMITTED_AT, 2022)

    assert lookup.table is None
    assert lookup.why_none is not None and "2023" in lookup.why_none
    assert table_in_force([DEFAULT_PUBLISHED], SUBMITTED_AT, 2023) == DEFAULT_TABLE


@pytest.mark.parametrize(
    "tables",
    [
        [],
        [published(DEFAULT_TABLE, at=datetime(2026, 4, 1, tzinfo=UTC), sequence=1)],
        [
            published(
                a_table("2027-1", "2027-01-01"), at=datetime(2026, 1, 1, tzinfo=UTC), sequence=1
            )
        ],
    ],
    ids=["none-published", "published-after-submission", "valid-only-later"],
)
def test_no_candidate_table_means_no_table(tables: list[PublishedTable]):
    lookup = lookup_table(tables, SUBMITTED_AT, 2025)

    assert lookup.table is None
    assert lookup.why_none


def test_a_publication_time_without_a_zone_is_refused():
    with pytest.raises(ValueError, match="timezone"):
        PublishedTable(table=DEFAULT_TABLE, published_at=datetime(2023, 1, 1), sequence=1)


# --- the table document -----------------------------------------------------------------------


def test_the_default_table_round_trips_to_exactly_the_file():
    document = RATES_DOC["tables"][0]

    table = RateTable.from_json(document)

    assert table.to_json() == document
    assert json.dumps(table.to_json(), sort_keys=True) == json.dumps(document, sort_keys=True)
    assert table.to_json()["strategic_investment"]["incremental_rate"] == "0.10"


def test_the_default_table_holds_the_plans_figures():
    rates = DEFAULT_TABLE.strategic_investment

    assert DEFAULT_TABLE.version == "2023-1"
    assert DEFAULT_TABLE.valid_from.isoformat() == "2023-01-01"
    assert rates.base_rate.for_size(LARGE) == rates.base_rate.for_size(MEDIUM) == Decimal("0.15")
    assert rates.base_rate.for_size(SME) == Decimal("0.25")
    assert rates.incremental_rate == Decimal("0.10")
    assert DEFAULT_TABLE.mna_technology_value.rate == Decimal("0.10")
    assert DEFAULT_TABLE.corporate_venture_investment.rate == Decimal("0.05")
    assert DEFAULT_TABLE.four_eyes_threshold == 500_000_000


def test_the_default_table_states_its_assumptions():
    assumptions = " ".join(DEFAULT_TABLE.assumptions)

    assert "5 %" in assumptions and "venture" in assumptions
    assert "this year" in assumptions


def _table_doc(**changes: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(RATES_DOC["tables"][0]))
    doc.update(changes)
    return doc


def _with_base_rate(**base_rate: Any) -> dict[str, Any]:
    doc = _table_doc()
    doc["strategic_investment"]["base_rate"] = base_rate
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        _with_base_rate(large="1.01", medium="0.15", sme="0.25"),
        _with_base_rate(large="-0.15", medium="0.15", sme="0.25"),
        _with_base_rate(large=0.15, medium="0.15", sme="0.25"),
        _with_base_rate(large="0.15", medium="0.15"),
        _with_base_rate(large="0.15", medium="0.15", sme="0.25", micro="0.30"),
        _with_base_rate(large="1e-1", medium="0.15", sme="0.25"),
        _table_doc(mna_technology_value={"rate": "2"}),
        _table_doc(four_eyes_threshold=-1),
        _table_doc(version=""),
        _table_doc(version="2026 1"),
        _table_doc(version="x" * 41),
    ],
    ids=[
        "rate-above-1",
        "negative-rate",
        "float-rate",
        "missing-sme",
        "unknown-size",
        "exponent-notation",
        "mna-rate-above-1",
        "negative-threshold",
        "empty-version",
        "space-in-version",
        "version-too-long",
    ],
)
def test_malformed_tables_are_refused(doc: dict[str, Any]):
    with pytest.raises(ValidationError):
        RateTable.from_json(doc)


@pytest.mark.parametrize("rate", ["0", "1", "1.0", "0.125"])
def test_rates_at_and_inside_the_bounds_are_accepted_as_written(rate: str):
    table = RateTable.from_json(_table_doc(corporate_venture_investment={"rate": rate}))

    assert table.to_json()["corporate_venture_investment"]["rate"] == rate


def test_a_version_of_40_characters_is_accepted():
    assert RateTable.from_json(_table_doc(version="v" * 40)).version == "v" * 40


def test_a_document_naming_a_version_twice_is_refused():
    table = RATES_DOC["tables"][0]

    with pytest.raises(ValueError, match="twice"):
        load_rate_tables({"tables": [table, table]})


# --- the strategic-technology catalogue -------------------------------------------------------


def test_catalogue_lists_the_biopharmaceutical_core_technologies():
    assert CATALOGUE_VERSION == "2026-1"
    cell_culture = TECHNOLOGIES["biopharma-animal-cell-culture"]
    purification = TECHNOLOGIES["biopharma-purification"]
    assert cell_culture.name == "Biopharmaceutical animal cell culture"
    assert purification.name == "Biopharmaceutical purification"
    assert cell_culture.group is purification.group is StrategicIndustry.ADVANCED_BIO


def test_catalogue_ids_are_lowercase_digits_and_hyphens_across_many_industries():
    assert len(TECHNOLOGIES) >= 25
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", tid) for tid in TECHNOLOGIES)
    assert len({t.group for t in TECHNOLOGIES.values()}) >= 8
