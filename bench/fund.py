"""Fund investments fully processed per second: submit, verified, approved, committed.

The fund service on PostgreSQL and the embedded broker; two members of the Global Open
Innovation Fund's committee (quorum 2) vote ``for`` each application as soon as it is
verified, one after the other; the commitment stage then holds the amount from the fund and its parent and
commits the investment. The run is ``bench.pipeline``'s.

The service runs with a catalogue of its own: the packaged funds, committees and remits,
with capacities no bench run can exhaust (nothing is refused for capacity). Each
application covers a cost of its own (no ``duplicate_support``) and comes from a firm of
its own, for 100 million won: far below the combined yearly cap of 50 billion won a firm.
"""

from __future__ import annotations

from typing import Any

from bench.pipeline import Decision, Pipeline, firm, measure
from bench.voucher import VOUCHER
from shared.kit.catalogue import load_document

GOIF = "global-open-innovation-fund"
COMMITTEE = ("officer-kim", "officer-lee")
"""Two of the Global Open Innovation Fund's three members: its quorum."""
AMOUNT = 100_000_000
"""Won per investment, in three tranches."""
VOUCHER_RATIO = VOUCHER.target_ratio
"""The fund's target is "the same ratio as voucher": the voucher section's own target (peak
applications/s over raw tx/s, both measured in the same run), which the tax-credit issue
names "the voucher's ratio, 0.08"."""


def catalogue() -> dict[str, Any]:
    """The packaged fund catalogue, with capacities of a million billion won and more."""
    document = load_document("services.fund.catalogue", "default.json")
    document["version"] = f"{document['version']}-bench"
    for fund in document["funds"]:
        # a sub-fund's capacity is carved out of its parent's: the parent holds more
        fund["capacity"] = 4 * 10**15 if fund["parent"] is None else 2 * 10**15
    return document


def body(n: int, run: str) -> dict[str, Any]:
    third = AMOUNT // 3
    return {
        "fund_id": GOIF,
        "firm": firm(n, run, founded_on="2015-03-02", cluster="osong-bio", industry="advanced_bio"),
        "stage": "clinical",
        "instrument": "equity",
        "amount": AMOUNT,
        "pre_money_valuation": 30_000_000_000,
        "tranches": [
            {"amount": a, "milestone": f"milestone {i}"}
            for i, a in enumerate((third, third, AMOUNT - 2 * third), 1)
        ],
        "co_investors": [],
        "due_diligence": {"financials": True, "ip": True, "legal": True, "site_visit": True},
        "cost_reference": f"bench-trial-{run}-{n}",
    }


def vote(member: str) -> Decision:
    body = {"vote": "for", "reason": "diligence read", "conflict_of_interest": False}
    return Decision(member, "/v1/applications/{id}/votes", body)


FUND = Pipeline(
    "fund",
    body,
    last=("fund.investment.committed", "committed"),
    decisions=tuple(vote(member) for member in COMMITTEE),
    # in turn, each vote once the previous one is answered: posted together, the second
    # waits on the application's row lock and holds up the group commit it is part of
    in_turn=True,
    decided_by=f"{len(COMMITTEE)} scripted committee votes",
    catalogue=catalogue,
    target_ratio=VOUCHER_RATIO,
)


async def run() -> dict[str, Any]:
    return await measure(FUND)
