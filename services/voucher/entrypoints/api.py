"""HTTP entry points of the voucher service: the kit's application endpoints, plus
programmes, providers and redemptions. Parse, authorise, hand on to the service layer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.voucher.adapters import projection
from services.voucher.domain.decider import SubmitApplication, WithdrawApplication
from services.voucher.domain.errors import NotFound
from services.voucher.entrypoints.schemas import (
    PayoutDecisionIn,
    ProviderIn,
    RedemptionIn,
    SubmitApplicationIn,
    VoucherDecisionIn,
)
from services.voucher.service_layer import VoucherService
from shared.auth import CurrentPrincipal, Principal, require_role
from shared.contracts import Role
from shared.eventstore import UnitOfWork
from shared.idempotency import KEY_REQUIRED, StoredResponse, require_key
from shared.kit.http import (
    ApplicationsAPI,
    IdempotencyKey,
    Officers,
    applications_router,
    context_of,
    respond,
    service_dependency,
    visible_to,
)
from shared.kit.lean import LeanRoute

Providers = Annotated[Principal, Depends(require_role(Role.PROVIDER))]


Service = Annotated[VoucherService, Depends(service_dependency(VoucherService))]


def _submission(service: VoucherService, body: SubmitApplicationIn) -> SubmitApplication:
    return service.submission(
        SubmitApplication(
            programme_id=body.programme_id,
            firm=body.firm.to_domain(),
            service_category=body.service_category,
            requested_amount=body.requested_amount,
            purpose=body.purpose,
            cost_reference=body.cost_reference,
        )
    )


def _decision(service: VoucherService, body: VoucherDecisionIn, officer: str) -> Any:
    return service.decision(
        officer=officer,
        decision=body.decision,
        reason=body.reason,
        approved_amount=body.approved_amount,
    )


applications = applications_router(
    ApplicationsAPI(
        submit_body=SubmitApplicationIn,
        submission=_submission,
        decision=_decision,
        decision_body=VoucherDecisionIn,
        withdrawal=WithdrawApplication,
        id_prefix="app",
        what="a startup voucher",
    )
)

router = APIRouter(prefix="/v1", route_class=LeanRoute)


@router.get("/programmes", tags=["programmes"])
async def list_programmes(service: Service, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """Voucher programmes with their rules and budget: ``money`` has ``budget_total``,
    ``committed`` (held for approved and issued vouchers, not yet paid out), ``paid`` (paid
    redemptions) and ``available`` (total − committed − paid)."""
    money = await service.read(projection.money_by_programme)
    found = []
    for p in service.programmes.values():
        total, available, paid = money.get(p.id, (p.budget_total, p.budget_total, 0))
        found.append(
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
                "budget_total": total,
                "budget_available": available,
                "money": {
                    "budget_total": total,
                    "committed": total - available - paid,
                    "paid": paid,
                    "available": available,
                },
                "catalogue_version": p.catalogue_version,
            }
        )
    return found


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

    return await respond(request, service, officer, key, body, work)


@router.get("/providers", tags=["providers"])
async def list_providers(service: Service, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """Registered providers and the services they may be paid for."""
    return await service.read(projection.list_providers)


@router.post(
    "/vouchers/{voucher_id}/redemptions",
    status_code=202,
    tags=["vouchers"],
    openapi_extra=KEY_REQUIRED,
)
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
    provider_id = provider.provider_id or ""

    async def work(uow: UnitOfWork) -> StoredResponse:
        _, redemption_id = await service.request_redemption(
            uow,
            voucher_id,
            provider_id=provider_id,
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

    return await respond(request, service, provider, key, body, work)


@router.get("/vouchers/{voucher_id}/redemptions", tags=["vouchers"])
async def list_redemptions(
    voucher_id: str, service: Service, principal: CurrentPrincipal
) -> list[dict[str, Any]]:
    """A voucher's redemptions and whether each is paid (a provider sees its own)."""
    async with service.store.engine.connect() as connection:
        application_id = await projection.application_for_voucher(connection, voucher_id)
        document = (
            await service.projection.document(connection, application_id)
            if application_id
            else None
        )
        if document is None:
            raise NotFound(f"there is no voucher {voucher_id}")
        if principal.role is not Role.PROVIDER and not visible_to(principal, document):
            raise NotFound(f"there is no voucher {voucher_id}")
        items = await projection.redemptions_of(connection, voucher_id)
    if principal.role is Role.PROVIDER:
        items = [r for r in items if r["provider_id"] == principal.provider_id]
    return items


@router.post(
    "/vouchers/{voucher_id}/redemptions/{redemption_id}/retry",
    summary="Try a failed payout again",
    tags=["vouchers"],
)
async def retry_payout(
    voucher_id: str,
    redemption_id: str,
    body: PayoutDecisionIn,
    request: Request,
    service: Service,
    officer: Officers,
) -> dict[str, Any]:
    """An officer has a redemption whose payout failed tried again (officers; 409 unless
    it is ``payout_failed``): it is ``requested`` again, its failures counted afresh."""
    context = context_of(request, officer)
    found = await service.retry_payout(voucher_id, redemption_id, officer.sub, body.reason, context)
    return {"id": found.id, "voucher_id": voucher_id, "status": found.status}


@router.post(
    "/vouchers/{voucher_id}/redemptions/{redemption_id}/cancellation",
    summary="Cancel a redemption whose payout failed",
    tags=["vouchers"],
)
async def cancel_redemption(
    voucher_id: str,
    redemption_id: str,
    body: PayoutDecisionIn,
    request: Request,
    service: Service,
    officer: Officers,
) -> dict[str, Any]:
    """An officer cancels a redemption whose payout failed (officers; 409 unless it is
    ``payout_failed``): its amount goes back on the voucher. If the treasury paid it after
    all, it is recorded paid instead, and the answer is 409 saying so."""
    context = context_of(request, officer)
    found = await service.cancel_redemption(
        voucher_id, redemption_id, officer.sub, body.reason, context
    )
    return {"id": found.id, "voucher_id": voucher_id, "status": found.status}
