"""One fund investment from application to the last tranche, against a running stack.

    make run                                        # in one terminal
    .venv/bin/python examples/fund_walkthrough.py   # in another

A firm asks the Global Open Innovation Fund for 6,000,000,000 won for a phase 2 trial,
in three tranches, with two corporations co-investing. Verification checks the remit,
due diligence, capacity and the other programmes' grants; two of the three committee
members vote for it (quorum 2); the commitment stage holds the capacity; an officer
releases each tranche on its milestone's evidence and the payout stage pays it once.
With taxcredit running too, each co-investor finds a corporate venture investment
claim under its own firm id, its credit computed.
"""

from __future__ import annotations

import time
import uuid

import httpx
from walkthrough import Walkthrough, random_business_number  # beside this script

from shared.contracts import Role

FUND = "global-open-innovation-fund"
TRANCHES = [2_000_000_000, 2_000_000_000, 2_000_000_000]


def main() -> int:
    walk = Walkthrough(__doc__.splitlines()[0], "fund", 8003, width=56)
    firm = walk.firm("cfo@osong-cell")
    ministry = walk.bearer(Role.MINISTRY, "mois-analyst")
    members = [walk.bearer(Role.OFFICER, m) for m in ("officer-kim", "officer-lee")]
    officer = walk.bearer(Role.OFFICER, "officer-park")
    investors = [random_business_number(), random_business_number()]
    with walk.http:
        before = {f["id"]: f for f in walk.http.get("/v1/funds", headers=ministry).json()}
        print(f"{FUND}: {before[FUND]['available']:,} won available")
        application = walk.submit(
            "firm applies for a phase 2 trial investment",
            firm,
            {
                "fund_id": FUND,
                "firm": {
                    "firm_id": walk.firm_id,
                    "name": "Osong Cell Therapeutics",
                    "founded_on": "2015-03-02",
                    "size": "sme",
                    "cluster": "osong-bio",
                    "industry": "advanced_bio",
                },
                "stage": "clinical",
                "instrument": "equity",
                "amount": sum(TRANCHES),
                "pre_money_valuation": 40_000_000_000,
                "tranches": [
                    {"amount": amount, "milestone": milestone}
                    for amount, milestone in zip(
                        TRANCHES,
                        ["first patient dosed", "interim analysis", "last patient out"],
                        strict=True,
                    )
                ],
                "co_investors": [
                    {
                        "investor_firm_id": investors[0],
                        "name": "Hanbit Pharma",
                        "amount": 1_000_000_000,
                    },
                    {
                        "investor_firm_id": investors[1],
                        "name": "Daejeon Ventures",
                        "amount": 500_000_000,
                    },
                ],
                "due_diligence": {
                    "financials": True,
                    "ip": True,
                    "legal": True,
                    "site_visit": True,
                },
                "cost_reference": f"TRIAL-OSONG-{uuid.uuid4().hex[:8].upper()}",
            },
        )
        app_id = application["id"]
        walk.wait_for(app_id, "verified", firm)
        for member, name in zip(members, ("officer-kim", "officer-lee"), strict=True):
            walk.show(
                f"committee member {name} votes for",
                walk.http.post(
                    f"/v1/applications/{app_id}/votes",
                    headers=member,
                    json={"vote": "for", "reason": "credible plan, diligence complete"},
                ),
            )
        committed = walk.wait_for(app_id, "committed", firm)
        print(f"committed on {committed['committed_on']}: {committed['amount']:,} won")
        for tranche in committed["tranches"]:
            number = tranche["number"]
            walk.show(
                f"officer releases tranche {number} ({tranche['milestone']})",
                walk.http.post(
                    f"/v1/applications/{app_id}/tranches/{number}/release",
                    headers=officer,
                    json={"milestone_evidence": f"report on {tranche['milestone']}, signed"},
                ),
            )
            paid = _paid(walk.http, app_id, number, firm)
            print(f"  ... tranche {number} paid, payout {paid}")
        done = walk.wait_for(app_id, "completed", firm)
        print(f"disbursed {done['disbursed']:,} won")
        after = {f["id"]: f for f in walk.http.get("/v1/funds", headers=ministry).json()}
        print(
            f"{FUND}: disbursed {after[FUND]['disbursed']:,}, "
            f"available {after[FUND]['available']:,} won"
        )
        _claims(walk, investors)
        _, verified = walk.show_chain(app_id, firm)
        return 0 if verified else 1


def _paid(http: httpx.Client, app_id: str, number: int, firm: dict[str, str]) -> str:
    for _ in range(100):
        body = http.get(f"/v1/applications/{app_id}", headers=firm).json()
        tranche = body["tranches"][number - 1]
        if tranche["status"] == "paid":
            return str(tranche["payout_id"])
        time.sleep(0.1)
    raise SystemExit(f"tranche {number} was not paid: {body}")


def _claims(walk: Walkthrough, investors: list[str]) -> None:
    """Each co-investor's tax-credit claim, if taxcredit runs beside fund (on the port below
    fund's, as `make run` starts them)."""
    url = walk.http.base_url
    with httpx.Client(base_url=url.copy_with(port=(url.port or 8003) - 1), timeout=5) as taxcredit:
        for investor in investors:
            headers = walk.bearer(Role.FIRM, "cfo", firm_id=investor)
            claims: list[dict[str, object]] = []
            for _ in range(50):
                try:
                    response = taxcredit.get("/v1/applications", headers=headers)
                except httpx.TransportError:
                    print("taxcredit is not running: no co-investment claims to show")
                    return
                claims = response.json()["items"]
                if claims and all(c["status"] != "submitted" for c in claims):
                    break
                time.sleep(0.1)
            for claim in claims:
                credit = claim.get("credit") or {}
                print(
                    f"co-investor {investor}: claim {claim['id']} {claim['status']}, "
                    f"credit {credit.get('amount', 0):,} won"
                )


if __name__ == "__main__":
    raise SystemExit(main())
