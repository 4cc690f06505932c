"""Fleet simulator and load generator: meters and vehicles charging, sent to a running service over HTTP, MQTT
or OCPP 1.6J (the meters as charge points)."""

from energy_ingest.simulate.fleet import (
    FleetConfig,
    FleetSimulation,
    GroundTruth,
    Message,
    Reading,
    RegisterEvent,
    VehicleTruth,
)
from energy_ingest.simulate.registers import RegisterTally
from energy_ingest.simulate.runner import Summary, add_arguments, format_summary, main_from_args, run

__all__ = [
    "FleetConfig",
    "FleetSimulation",
    "GroundTruth",
    "Message",
    "Reading",
    "RegisterEvent",
    "RegisterTally",
    "Summary",
    "VehicleTruth",
    "add_arguments",
    "format_summary",
    "main_from_args",
    "run",
]
