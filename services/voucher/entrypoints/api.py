"""HTTP entry points of the voucher service: parse, authorise, hand on to the service layer."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.voucher.adapters import projection
from services.voucher.domain.decider import SubmitApplication
from services.voucher.domain.errors import NotFound
from services.voucher.domain.model import Firm
from services.voucher.entrypoints.schemas import (
    DecisionIn,
    ProviderIn,
    RedemptionIn,
    SubmitApplicationIn,
    WithdrawalIn,
)
from services.voucher.service_layer import CommandRequest, Step, VoucherService, new_id
from shared.auth import CurrentPrincipal, Principal, require_role
from shared.batching import GroupCommit
from shared.contracts import Role
from shared.eventstore import EventContext, UnitOfWork, is_unique_violation
from shared.idempotency import StoredResponse, remember, replay, request_fingerprint, require_key
from shared.problems import Problem

router = APIRouter(prefix="/v1")

Firms = Annotated[Principal, Depends(require_role(Role.FIRM))]
Officers = Annotated[Principal, Depends(require_role(Role.OFFICER))]
Providers = Annotated[Principal, Depends(require_role(Role.PROVIDER))]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
READERS = (Role.OFFICER, Role.MINISTRY, Role.AUDITOR)


async def service_of(request: Request) -> VoucherService:
    service: VoucherService = request.app.state.voucher
    return service


Service = Annotated[VoucherService, Depends(service_of)]


def context_of(request: Request, principal: Principal) -> EventContext:
    return EventContext(
        actor=principal.actor,
        correlation_id=request.headers.get("x-correlation-id") or str(uuid.uuid4()),
        firm_id=principal.firm_id,
    )


async def respond(
    request: Request,
    service: VoucherService,
    principal: Principal,
    key: str | None,
    body: Any,
    work: Callable[[UnitOfWork], Awaitable[StoredResponse]],
) -> JSONResponse:
    """Run ``work`` once per Idempotency-Key: a repeat gets the recorded response."""
    fingerprint = request_fingerprint(request.method, request.url.path, body)

    async def attempt(uow: UnitOfWork) -> StoredResponse:
        if key is not None:
            found = await replay(uow, principal.sub, key, fingerprint)
            if found is not None:
                return found
        response = await work(uow)
        if key is not None:
            await remember(uow, principal.sub, key, fingerprint, response)
        return response

    try:
        stored = await service.in_transaction(attempt)
    except Exception as error:
        if key is None or not is_unique_violation(error):
            raise
        # the same key raced us and won: answer with what it recorded
        stored = await service.in_transaction(attempt)
    request.app.state.runtime.wake_relay()
    return JSONResponse(stored.body, status_code=stored.status_code)


async def together(
    request: Request,
    commits: GroupCommit[CommandRequest, StoredResponse],
    principal: Principal,
    key: str | None,
    body: BaseModel,
    step: Step,
    status_code: int,
) -> JSONResponse:
    """Like :func:`respond`, in a transaction shared with the requests arriving meanwhile."""
    fingerprint = request_fingerprint(
        request.method, request.url.path, body.model_dump(mode="json")
    )
    stored = await commits(CommandRequest(principal.sub, key, fingerprint, step, status_code))
    request.app.state.runtime.wake_relay()
    return JSONResponse(stored.body, status_code=stored.status_code)


def visible_to(principal: Principal, document: dict[str, Any]) -> bool:
    if principal.role is Role.FIRM:
        return bool(document["firm_id"] == principal.firm_id)
    return principal.role in READERS


@router.get("/programmes", tags=["programmes"])
async def list_programmes(service: Service, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """Voucher programmes with their rules and remaining budget."""
    async with service.store.engine.connect() as connection:
        budgets = await projection.budgets(connection)
    return [
        {
            "id": p.id,
            "name": p.name,
            "clusters": list(p.clusters),
            "industries": [str(i) for i in p.industries],
            "service_categories": [str(c) for c in p.service_categories],
            "max_startup_age_years": p.max_startup_age_years,
            "max_amount_per_firm": p.max_amount_per_firm,
            "four_eyes_threshold": p.four_eyes_threshold,
            "voucher_validity_days": p.voucher_validity_days,
            "budget_total": budgets.get(p.id, (p.budget_total, p.budget_total))[0],
            "budget_available": budgets.get(p.id, (p.budget_total, p.budget_total))[1],
        }
        for p in service.programmes.values()
    ]


@router.post("/providers", status_code=201, tags=["providers"])
async def register_provider(
    body: ProviderIn,
    request: Request,
    service: Service,
    officer: Officers,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Register a business-support provider for its service categories (officers)."""
    categories = [str(c) for c in body.service_categories]

    async def work(uow: UnitOfWork) -> StoredResponse:
        await service.register_provider(
            uow, body.id, body.name, categories, context_of(request, officer)
        )
        return StoredResponse(
            201, {"id": body.id, "name": body.name, "service_categories": categories}
        )

    return await respond(request, service, officer, key, body.model_dump(mode="json"), work)


@router.get("/providers", tags=["providers"])
async def list_providers(service: Service, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """Registered providers and the services they may be paid for."""
    async with service.store.engine.connect() as connection:
        return await projection.list_providers(connection)


@router.post("/applications", status_code=201, tags=["applications"])
async def submit_application(
    body: SubmitApplicationIn,
    request: Request,
    service: Service,
    firm: Firms,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Apply for a startup voucher (firms; Idempotency-Key required)."""
    key = require_key(key)
    command = SubmitApplication(
        programme_id=body.programme_id,
        firm=Firm(**body.firm.model_dump()),
        service_category=body.service_category,
        requested_amount=body.requested_amount,
        purpose=body.purpose,
    )

    step = Step(new_id("app"), service.submission(command), context_of(request, firm))
    return await together(request, service.submissions, firm, key, body, step, 201)


@router.get("/applications", tags=["applications"])
async def list_applications(
    service: Service,
    principal: CurrentPrincipal,
    status: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Applications, oldest first; a firm sees only its own. Follow ``next_cursor`` for more."""
    if principal.role not in (Role.FIRM, *READERS):
        raise Problem(status=403, title="Forbidden", detail="providers do not see applications")
    try:
        after = projection.decode_cursor(cursor) if cursor else None
    except ValueError as error:
        raise Problem(
            status=422,
            title="Invalid request",
            detail="cursor is not one this API gave out",
            errors=[{"field": "cursor", "message": "unknown cursor"}],
        ) from error
    async with service.store.engine.connect() as connection:
        items, next_cursor = await projection.list_documents(
            connection,
            firm_id=principal.firm_id if principal.role is Role.FIRM else None,
            status=status,
            after=after,
            limit=limit,
        )
    return {"items": items, "next_cursor": next_cursor}


async def visible_document(
    service: VoucherService, principal: Principal, application_id: str
) -> dict[str, Any]:
    async with service.store.engine.connect() as connection:
        document = await projection.get_document(connection, application_id)
    if document is None or not visible_to(principal, document):
        raise NotFound(f"there is no application {application_id}")
    return document


@router.get("/applications/{application_id}", tags=["applications"])
async def get_application(
    application_id: str, service: Service, principal: CurrentPrincipal
) -> dict[str, Any]:
    """One application as it stands now."""
    return await visible_document(service, principal, application_id)


@router.get("/applications/{application_id}/events", tags=["applications"])
async def application_events(
    application_id: str, service: Service, principal: CurrentPrincipal
) -> list[dict[str, Any]]:
    """The application's whole hash chain, exactly as published on voucher.events."""
    await visible_document(service, principal, application_id)
    return [e.to_json_dict() for e in await service.store.read_stream(application_id)]


@router.post("/applications/{application_id}/decisions", tags=["applications"])
async def decide_application(
    application_id: str,
    body: DecisionIn,
    request: Request,
    service: Service,
    officer: Officers,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Approve or reject a verified application (officers; four eyes above the threshold)."""

    step = service.decision(
        application_id,
        decision=body.decision,
        reason=body.reason,
        approved_amount=body.approved_amount,
        context=context_of(request, officer),
    )
    return await together(request, service.decisions, officer, key, body, step, 200)


@router.post("/applications/{application_id}/withdrawal", tags=["applications"])
async def withdraw_application(
    application_id: str,
    request: Request,
    service: Service,
    firm: Firms,
    body: WithdrawalIn | None = None,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Withdraw an application before it is approved (the firm that filed it)."""
    await visible_document(service, firm, application_id)
    reason = body.reason if body else ""

    async def work(uow: UnitOfWork) -> StoredResponse:
        outcome = await service.withdraw(uow, application_id, reason, context_of(request, firm))
        return StoredResponse(200, projection.application_resource(outcome.application))

    return await respond(request, service, firm, key, {"reason": reason}, work)


@router.post("/vouchers/{voucher_id}/redemptions", status_code=202, tags=["vouchers"])
async def redeem_voucher(
    voucher_id: str,
    body: RedemptionIn,
    request: Request,
    service: Service,
    provider: Providers,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Redeem a voucher against an invoice (providers; paid asynchronously, exactly once)."""
    key = require_key(key)
    assert provider.provider_id is not None

    async def work(uow: UnitOfWork) -> StoredResponse:
        _, redemption_id = await service.request_redemption(
            uow,
            voucher_id,
            provider_id=provider.provider_id or "",
            invoice_number=body.invoice_number,
            amount=body.amount,
            service_category=body.service_category,
            context=context_of(request, provider),
        )
        return StoredResponse(
            202,
            {
                "id": redemption_id,
                "voucher_id": voucher_id,
                "amount": body.amount,
                "invoice_number": body.invoice_number,
                "status": "requested",
            },
        )

    return await respond(request, service, provider, key, body.model_dump(mode="json"), work)


@router.get("/vouchers/{voucher_id}/redemptions", tags=["vouchers"])
async def list_redemptions(
    voucher_id: str, service: Service, principal: CurrentPrincipal
) -> list[dict[str, Any]]:
    """A voucher's redemptions and whether each is paid (a provider sees its own)."""
    async with service.store.engine.connect() as connection:
        application_id = await projection.application_for_voucher(connection, voucher_id)
        document = (
            await projection.get_document(connection, application_id) if application_id else None
        )
        if document is None:
            raise NotFound(f"there is no voucher {voucher_id}")
        if principal.role is not Role.PROVIDER and not visible_to(principal, document):
            raise NotFound(f"there is no voucher {voucher_id}")
        items = await projection.redemptions_of(connection, voucher_id)
    if principal.role is Role.PROVIDER:
        items = [r for r in items if r["provider_id"] == principal.provider_id]
    return items
