"""One strategic-investment tax credit from claim to certificate, against a running stack.

    make run                                           # in one terminal
    .venv/bin/python examples/taxcredit_walkthrough.py   # in another

Tokens come from the same development secret `make run` uses (var/jwt-secret); the
certificate's PDF is saved beside it, as var/<number>.pdf.
"""

from __future__ import annotations

import uuid

from walkthrough import Walkthrough  # beside this script, first on sys.path

from shared.contracts import Role

TECHNOLOGY = "biopharma-animal-cell-culture"


def main() -> int:
    walk = Walkthrough(__doc__.splitlines()[0], "taxcredit", 8002, width=52)
    firm = walk.firm("cfo@osong-cell")
    auditor = walk.bearer(Role.AUDITOR, "auditor-lee")
    with walk.http:
        technologies = walk.http.get("/v1/technologies", headers=firm)
        listed = {t["id"]: t for t in technologies.json()}
        if TECHNOLOGY not in listed:
            raise SystemExit(
                f"{TECHNOLOGY} is not in catalogue {technologies.headers['Catalogue-Version']}"
            )
        print(
            f"technology {TECHNOLOGY}: {listed[TECHNOLOGY]['name']} ({listed[TECHNOLOGY]['group']})"
        )

        # an SME: 0.25 × 1,800,000,000 + 0.10 × (1,800,000,000 − 1,000,000,000) = 530,000,000
        application = walk.submit(
            "firm claims a strategic investment credit",
            firm,
            {
                "programme": "strategic_investment",
                "tax_year": 2026,
                "firm": {
                    "firm_id": walk.firm_id,
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
        )
        app_id = application["id"]
        credit = walk.wait_for(app_id, "verified", firm)["credit"]
        print(f"credit {credit['amount']:,} won, rate table {credit['table_version']}:")
        for step in credit["trace"]:
            print(f"  {step['step']:<24} {step['value']:>16}  {step['formula']}")

        tables = walk.http.get("/v1/rate-tables", headers=firm).json()
        [table] = [t for t in tables if t["version"] == credit["table_version"]]
        threshold = table["four_eyes_threshold"]
        needed = 2 if credit["amount"] >= threshold else 1
        print(f"four-eyes threshold {threshold:,} won: {needed} officer(s) approve")
        for number, officer in enumerate(walk.officers[:needed], 1):
            walk.approve(
                app_id, f"officer {number} approves", officer, "facility and figures checked"
            )
        certificate = walk.wait_for(app_id, "certified", firm)["certificate"]
        print(
            f"certificate {certificate['number']}: {certificate['amount']:,} won, "
            f"{certificate['status']}, issued on {certificate['issued_on']}"
        )
        public = walk.show(
            "anyone reads the certificate",
            walk.http.get(f"/v1/certificates/{certificate['number']}", headers=auditor),
        )
        pdf = walk.http.get(f"/v1/certificates/{certificate['number']}.pdf", headers=firm)
        pdf.raise_for_status()
        walk.settings.state_dir.mkdir(parents=True, exist_ok=True)
        path = walk.settings.state_dir / f"{certificate['number']}.pdf"
        path.write_bytes(pdf.content)
        print(f"PDF ({len(pdf.content):,} bytes) saved to {path}")

        chain, verified = walk.show_chain(app_id, firm)
        [issued] = [e for e in chain if e["type"] == "taxcredit.certificate.issued"]
        proven = public["event_hash"] == issued["hash"]
        print(f"certificate event hash {'matches' if proven else 'DOES NOT MATCH'} the chain")
        return 0 if verified and proven else 1


if __name__ == "__main__":
    raise SystemExit(main())
