"""HTTP entry points of the fund service: the kit's application endpoints, plus the funds,
committee votes, tranche releases and cancellations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from services.fund.domain.decider import WithdrawApplication
from services.fund.entrypoints.schemas import (
    CancellationIn,
    ReleaseIn,
    SubmitInvestmentIn,
    VoteIn,
)
from services.fund.service_layer import FundService
from shared.auth import CurrentPrincipal
from shared.eventstore import UnitOfWork
from shared.idempotency import StoredResponse
from shared.kit import http as kit
from shared.kit.application import Step
from shared.kit.lean import LeanRoute

Service = Annotated[FundService, Depends(kit.service_dependency(FundService))]


def _submission(service: FundService, body: SubmitInvestmentIn) -> Any:
    return service.submission(body.command())


INVESTMENTS = kit.ApplicationsAPI(
    SubmitInvestmentIn,
    _submission,
    None,  # a committee votes instead: POST /v1/applications/{id}/votes
    WithdrawApplication,
    id_prefix="fund",
    what="a fund investment",
)
applications = kit.applications_router(INVESTMENTS)

router = APIRouter(prefix="/v1", route_class=LeanRoute)


@router.get("/funds", tags=["funds"])
async def list_funds(service: Service, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """The mega fund and its sub-funds: remit, committee, capacity, and live figures
    (``committed`` and not yet disbursed, ``disbursed``, ``available``; a parent's include
    its sub-funds')."""
    return await service.fund_list()


@router.post("/applications/{application_id}/votes", tags=["committee"])
async def vote(
    application_id: str,
    body: VoteIn,
    request: Request,
    officer: kit.Officers,
    key: kit.IdempotencyKey = None,
) -> JSONResponse:
    """A committee member's vote on a verified application (members of the fund's committee
    only, 403 for others; one vote each, 409 for a second). A declared conflict of interest
    is recorded and not counted; the application is approved once the ``for`` votes reach
    quorum, rejected (``quorum_unreachable``) once they cannot."""
    service = kit.service_in(request, FundService)
    command = service.vote(
        member=officer.sub,
        vote=body.vote,
        reason=body.reason,
        conflict_of_interest=body.conflict_of_interest,
    )
    step = Step(application_id, command, kit.context_of(request, officer))
    return await kit.together(request, service.decisions, officer, key, body, step, 200)


@router.post("/applications/{application_id}/tranches/{number}/release", tags=["tranches"])
async def release_tranche(
    application_id: str,
    number: Annotated[int, Path(ge=1, le=1000)],
    body: ReleaseIn,
    request: Request,
    officer: kit.Officers,
    key: kit.IdempotencyKey = None,
) -> JSONResponse:
    """Release tranche ``number`` of a committed investment on evidence of its milestone
    (officers; in order: 409 for any but the next). The payout stage pays it, once."""
    service = kit.service_in(request, FundService)

    async def work(uow: UnitOfWork) -> StoredResponse:
        outcome = await service.release_tranche(
            uow,
            application_id,
            number,
            milestone_evidence=body.milestone_evidence,
            context=kit.context_of(request, officer),
        )
        return StoredResponse(200, service.projection.resource(outcome.application))

    return await kit.respond(request, service, officer, key, body, work)


@router.post("/applications/{application_id}/cancellation", tags=["tranches"])
async def cancel_investment(
    application_id: str,
    body: CancellationIn,
    request: Request,
    officer: kit.Officers,
    key: kit.IdempotencyKey = None,
) -> JSONResponse:
    """Cancel a committed investment (officers, with a reason): the tranches not yet paid are
    cancelled and their amount goes back to the fund's capacity. Where a treasury pays, it
    is asked first about each released tranche: one it paid after all is recorded paid and
    is not given back (503 if it cannot say, and nothing is cancelled)."""
    service = kit.service_in(request, FundService)

    async with service.payouts_settled(application_id) as settled:

        async def work(uow: UnitOfWork) -> StoredResponse:
            outcome = await service.cancel(
                uow,
                application_id,
                reason=body.reason,
                context=kit.context_of(request, officer),
                settled=settled,
            )
            return StoredResponse(200, service.projection.resource(outcome.application))

        return await kit.respond(request, service, officer, key, body, work)
