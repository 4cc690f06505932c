"""energy-ingest: smart-meter and EV telemetry ingestion and energy analytics on PostgreSQL."""

__version__ = "0.1.0"
