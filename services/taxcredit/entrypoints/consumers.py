"""Kafka entry points of the taxcredit service: verification and the certificate stage."""

from __future__ import annotations

from services.taxcredit.domain.events import E
from services.taxcredit.service_layer import TaxCreditService
from shared.consumer import IdempotentConsumer
from shared.kit.stages import subscribe_stages
from shared.service import ServiceRuntime


def subscribe_taxcredit_stages(
    runtime: ServiceRuntime, service: TaxCreditService
) -> IdempotentConsumer:
    """Verification and certificate issue react to events on taxcredit.events."""
    return subscribe_stages(
        runtime,
        "taxcredit-stages",
        batches={
            E.SUBMITTED: service.when_applications_submitted_verify,
            E.APPROVED: service.when_applications_approved_issue_certificates,
        },
    )
