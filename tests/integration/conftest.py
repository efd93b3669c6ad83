"""Fixtures every integration test of a service may use."""

from tests.integration.harness import start_service

__all__ = ["start_service"]
