"""Voucher applications fully processed per second: submit, verified, approved, issued.

The voucher service on PostgreSQL and the embedded broker; a scripted officer approves
each application as soon as it is verified; the payout stage issues the voucher. Each
firm applies once (one open application per firm). The run is ``bench.pipeline``'s.

The service runs with a catalogue of its own: the packaged programmes with budgets no bench
run can exhaust. With the packaged 5 billion won, a machine that peaks near 470
applications/s ran the budget out in the paced run, and the officers' approvals were refused.
"""

from __future__ import annotations

from typing import Any

from bench.pipeline import Pipeline, firm, measure
from shared.kit.catalogue import load_document


def catalogue() -> dict[str, Any]:
    """The packaged voucher catalogue, each programme's budget a million billion won."""
    document = load_document("services.voucher.catalogue", "default.json")
    document["version"] = f"{document['version']}-bench"
    for programme in document["programmes"]:
        programme["budget_total"] = 10**15
    return document


def body(n: int, run: str) -> dict[str, Any]:
    return {
        "programme_id": "cluster-startup-support-2026",
        "firm": firm(
            n,
            run,
            founded_on="2024-01-15",
            cluster="pangyo-techno-valley",
            industry="artificial_intelligence",
        ),
        "service_category": "consulting",
        "requested_amount": 1_000_000,  # below the four-eyes threshold: one approval approves
        "purpose": "go-to-market consulting",
    }


VOUCHER = Pipeline("voucher", body, last=("voucher.voucher.issued", "issued"), catalogue=catalogue)


async def run() -> dict[str, Any]:
    return await measure(VOUCHER)
