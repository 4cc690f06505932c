"""Hourly rollups: recomputing them from raw readings (`energy-ingest rollups rebuild`)."""
