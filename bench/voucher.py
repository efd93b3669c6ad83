"""Voucher applications fully processed per second: submit, verified, approved, issued.

The voucher service on PostgreSQL and the embedded broker; a scripted officer approves
each application as soon as it is verified; the payout stage issues the voucher. Each
firm applies once (one open application per firm). The run is ``bench.pipeline``'s.
"""

from __future__ import annotations

from typing import Any

from bench.pipeline import Pipeline, firm, measure


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


VOUCHER = Pipeline("voucher", body, last=("voucher.voucher.issued", "issued"))


async def run() -> dict[str, Any]:
    return await measure(VOUCHER)
