"""One startup voucher from application to paid invoice, against a running stack.

    make run                                   # in one terminal
    .venv/bin/python examples/voucher_walkthrough.py   # in another

Tokens come from the same development secret `make run` uses (var/jwt-secret).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import httpx

from shared.auth import HS256Verifier
from shared.contracts import Role, verify_chain
from shared.settings import ServiceSettings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8001", help="the voucher service")
    parser.add_argument("--firm-id", default=None, help="business number (random if omitted)")
    args = parser.parse_args()

    tokens = HS256Verifier(ServiceSettings().resolved_jwt_secret())

    def bearer(role: Role, sub: str, **ids: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens.issue(sub=sub, role=role, **ids)}"}

    n = uuid.uuid4().int
    firm_id = args.firm_id or f"{n % 900 + 100}-{n // 10**3 % 90 + 10}-{n // 10**5 % 90000 + 10000}"
    firm = bearer(Role.FIRM, "ceo@hanbit-bio", firm_id=firm_id)
    officers = [bearer(Role.OFFICER, "officer-kim"), bearer(Role.OFFICER, "officer-park")]
    provider = bearer(Role.PROVIDER, "clerk@hanbit-law", provider_id="prov-hanbit-law")

    with httpx.Client(base_url=args.url, timeout=10) as http:

        def show(step: str, response: httpx.Response) -> dict[str, Any]:
            body: dict[str, Any] = response.json()
            print(f"{step:<44} {response.status_code}  {body.get('status', '')}")
            if response.is_error:
                print(body, file=sys.stderr)
                raise SystemExit(1)
            return body

        def wait_for(application_id: str, status: str) -> dict[str, Any]:
            for _ in range(100):
                body: dict[str, Any] = http.get(
                    f"/v1/applications/{application_id}", headers=firm
                ).json()
                if body["status"] == status:
                    print(f"{'  ... ' + status:<44}      {body['status']}")
                    return body
                time.sleep(0.1)
            raise SystemExit(f"application did not become {status}: {body}")

        application = show(
            "firm submits an application",
            http.post(
                "/v1/applications",
                headers={**firm, "Idempotency-Key": str(uuid.uuid4())},
                json={
                    "programme_id": "cluster-startup-support-2026",
                    "firm": {
                        "firm_id": firm_id,
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
            ),
        )
        app_id = application["id"]
        wait_for(app_id, "verified")
        for n, officer in enumerate(officers, 1):
            show(
                f"officer {n} approves (four eyes above 10M won)",
                http.post(
                    f"/v1/applications/{app_id}/decisions",
                    headers=officer,
                    json={"decision": "approve", "reason": "eligible startup, clear scope"},
                ),
            )
        voucher = wait_for(app_id, "issued")["voucher"]
        print(f"voucher {voucher['id']}: {voucher['balance']:,} won until {voucher['expires_on']}")
        for invoice, amount in (("INV-2026-001", 9_000_000), ("INV-2026-002", 6_000_000)):
            show(
                f"provider redeems {invoice} ({amount:,} won)",
                http.post(
                    f"/v1/vouchers/{voucher['id']}/redemptions",
                    headers={**provider, "Idempotency-Key": invoice},
                    json={"invoice_number": invoice, "amount": amount, "service_category": "legal"},
                ),
            )
        wait_for(app_id, "closed")
        for redemption in http.get(
            f"/v1/vouchers/{voucher['id']}/redemptions", headers=provider
        ).json():
            print(
                f"  {redemption['invoice_number']}: {redemption['status']} ({redemption['payout_id']})"
            )
        chain = http.get(f"/v1/applications/{app_id}/events", headers=firm).json()
        report = verify_chain(chain)
        print(f"{len(chain)} events, hash chain {'verifies' if report.ok else 'is BROKEN'}:")
        for event in chain:
            print(f"  {event['aggregate_seq']:>2} {event['type']:<40} {event['actor']['sub']}")
        return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
