"""What the walkthroughs share: their options, dev tokens, printed steps and waiting on a status.

The scripts are run as files (``.venv/bin/python examples/<name>.py``), so this folder is
first on ``sys.path`` and they import this module as ``walkthrough``.
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


def random_business_number() -> str:
    """A business number (NNN-NN-NNNNN) unlikely to be taken by an earlier run."""
    n = uuid.uuid4().int
    return f"{n % 900 + 100}-{n // 10**3 % 90 + 10}-{n // 10**5 % 90000 + 10000}"


class Walkthrough:
    """A walkthrough against one service: ``--url`` and ``--firm-id``, tokens signed with the
    development secret, and an HTTP client (``with walk.http:`` closes it).

    ``width`` is the column the status code of each printed step starts after.
    """

    def __init__(self, description: str, service: str, port: int, width: int) -> None:
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument(
            "--url", default=f"http://127.0.0.1:{port}", help=f"the {service} service"
        )
        parser.add_argument("--firm-id", default=None, help="business number (random if omitted)")
        args = parser.parse_args()
        self.width = width
        self.settings = ServiceSettings()
        self.tokens = HS256Verifier(self.settings.resolved_jwt_secret())
        self.firm_id: str = args.firm_id or random_business_number()
        self.officers = [
            self.bearer(Role.OFFICER, "officer-kim"),
            self.bearer(Role.OFFICER, "officer-park"),
        ]
        """Two officers, for decisions that need four eyes."""
        self.http = httpx.Client(base_url=args.url, timeout=10)

    def bearer(
        self, role: Role, sub: str, firm_id: str | None = None, provider_id: str | None = None
    ) -> dict[str, str]:
        token = self.tokens.issue(sub=sub, role=role, firm_id=firm_id, provider_id=provider_id)
        return {"Authorization": f"Bearer {token}"}

    def firm(self, sub: str) -> dict[str, str]:
        """Headers of ``sub`` speaking for the walkthrough's firm (``--firm-id``)."""
        return self.bearer(Role.FIRM, sub, firm_id=self.firm_id)

    def show(self, step: str, response: httpx.Response) -> dict[str, Any]:
        """Print the step with its status code and status; exit at an error response."""
        body: dict[str, Any] = response.json()
        print(f"{step:<{self.width}} {response.status_code}  {body.get('status', '')}")
        if response.is_error:
            print(body, file=sys.stderr)
            raise SystemExit(1)
        return body

    def wait_for(self, application_id: str, status: str, headers: dict[str, str]) -> dict[str, Any]:
        """The application once it has ``status``; exits if it is rejected or takes over 10 s."""
        body: dict[str, Any] = {}
        for _ in range(100):
            body = self.http.get(f"/v1/applications/{application_id}", headers=headers).json()
            if body["status"] == status:
                print(f"{'  ... ' + status:<{self.width}}      {body['status']}")
                return body
            if body["status"] == "rejected":
                raise SystemExit(f"rejected: {body['rejection_reasons']}")
            time.sleep(0.1)
        raise SystemExit(f"application did not become {status}: {body}")

    def submit(self, step: str, firm: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        """The firm submits an application (once: with an idempotency key), printed as ``step``."""
        return self.show(
            step,
            self.http.post(
                "/v1/applications",
                headers={**firm, "Idempotency-Key": str(uuid.uuid4())},
                json=body,
            ),
        )

    def approve(
        self, application_id: str, step: str, officer: dict[str, str], reason: str
    ) -> dict[str, Any]:
        """An officer approves the application, printed as ``step``."""
        return self.show(
            step,
            self.http.post(
                f"/v1/applications/{application_id}/decisions",
                headers=officer,
                json={"decision": "approve", "reason": reason},
            ),
        )

    def show_chain(
        self, application_id: str, headers: dict[str, str]
    ) -> tuple[list[dict[str, Any]], bool]:
        """The application's events, printed, and whether their hash chain verifies."""
        chain: list[dict[str, Any]] = self.http.get(
            f"/v1/applications/{application_id}/events", headers=headers
        ).json()
        report = verify_chain(chain)
        print(f"{len(chain)} events, hash chain {'verifies' if report.ok else 'is BROKEN'}:")
        for event in chain:
            print(f"  {event['aggregate_seq']:>2} {event['type']:<40} {event['actor']['sub']}")
        return chain, report.ok
