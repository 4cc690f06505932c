"""The alert tests' service and receiver, for the webhook tests."""

from tests.alerts.conftest import alerting, receiver

__all__ = ["alerting", "receiver"]
