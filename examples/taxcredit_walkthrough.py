"""One strategic-investment tax credit from claim to certificate, against a running stack.

    make run                                           # in one terminal
    .venv/bin/python examples/taxcredit_walkthrough.py   # in another

Tokens come from the same development secret `make run` uses (var/jwt-secret); the
certificate's PDF is saved beside it, as var/<number>.pdf.
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

TECHNOLOGY = "biopharma-animal-cell-culture"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8002", help="the taxcredit service")
    parser.add_argument("--firm-id", default=None, help="business number (random if omitted)")
    args = parser.parse_args()

    settings = ServiceSettings()
    tokens = HS256Verifier(settings.resolved_jwt_secret())

    def bearer(role: Role, sub: str, firm_id: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens.issue(sub=sub, role=role, firm_id=firm_id)}"}

    n = uuid.uuid4().int
    firm_id = args.firm_id or f"{n % 900 + 100}-{n // 10**3 % 90 + 10}-{n // 10**5 % 90000 + 10000}"
    firm = bearer(Role.FIRM, "cfo@osong-cell", firm_id=firm_id)
    officers = [bearer(Role.OFFICER, "officer-kim"), bearer(Role.OFFICER, "officer-park")]
    auditor = bearer(Role.AUDITOR, "auditor-lee")

    with httpx.Client(base_url=args.url, timeout=10) as http:

        def show(step: str, response: httpx.Response) -> dict[str, Any]:
            body: dict[str, Any] = response.json()
            print(f"{step:<52} {response.status_code}  {body.get('status', '')}")
            if response.is_error:
                print(body, file=sys.stderr)
                raise SystemExit(1)
            return body

        def wait_for(application_id: str, status: str) -> dict[str, Any]:
            body: dict[str, Any] = {}
            for _ in range(100):
                body = http.get(f"/v1/applications/{application_id}", headers=firm).json()
                if body["status"] == status:
                    print(f"{'  ... ' + status:<52}      {body['status']}")
                    return body
                if body["status"] == "rejected":
                    raise SystemExit(f"rejected: {body['rejection_reasons']}")
                time.sleep(0.1)
            raise SystemExit(f"application did not become {status}: {body}")

        technologies = http.get("/v1/technologies", headers=firm).json()
        listed = {t["id"]: t for t in technologies["items"]}
        if TECHNOLOGY not in listed:
            raise SystemExit(f"{TECHNOLOGY} is not in catalogue {technologies['version']}")
        print(
            f"technology {TECHNOLOGY}: {listed[TECHNOLOGY]['name']} ({listed[TECHNOLOGY]['group']})"
        )

        # an SME: 0.25 × 1,800,000,000 + 0.10 × (1,800,000,000 − 1,000,000,000) = 530,000,000
        application = show(
            "firm claims a strategic investment credit",
            http.post(
                "/v1/applications",
                headers={**firm, "Idempotency-Key": str(uuid.uuid4())},
                json={
                    "programme": "strategic_investment",
                    "tax_year": 2026,
                    "firm": {
                        "firm_id": firm_id,
                        "name": "Osong Cell Therapeutics",
                        "founded_on": "2015-03-02",
                        "size": "sme",
                        "cluster": "osong-bio",
                        "industry": "advanced_bio",
                    },
                    "technology": TECHNOLOGY,
                    "investment": {
                        "current_year": 1_800_000_000,
                        "previous_years": [1_200_000_000, 1_000_000_000, 800_000_000],
                    },
                    "facility_reference": f"FAC-OSONG-{uuid.uuid4().hex[:8].upper()}",
                },
            ),
        )
        app_id = application["id"]
        credit = wait_for(app_id, "verified")["credit"]
        print(f"credit {credit['amount']:,} won, rate table {credit['table_version']}:")
        for step in credit["trace"]:
            print(f"  {step['step']:<24} {step['value']:>16}  {step['formula']}")

        tables = http.get("/v1/rate-tables", headers=firm).json()["items"]
        [table] = [t for t in tables if t["version"] == credit["table_version"]]
        threshold = table["four_eyes_threshold"]
        needed = 2 if credit["amount"] >= threshold else 1
        print(f"four-eyes threshold {threshold:,} won: {needed} officer(s) approve")
        for number, officer in enumerate(officers[:needed], 1):
            show(
                f"officer {number} approves",
                http.post(
                    f"/v1/applications/{app_id}/decisions",
                    headers=officer,
                    json={"decision": "approve", "reason": "facility and figures checked"},
                ),
            )
        certificate = wait_for(app_id, "certified")["certificate"]
        print(
            f"certificate {certificate['number']}: {certificate['amount']:,} won, "
            f"{certificate['status']}, issued on {certificate['issued_on']}"
        )
        public = show(
            "anyone reads the certificate",
            http.get(f"/v1/certificates/{certificate['number']}", headers=auditor),
        )
        pdf = http.get(f"/v1/certificates/{certificate['number']}.pdf", headers=firm)
        pdf.raise_for_status()
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        path = settings.state_dir / f"{certificate['number']}.pdf"
        path.write_bytes(pdf.content)
        print(f"PDF ({len(pdf.content):,} bytes) saved to {path}")

        chain = http.get(f"/v1/applications/{app_id}/events", headers=firm).json()
        report = verify_chain(chain)
        print(f"{len(chain)} events, hash chain {'verifies' if report.ok else 'is BROKEN'}:")
        for event in chain:
            print(f"  {event['aggregate_seq']:>2} {event['type']:<40} {event['actor']['sub']}")
        [issued] = [e for e in chain if e["type"] == "taxcredit.certificate.issued"]
        proven = public["event_hash"] == issued["hash"]
        print(f"certificate event hash {'matches' if proven else 'DOES NOT MATCH'} the chain")
        return 0 if report.ok and proven else 1


if __name__ == "__main__":
    raise SystemExit(main())
