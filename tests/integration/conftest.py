"""Fixtures every integration test of a service may use."""

from tests.integration.harness import start_service
from tests.integration.treasury import treasury

__all__ = ["start_service", "treasury"]
