"""HTTP entry points of the taxcredit service: the kit's application endpoints, plus rate
tables, the technology catalogue, certificates and clawbacks."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from services.taxcredit.adapters import projection
from services.taxcredit.adapters.certificate_pdf import render_certificate
from services.taxcredit.domain.decider import SubmitClaim, WithdrawClaim
from services.taxcredit.domain.events import Programme
from services.taxcredit.domain.rates import RateTable
from services.taxcredit.entrypoints.schemas import ClaimIn, ClawbackIn, RateTableIn, SubmitClaimIn
from services.taxcredit.service_layer import TaxCreditService
from shared.auth import CurrentPrincipal, Principal, require_role
from shared.contracts import Role
from shared.domain import NotFound
from shared.eventstore import UnitOfWork
from shared.idempotency import StoredResponse
from shared.kit import http as kit
from shared.kit.lean import LeanRoute
from shared.kit.schemas import DecisionIn

Ministries = Annotated[Principal, Depends(require_role(Role.MINISTRY))]


Service = Annotated[TaxCreditService, Depends(kit.service_dependency(TaxCreditService))]


def _submission(service: TaxCreditService, body: ClaimIn) -> SubmitClaim:
    inputs = body.inputs()
    return SubmitClaim(
        programme=Programme(inputs.programme),
        tax_year=body.tax_year,
        firm=body.firm.to_domain(),
        inputs=inputs,
        cost_reference=body.cost_reference,
    )


def _decision(service: TaxCreditService, body: DecisionIn, officer: str) -> Any:
    return service.decision(officer=officer, decision=body.decision, reason=body.reason)


CLAIMS = kit.ApplicationsAPI(SubmitClaimIn, _submission, _decision, WithdrawClaim)  # type: ignore[arg-type]
applications = kit.applications_router(replace(CLAIMS, id_prefix="tc", what="a tax credit"))

router = APIRouter(prefix="/v1", route_class=LeanRoute)


@router.get("/rate-tables", tags=["rate tables"])
async def list_rate_tables(service: Service, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """Every rate table published, in publication order; none ever changes."""
    return await service.read(projection.published_resources)


@router.get("/technologies", tags=["rate tables"])
async def list_technologies(
    service: Service, principal: CurrentPrincipal, response: Response
) -> list[dict[str, Any]]:
    """The national strategic technologies a strategic investment or M&A credit can be for
    (the catalogue's version in the ``Catalogue-Version`` header)."""
    response.headers["Catalogue-Version"] = service.catalogue_version
    return [
        {"id": t.id, "name": t.name, "group": str(t.group)} for t in service.technologies.values()
    ]


@router.post("/rate-tables", status_code=201, tags=["rate tables"])
async def publish_rate_table(
    body: RateTableIn,
    request: Request,
    service: Service,
    ministry: Ministries,
    key: kit.IdempotencyKey = None,
) -> JSONResponse:
    """Publish a new rate table (ministries); a version already taken is 409."""
    table = RateTable.from_json(body.to_json())

    async def work(uow: UnitOfWork) -> StoredResponse:
        published = await service.publish_rate_table(uow, table, kit.context_of(request, ministry))
        return StoredResponse(201, published)

    return await kit.respond(request, service, ministry, key, body.to_json(), work)


async def _certificate(service: TaxCreditService, number: str) -> dict[str, Any]:
    found = await service.read(projection.certificate, number)
    if found is None:
        raise NotFound(f"there is no certificate {number}")
    return found


@router.get("/certificates/{number}.pdf", tags=["certificates"])
async def certificate_pdf(
    number: str, request: Request, service: Service, principal: CurrentPrincipal
) -> Response:
    """The certificate as a PDF a firm can file with the tax authority."""
    found = await _certificate(service, number)
    verify_url = str(request.url_for("get_certificate", number=number))
    pdf = render_certificate({**found, "verify_url": verify_url})
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{number}.pdf"'},
    )


@router.get("/certificates/{number}", tags=["certificates"])
async def get_certificate(
    number: str, service: Service, principal: CurrentPrincipal
) -> dict[str, Any]:
    """A certificate as the tax authority honours it: amount, status, and its event's hash."""
    return await _certificate(service, number)


@router.post("/applications/{application_id}/clawback", tags=["certificates"])
async def claw_back(
    application_id: str,
    body: ClawbackIn,
    request: Request,
    service: Service,
    officer: kit.Officers,
    key: kit.IdempotencyKey = None,
) -> JSONResponse:
    """Claw back part or all of a certified credit (officers); all of it revokes the certificate."""

    async def work(uow: UnitOfWork) -> StoredResponse:
        outcome = await service.claw_back(
            uow,
            application_id,
            reason=body.reason,
            amount=body.amount,
            context=kit.context_of(request, officer),
        )
        return StoredResponse(200, service.projection.resource(outcome.application))

    return await kit.respond(request, service, officer, key, body, work)
