"""Fleet simulator and load generator: meters and vehicles charging, sent to a running service over HTTP."""

from energy_ingest.simulate.fleet import FleetConfig, FleetSimulation, GroundTruth, Reading, VehicleTruth
from energy_ingest.simulate.runner import Summary, add_arguments, format_summary, main_from_args, run

__all__ = [
    "FleetConfig",
    "FleetSimulation",
    "GroundTruth",
    "Reading",
    "Summary",
    "VehicleTruth",
    "add_arguments",
    "format_summary",
    "main_from_args",
    "run",
]
