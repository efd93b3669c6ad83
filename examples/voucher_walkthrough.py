"""One startup voucher from application to paid invoice, against a running stack.

    make run                                   # in one terminal
    .venv/bin/python examples/voucher_walkthrough.py   # in another

Tokens come from the same development secret `make run` uses (var/jwt-secret).
"""

from __future__ import annotations

from walkthrough import Walkthrough  # beside this script, first on sys.path

from shared.contracts import Role


def main() -> int:
    walk = Walkthrough(__doc__.splitlines()[0], "voucher", 8001, width=44)
    firm = walk.firm("ceo@hanbit-bio")
    provider = walk.bearer(Role.PROVIDER, "clerk@hanbit-law", provider_id="prov-hanbit-law")
    with walk.http:
        application = walk.submit(
            "firm submits an application",
            firm,
            {
                "programme_id": "cluster-startup-support-2026",
                "firm": {
                    "firm_id": walk.firm_id,
                    "name": "Hanbit Bio",
                    "founded_on": "2023-03-02",
                    "size": "sme",
                    "cluster": "osong-bio",
                    "industry": "advanced_bio",
                },
                "service_category": "legal",
                "requested_amount": 15_000_000,
                "purpose": "patent filing for a cell-culture purification process",
            },
        )
        app_id = application["id"]
        walk.wait_for(app_id, "verified", firm)
        for n, officer in enumerate(walk.officers, 1):
            walk.approve(
                app_id,
                f"officer {n} approves (four eyes above 10M won)",
                officer,
                "eligible startup, clear scope",
            )
        voucher = walk.wait_for(app_id, "issued", firm)["voucher"]
        print(f"voucher {voucher['id']}: {voucher['balance']:,} won until {voucher['expires_on']}")
        for invoice, amount in (("INV-2026-001", 9_000_000), ("INV-2026-002", 6_000_000)):
            walk.show(
                f"provider redeems {invoice} ({amount:,} won)",
                walk.http.post(
                    f"/v1/vouchers/{voucher['id']}/redemptions",
                    headers={**provider, "Idempotency-Key": invoice},
                    json={"invoice_number": invoice, "amount": amount, "service_category": "legal"},
                ),
            )
        walk.wait_for(app_id, "closed", firm)
        for redemption in walk.http.get(
            f"/v1/vouchers/{voucher['id']}/redemptions", headers=provider
        ).json():
            print(
                f"  {redemption['invoice_number']}: {redemption['status']} ({redemption['payout_id']})"
            )
        _, verified = walk.show_chain(app_id, firm)
        return 0 if verified else 1


if __name__ == "__main__":
    raise SystemExit(main())
