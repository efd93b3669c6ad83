"""Schemathesis against every service's OpenAPI document (issue 9): the four services run
in-process behind uvicorn, each on a PostgreSQL database of its own, together on the real
broker (oversight reads what the others publish), and every operation is called with a
token of each role. No answer may be a 5xx, and every answer must be what the document
says: status, content type, headers and body.

Bounded for ``make test``; ``INCENTIVES_FUZZ_EXAMPLES=500 INCENTIVES_FUZZ_SEED=$RANDOM``
fuzzes longer, and elsewhere each run (the default is the same cases every run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

from shared.auth import HS256Verifier
from shared.clock import FixedClock
from shared.contracts import Role
from shared.problems import TYPE_BASE
from shared.settings import ServiceSettings
from tests.conftest import free_port
from tests.integration.harness import FIRM_ID, SECRET, START, service_settings

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.kafka,
    # schemathesis' own strategies draw from `random`; Hypothesis tells it so on every run
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

EXAMPLES = int(os.environ.get("INCENTIVES_FUZZ_EXAMPLES", "10"))
"""Cases the fuzzing phase draws per operation and role (the examples and coverage
phases add their own, a fixed set)."""
SEED = os.environ.get("INCENTIVES_FUZZ_SEED")

PROVIDER_ID = "prov-hanbit-law"  # a provider of the default voucher catalogue
ROLES: dict[str, dict[str, Any]] = {
    "firm": {"sub": "ceo", "role": Role.FIRM, "firm_id": FIRM_ID},
    "provider": {"sub": f"clerk@{PROVIDER_ID}", "role": Role.PROVIDER, "provider_id": PROVIDER_ID},
    "officer": {"sub": "officer-kim", "role": Role.OFFICER},
    "ministry": {"sub": "mof-analyst", "role": Role.MINISTRY},
    "auditor": {"sub": "auditor-lee", "role": Role.AUDITOR},
}

load_all_checks()
EXCLUDED = {
    # No API here has a DELETE (an event log forgets nothing): there is nothing to use
    # after it is freed, and the check looks only after a successful DELETE.
    "use_after_free",
    # Looks for a 404 on a resource a POST of the same run created, following the
    # stateful phase's links from one call to the next; each call here stands alone.
    "ensure_resource_availability",
    # Replays one identity's read as its peers, identities schemathesis must issue itself
    # (its escalating auth); the token here comes in a header, one role per test, so it
    # would pass without looking. A firm never sees another's application: the services'
    # own tests and test_role_matrix.py.
    "object_level_authorization",
}
VALIDATION = TYPE_BASE + "validation"
NUL_REFUSED = "must not contain the NUL character"


def refused_by_a_rule(response: Any, case: Any) -> bool:
    """A 422 for a request the schema admits, by a rule no JSON Schema can state.

    - a domain rule (a problem type of its own, not ``validation``): a programme, fund or
      voucher the service does not know, a balance, a state, the tree sizes of a proof
      (``index`` below ``tree_size``, both within the latest checkpoint);
    - a rule across fields, a validator's own (pydantic says ``Value error, ...``): the
      tranches sum to the amount, no credit rate above the investment;
    - what PostgreSQL cannot store: a NUL character in a string (no pattern in the
      document says "no NUL" of every string, as the edge does);
    - a ``cursor`` this API did not give out (opaque: any string is schema-valid).

    Every other refusal of schema-valid data (a type, a length, an enum, a required field or
    header the document does not say) is a document that lies, and fails the check.
    """
    if response.status_code != 422:
        return False
    problem = response.json()
    if problem.get("type") != VALIDATION:
        return True
    errors = problem.get("errors") or []
    return bool(errors) and all(
        error["message"].startswith("Value error, ")
        or NUL_REFUSED in error["message"]
        or (error["field"] == "cursor" and "cursor" in (case.query or {}))
        for error in errors
    )


_positive_data_acceptance = CHECKS.get_one("positive_data_acceptance")


def positive_data_acceptance(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis' own check, less the refusals :func:`refused_by_a_rule` argues for."""
    if refused_by_a_rule(response, case):
        return None
    result: bool | None = _positive_data_acceptance(ctx, response, case)
    return result


# Every check schemathesis has (``--checks all``) but the three above; positive_data_acceptance
# as narrowed here, its refusals of schema-valid data being those rules.
CHECKS_RUN = [
    positive_data_acceptance if name == "positive_data_acceptance" else CHECKS.get_one(name)
    for name in CHECKS.get_all_names()
    if name not in EXCLUDED
]

CONFIG: dict[str, Any] = {
    # The token is the test's, one role at a time (``authorization``): schemathesis makes
    # up no Authorization of its own, and its ignored_auth check still sends each call
    # without a token and with a wrong one, and wants 401 or 403.
    "generation": {"with-security-parameters": False},
    # The live stream never ends: read a few events, or for a second, then judge them.
    "operations": [{"include-path": "/v1/stream", "max-stream-events": 3, "request-timeout": 1}],
}
if SEED is not None:
    CONFIG["seed"] = int(SEED)


def create_app(service: str, configured: ServiceSettings) -> FastAPI:
    module = __import__(f"services.{service}.main", fromlist=["create_app"])
    app: FastAPI = module.create_app(configured, clock=FixedClock(START))
    return app


def openapi_of(service: str) -> Any:
    """The service's document, as its ``/openapi.json`` serves it (made without connecting)."""
    configured = ServiceSettings(
        service=service, jwt_secret=SECRET, database_url="sqlite+aiosqlite:///:memory:"
    )
    return schemathesis.openapi.from_dict(
        create_app(service, configured).openapi(), config=SchemathesisConfig.from_dict(CONFIG)
    )


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` behind uvicorn, as in production, on a thread and event loop of its own."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("the service did not start: its log says why", pytrace=False)
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The topic prefix and state directory (the development signing key) the four share."""
    return f"fuzz.{uuid.uuid4().hex[:8]}.", tmp_path_factory.mktemp("fuzz")


def _served(service: str) -> Any:
    """A module fixture ``<service>_url``: the service, running from its first test on."""

    @pytest.fixture(scope="module", name=f"{service}_url")
    def fixture(
        postgres_databases: Callable[[], Awaitable[str]],
        kafka_bootstrap: str,
        cluster: tuple[str, Path],
    ) -> Iterator[str]:
        database_url = asyncio.run(postgres_databases())
        prefix, state_dir = cluster
        configured = service_settings(service, database_url, kafka_bootstrap, prefix, state_dir)
        with serving(create_app(service, configured)) as url:
            yield url

    return fixture


voucher_url = _served("voucher")
taxcredit_url = _served("taxcredit")
fund_url = _served("fund")
oversight_url = _served("oversight")


@pytest.fixture(params=list(ROLES))
def authorization(request: pytest.FixtureRequest) -> dict[str, str]:
    token = HS256Verifier(SECRET).issue(**ROLES[request.param])
    return {"Authorization": f"Bearer {token}"}


FUZZ = settings(
    max_examples=EXAMPLES,
    database=None,  # no .hypothesis/ directory in the work tree
    derandomize=SEED is None,
    deadline=None,  # a call goes through uvicorn and PostgreSQL: its time is not the point
    # the fixtures are the services, started once per module: a case changes none of them
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fuzz(case: Any, url: str, authorization: dict[str, str]) -> None:
    case.call_and_validate(base_url=url, headers=authorization, checks=CHECKS_RUN)


@openapi_of("voucher").parametrize()
@FUZZ
def test_voucher(case: Any, voucher_url: str, authorization: dict[str, str]) -> None:
    fuzz(case, voucher_url, authorization)


@openapi_of("taxcredit").parametrize()
@FUZZ
def test_taxcredit(case: Any, taxcredit_url: str, authorization: dict[str, str]) -> None:
    fuzz(case, taxcredit_url, authorization)


@openapi_of("fund").parametrize()
@FUZZ
def test_fund(case: Any, fund_url: str, authorization: dict[str, str]) -> None:
    fuzz(case, fund_url, authorization)


@openapi_of("oversight").parametrize()
@FUZZ
def test_oversight(case: Any, oversight_url: str, authorization: dict[str, str]) -> None:
    fuzz(case, oversight_url, authorization)
