"""Tax-credit applications fully processed per second: submit, verified, approved, certified.

The taxcredit service on PostgreSQL and the embedded broker; a scripted officer approves
each claim as soon as it is verified; the certificate stage issues the certificate.
Each claim names a facility of its own (a reference claimed twice is rejected). The
run is ``bench.pipeline``'s.
"""

from __future__ import annotations

from typing import Any

from bench.pipeline import Pipeline, firm, measure


def body(n: int, run: str) -> dict[str, Any]:
    return {
        "programme": "strategic_investment",
        "tax_year": 2026,
        "firm": firm(n, run, founded_on="2015-03-02", cluster="osong-bio", industry="advanced_bio"),
        "technology": "biopharma-animal-cell-culture",
        # a credit of 26,000,000 won, far below the four-eyes threshold: one approval approves
        "investment": {"current_year": 100_000_000, "previous_years": [90_000_000]},
        "facility_reference": f"bench-facility-{run}-{n}",
    }


TAXCREDIT = Pipeline("taxcredit", body, last=("taxcredit.certificate.issued", "certified"))


async def run() -> dict[str, Any]:
    return await measure(TAXCREDIT)
