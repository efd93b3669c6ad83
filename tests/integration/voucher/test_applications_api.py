"""Filing, reading and withdrawing voucher applications over HTTP (PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import httpx
import rfc8785

from shared.contracts import Role, verify_chain
from tests.integration.voucher.conftest import (
    FIRM_ID,
    OTHER_FIRM_ID,
    VoucherHarness,
    application_body,
    wait_for_status,
)


async def submit(voucher: VoucherHarness, key: str = "key-1", **overrides: object) -> dict:
    response = await voucher.client.post(
        "/v1/applications",
        json=application_body(**overrides),
        headers={**voucher.firm(), "Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_firm_files_an_application_and_sees_it_submitted(voucher: VoucherHarness) -> None:
    created = await submit(voucher)
    assert created["status"] == "submitted"
    assert created["firm_id"] == FIRM_ID
    assert created["requested_amount"] == 8_000_000
    assert created["approved_amount"] is None
    assert created["approvals"] == [] and created["rejection_reasons"] == []
    assert created["voucher"] is None
    assert created["version"] == 1
    fetched = await voucher.client.get(f"/v1/applications/{created['id']}", headers=voucher.firm())
    # Verification may already have moved it on; what the firm filed stays the same.
    moving = {"status", "version", "updated_at", "rejection_reasons"}
    assert {k: v for k, v in fetched.json().items() if k not in moving} == {
        k: v for k, v in created.items() if k not in moving
    }
    assert fetched.json()["status"] in {"submitted", "verified"}


async def test_same_idempotency_key_and_body_returns_the_original(voucher: VoucherHarness) -> None:
    first = await submit(voucher, key="same")
    again = await submit(voucher, key="same")
    assert again == first
    listed = await voucher.client.get("/v1/applications", headers=voucher.firm())
    assert [a["id"] for a in listed.json()["items"]] == [first["id"]]


async def test_same_idempotency_key_with_another_body_is_409(voucher: VoucherHarness) -> None:
    await submit(voucher, key="same")
    response = await voucher.client.post(
        "/v1/applications",
        json=application_body(requested_amount=9_000_000),
        headers={**voucher.firm(), "Idempotency-Key": "same"},
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    listed = await voucher.client.get("/v1/applications", headers=voucher.firm())
    assert len(listed.json()["items"]) == 1


async def test_missing_idempotency_key_is_refused(voucher: VoucherHarness) -> None:
    response = await voucher.client.post(
        "/v1/applications", json=application_body(), headers=voucher.firm()
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["detail"]


async def test_bad_input_names_the_field_and_writes_nothing(voucher: VoucherHarness) -> None:
    cases = {
        "requested_amount": application_body(requested_amount=-5),
        "firm.founded_on": application_body(founded_on="last spring"),
        "firm.size": application_body(size="huge"),
        "purpose": {k: v for k, v in application_body().items() if k != "purpose"},
    }
    for n, (field, body) in enumerate(cases.items()):
        response = await voucher.client.post(
            "/v1/applications", json=body, headers={**voucher.firm(), "Idempotency-Key": f"k{n}"}
        )
        assert response.status_code == 422, field
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]]
    unknown = await voucher.client.post(
        "/v1/applications",
        json=application_body(programme_id="no-such-programme"),
        headers={**voucher.firm(), "Idempotency-Key": "unknown-programme"},
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "programme_id"
    everything = await voucher.service.store.read_all()
    assert [e.envelope["type"] for e in everything] == ["voucher.budget.opened"] * 2 + [
        "voucher.provider.registered"
    ] * 3


async def test_another_firms_application_is_404(voucher: VoucherHarness) -> None:
    created = await submit(voucher)
    other = voucher.firm(firm_id=OTHER_FIRM_ID, sub="rival")
    for path in ("", "/events"):
        response = await voucher.client.get(
            f"/v1/applications/{created['id']}{path}", headers=other
        )
        assert response.status_code == 404
    listed = await voucher.client.get("/v1/applications", headers=other)
    assert listed.json()["items"] == []
    officer = await voucher.client.get("/v1/applications", headers=voucher.officer())
    assert [a["id"] for a in officer.json()["items"]] == [created["id"]]


async def test_events_endpoint_serves_a_chain_anyone_can_verify(voucher: VoucherHarness) -> None:
    created = await submit(voucher)
    # Verification runs in the background; wait for it so the chain has a fixed length.
    await wait_for_status(voucher, created["id"], "verified")
    response = await voucher.client.get(
        f"/v1/applications/{created['id']}/events", headers=voucher.auth_auditor()
    )
    chain = response.json()
    assert [e["type"] for e in chain] == [
        "voucher.application.submitted",
        "voucher.application.verified",
    ]
    assert chain[1]["prev_hash"] == chain[0]["hash"]
    assert chain[0]["actor"] == {"sub": "ceo", "role": "firm"}
    assert chain[0]["prev_hash"] == "0" * 64
    body = {k: v for k, v in chain[0].items() if k != "hash"}
    assert hashlib.sha256(rfc8785.dumps(body)).hexdigest() == chain[0]["hash"]
    assert verify_chain(chain).ok


async def test_firm_withdraws_before_approval(voucher: VoucherHarness) -> None:
    created = await submit(voucher)
    response = await voucher.client.post(
        f"/v1/applications/{created['id']}/withdrawal",
        json={"reason": "found another provider"},
        headers=voucher.firm(),
    )
    assert response.status_code == 200
    assert response.json()["status"] == "withdrawn"
    again = await voucher.client.post(
        f"/v1/applications/{created['id']}/withdrawal", json={}, headers=voucher.firm()
    )
    assert again.status_code == 409


async def test_list_pages_with_a_cursor_and_filters_by_status(voucher: VoucherHarness) -> None:
    ids = []
    firms = [f"{n + 100}-45-67890" for n in range(5)]  # one firm each: none is a duplicate
    for n, firm_id in enumerate(firms):
        response = await voucher.client.post(
            "/v1/applications",
            json=application_body(firm_id=firm_id),
            headers={**voucher.firm(firm_id=firm_id), "Idempotency-Key": f"k{n}"},
        )
        ids.append(response.json()["id"])
        voucher.clock.advance(timedelta(seconds=1))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await voucher.client.get("/v1/applications", params=params, headers=voucher.officer())
        ).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    withdrawal = await voucher.client.post(
        f"/v1/applications/{ids[0]}/withdrawal", json={}, headers=voucher.firm(firm_id=firms[0])
    )
    assert withdrawal.status_code == 200, withdrawal.text
    withdrawn = await voucher.client.get(
        "/v1/applications", params={"status": "withdrawn"}, headers=voucher.officer()
    )
    assert [a["id"] for a in withdrawn.json()["items"]] == [ids[0]]


async def test_programmes_list_their_rules_and_budget(voucher: VoucherHarness) -> None:
    response = await voucher.client.get("/v1/programmes", headers=voucher.firm())
    programme = next(p for p in response.json() if p["id"] == "cluster-startup-support-2026")
    assert programme["budget_available"] == programme["budget_total"] == 5_000_000_000
    assert "advanced_bio" in programme["industries"]
    assert programme["four_eyes_threshold"] == 10_000_000


async def test_officer_registers_a_provider_others_cannot(voucher: VoucherHarness) -> None:
    body = {
        "id": "prov-daejeon-ip",
        "name": "Daejeon IP",
        "service_categories": ["intellectual_property"],
    }
    refused = await voucher.client.post("/v1/providers", json=body, headers=voucher.firm())
    assert refused.status_code == 403
    created = await voucher.client.post("/v1/providers", json=body, headers=voucher.officer())
    assert created.status_code == 201
    duplicate = await voucher.client.post("/v1/providers", json=body, headers=voucher.officer())
    assert duplicate.status_code == 409
    listed = await voucher.client.get("/v1/providers", headers=voucher.provider())
    assert "prov-daejeon-ip" in [p["id"] for p in listed.json()]


async def test_submissions_arriving_together_each_get_their_own_answer(
    voucher: VoucherHarness,
) -> None:
    """Concurrent requests share transactions; none may change another's answer."""
    taken = await submit(voucher, key="taken")

    async def post(key: str, **overrides: object) -> httpx.Response:
        return await voucher.client.post(
            "/v1/applications",
            json=application_body(**overrides),
            headers={**voucher.firm(), "Idempotency-Key": key},
        )

    answers = await asyncio.gather(
        *(post(f"new-{n}", requested_amount=1_000_000 + n) for n in range(6)),
        post("taken", requested_amount=9_000_000),  # the key was used for another body
        post("twin"),
        post("twin"),  # the same request twice at once: one application
        post("bad", programme_id="no-such-programme"),
    )
    fresh, reused, twin_a, twin_b, bad = answers[:6], answers[6], answers[7], answers[8], answers[9]
    assert [r.status_code for r in fresh] == [201] * 6
    assert sorted(r.json()["requested_amount"] for r in fresh) == [1_000_000 + n for n in range(6)]
    assert reused.status_code == 409 and reused.json()["type"].endswith("idempotency-key-reused")
    assert twin_a.status_code == twin_b.status_code == 201
    assert twin_a.json()["id"] == twin_b.json()["id"]
    assert bad.status_code == 422
    listed = await voucher.client.get(
        "/v1/applications", params={"limit": 200}, headers=voucher.firm()
    )
    ids = {a["id"] for a in listed.json()["items"]}
    assert ids == {taken["id"], twin_a.json()["id"], *(r.json()["id"] for r in fresh)}


async def test_a_token_meant_for_another_service_is_refused(voucher: VoucherHarness) -> None:
    for audience, status in (("fund", 401), (["fund", "voucher"], 200), ("voucher", 200)):
        token = voucher.tokens.issue(sub="officer-kim", role=Role.OFFICER, audience=audience)
        response = await voucher.client.get(
            "/v1/applications", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == status, (audience, response.text)
        if status == 401:
            assert "audience" in response.json()["detail"].lower()


async def test_a_firm_sees_officers_as_a_role_and_an_auditor_by_name(
    voucher: VoucherHarness,
) -> None:
    created = await submit(voucher)
    await wait_for_status(voucher, created["id"], "verified")
    decided = await voucher.client.post(
        f"/v1/applications/{created['id']}/decisions",
        json={"decision": "approve", "reason": "eligible"},
        headers={**voucher.officer("officer-kim"), "Idempotency-Key": "approve"},
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["approvals"][0]["officer"] == "officer-kim"  # to the officer

    path = f"/v1/applications/{created['id']}"
    as_firm = (await voucher.client.get(path, headers=voucher.firm())).json()
    assert [a["officer"] for a in as_firm["approvals"]] == ["officer"]
    listed = (await voucher.client.get("/v1/applications", headers=voucher.firm())).json()
    assert [a["officer"] for a in listed["items"][0]["approvals"]] == ["officer"]
    as_auditor = (await voucher.client.get(path, headers=voucher.auth_auditor())).json()
    assert [a["officer"] for a in as_auditor["approvals"]] == ["officer-kim"]

    firm_chain = (await voucher.client.get(f"{path}/events", headers=voucher.firm())).json()
    seen = [e for e in firm_chain if e["actor"]["role"] == "officer"]
    assert seen and all(e["actor"]["sub"] == "officer" for e in seen)
    assert all(e["redacted"] for e in seen)
    assert "officer-kim" not in str(firm_chain)
    full = (await voucher.client.get(f"{path}/events", headers=voucher.auth_auditor())).json()
    assert "officer-kim" in str(full) and verify_chain(full).ok
    # the issue stage may append meanwhile: the firm's chain is the auditor's up to where
    # it was read, hashes kept through the redaction
    assert len(full) >= len(firm_chain)
    assert [e["hash"] for e in full[: len(firm_chain)]] == [e["hash"] for e in firm_chain]
