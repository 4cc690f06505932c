"""Charge points registered for OCPP, their connectors' live status, and the id tags they authorize."""
