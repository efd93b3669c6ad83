"""Input PostgreSQL would refuse is refused at the edge, alike on both backends, and loses nothing.

Each case answered 500 on PostgreSQL before (a NUL character, an over-long stored header)
or on both (a malformed cursor); now each is a 422 naming the field, and the log is as
it was.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.integration.voucher.conftest import (
    FIRM_ID,
    OTHER_FIRM_ID,
    VoucherHarness,
    application_body,
    wait_for_status,
)


def fields_of(response: Any) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [e["field"] for e in response.json()["errors"]]


async def event_count(voucher: VoucherHarness) -> int:
    return len(await voucher.service.store.read_all(limit=10_000))


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!not-base64!!!",
        b64(5),  # decodes to a number: the old decoder raised TypeError
        b64(["2026-11-25T01:00:00+00:00"]),
        b64(["2026-11-25T01:00:00+00:00", 7]),
        b64(["not a time", "app_1"]),
        b64(["2026-11-25T01:00:00", "app_1"]),  # naive: the database layer refuses it
        b64(b"\xff\xfe"),
        b64("x" * 10),
        "A" * 600,
        b64(["0001-01-01T00:00:00+14:00", "app_1"]),  # before year 1 in UTC
        b64(["9999-12-31T23:59:59-14:00", "app_1"]),  # after 9999 in UTC
    ],
)
async def test_a_malformed_cursor_is_a_422_naming_it(voucher: VoucherHarness, cursor: str) -> None:
    response = await voucher.client.get(
        "/v1/applications", params={"cursor": cursor}, headers=voucher.officer()
    )
    assert response.status_code == 422, response.text
    assert fields_of(response) == ["cursor"]


async def test_a_correlation_id_over_64_characters_is_refused_and_nothing_written(
    voucher: VoucherHarness,
) -> None:
    before = await event_count(voucher)
    response = await voucher.client.post(
        "/v1/applications",
        json=application_body(),
        headers={**voucher.firm(), "Idempotency-Key": "k1", "X-Correlation-Id": "c" * 65},
    )
    assert response.status_code == 422
    assert fields_of(response) == ["header.X-Correlation-Id"]
    assert await event_count(voucher) == before
    fine = await voucher.client.post(
        "/v1/applications",
        json=application_body(),
        headers={**voucher.firm(), "Idempotency-Key": "k1", "X-Correlation-Id": "c" * 64},
    )
    assert fine.status_code == 201
    events = await voucher.service.store.read_stream(fine.json()["id"])
    assert events[0].correlation_id == "c" * 64


async def test_an_idempotency_key_over_200_characters_is_refused_everywhere(
    voucher: VoucherHarness,
) -> None:
    created = await voucher.client.post(
        "/v1/applications",
        json=application_body(),
        headers={**voucher.firm(), "Idempotency-Key": "ok"},
    )
    application_id = created.json()["id"]
    await wait_for_status(voucher, application_id, "verified")
    before = await event_count(voucher)
    long_key = {"Idempotency-Key": "k" * 201}
    attempts = [
        (
            f"/v1/applications/{application_id}/decisions",
            {"decision": "approve", "reason": "fine"},
            voucher.officer(),
        ),
        (f"/v1/applications/{application_id}/withdrawal", {"reason": "no"}, voucher.firm()),
        (
            "/v1/providers",
            {"id": "prov-new", "name": "New Law", "service_categories": ["legal"]},
            voucher.officer(),
        ),
        ("/v1/applications", application_body(), voucher.firm()),
    ]
    for path, body, auth in attempts:
        response = await voucher.client.post(path, json=body, headers={**auth, **long_key})
        assert response.status_code == 422, (path, response.text)
        assert fields_of(response) == ["header.Idempotency-Key"], path
    assert await event_count(voucher) == before


@pytest.mark.parametrize(
    "field, body",
    [
        ("firm.name", application_body(name="Hanbit\x00Bio")),
        ("purpose", application_body(purpose="patents\x00")),
        ("firm.cluster", application_body(cluster="osong\x00bio")),
        ("service_category", application_body(service_category="le\x00gal")),
        ("cost_reference", application_body(cost_reference="FAC\x00-1")),
    ],
)
async def test_a_nul_character_in_a_body_is_a_422_naming_the_field(
    voucher: VoucherHarness, field: str, body: dict[str, Any]
) -> None:
    before = await event_count(voucher)
    response = await voucher.client.post(
        "/v1/applications", json=body, headers={**voucher.firm(), "Idempotency-Key": "nul"}
    )
    assert response.status_code == 422, response.text
    assert fields_of(response) == [field]
    assert await event_count(voucher) == before


@pytest.mark.parametrize(
    "cost_reference",
    ["x" * 201, "", "   ", 42],
    ids=["201-characters", "empty", "blank", "not-a-string"],
)
async def test_a_cost_reference_outside_1_to_200_characters_is_a_422_naming_it(
    voucher: VoucherHarness, cost_reference: Any
) -> None:
    before = await event_count(voucher)
    response = await voucher.client.post(
        "/v1/applications",
        json=application_body(cost_reference=cost_reference),
        headers={**voucher.firm(), "Idempotency-Key": "cost"},
    )
    assert response.status_code == 422, response.text
    assert fields_of(response) == ["cost_reference"]
    assert await event_count(voucher) == before


async def test_a_cost_reference_of_200_characters_is_kept_whole(voucher: VoucherHarness) -> None:
    created = await voucher.client.post(
        "/v1/applications",
        json=application_body(cost_reference="é" * 200),
        headers={**voucher.firm(), "Idempotency-Key": "cost-200"},
    )
    assert created.status_code == 201, created.text
    document = await wait_for_status(voucher, created.json()["id"], "verified")
    assert document["cost_reference"] == "é" * 200


async def test_nul_characters_elsewhere_are_refused_too(voucher: VoucherHarness) -> None:
    created = await voucher.client.post(
        "/v1/applications",
        json=application_body(),
        headers={**voucher.firm(), "Idempotency-Key": "ok"},
    )
    application_id = created.json()["id"]
    await wait_for_status(voucher, application_id, "verified")
    before = await event_count(voucher)
    cases = [
        (
            f"/v1/applications/{application_id}/decisions",
            {"decision": "reject", "reason": "no\x00"},
            voucher.officer(),
            "reason",
        ),
        (
            f"/v1/applications/{application_id}/withdrawal",
            {"reason": "\x00"},
            voucher.firm(),
            "reason",
        ),
        (
            "/v1/providers",
            {"id": "prov-nul", "name": "N\x00L", "service_categories": ["legal"]},
            voucher.officer(),
            "name",
        ),
    ]
    for path, body, auth, field in cases:
        response = await voucher.client.post(
            path, json=body, headers={**auth, "Idempotency-Key": "nul"}
        )
        assert response.status_code == 422, (path, response.text)
        assert fields_of(response) == [field], path
    for path, field in (
        ("/v1/applications?status=%00", "query"),
        ("/v1/applications/app%00x", "path"),
        ("/v1/applications/app%00x/events", "path"),
    ):
        response = await voucher.client.get(path, headers=voucher.officer())
        assert response.status_code == 422, (path, response.text)
        assert fields_of(response) == [field]
    assert await event_count(voucher) == before


async def test_a_firm_naming_another_firms_number_is_refused_at_once(
    voucher: VoucherHarness,
) -> None:
    before = await event_count(voucher)
    response = await voucher.client.post(
        "/v1/applications",
        json=application_body(firm_id=OTHER_FIRM_ID),
        headers={**voucher.firm(firm_id=FIRM_ID), "Idempotency-Key": "someone-else"},
    )
    assert response.status_code == 403
    assert fields_of(response) == ["firm.firm_id"]
    assert await event_count(voucher) == before
    for firm_id in (FIRM_ID, OTHER_FIRM_ID):
        listed = await voucher.client.get(
            "/v1/applications", headers=voucher.firm(firm_id=firm_id, sub=f"ceo-{firm_id}")
        )
        assert listed.json()["items"] == []


async def test_an_id_that_names_no_application_is_404_not_a_crash(voucher: VoucherHarness) -> None:
    # the log also holds providers' registrations; their ids are not applications
    response = await voucher.client.post(
        "/v1/applications/provider:prov-hanbit-law/decisions",
        json={"decision": "approve", "reason": "x"},
        headers=voucher.officer(),
    )
    assert response.status_code == 404, response.text


async def test_a_provider_id_too_long_for_its_log_is_refused(voucher: VoucherHarness) -> None:
    response = await voucher.client.post(
        "/v1/providers",
        json={"id": "p" + "a" * 55, "name": "Long Law", "service_categories": ["legal"]},
        headers=voucher.officer(),
    )
    assert response.status_code == 422, response.text
    assert fields_of(response) == ["id"]
