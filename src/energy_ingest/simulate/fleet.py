"""A simulated fleet of meters and the vehicles they charge, minute by minute, with its ground truth.

Pure and deterministic: the same `FleetConfig` gives the same readings in the same order and the same
ground truth. The physics (charging, driving, temperatures) draws from its own random stream and the
delivery faults (duplicates, late readings, shuffling) from another, so the readings and the ground
truth do not change when only the delivery faults do.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

Reading = dict[str, str | float]
"""One reading exactly as `POST /v1/ingest` takes it (JSON-ready)."""

FAULTY_EFFICIENCY = 0.78
HEALTHY_EFFICIENCY = 0.90
FAULTY_SPREAD = 0.01
HEALTHY_SPREAD = 0.02
TAPER_FROM_SOC = 80.0
# Below this the charger's last step is dropped: a step so small would not move the rounded SoC.
MIN_CHARGE_STEP_KWH = 0.002
MIN_DRIVING_SOC = 10.0
# Energies are rounded per reading (10 mWh) so every total is exact to the server's 6 decimals.
ENERGY_DECIMALS = 5


def iso(ts: datetime) -> str:
    """RFC 3339 in UTC with `Z`, as the API answers."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def meter_id(i: int) -> str:
    return f"MTR-{i:05d}"


def vehicle_id(i: int) -> str:
    return f"EV-{i:05d}"


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """`devices` meters `MTR-00001…` and as many vehicles `EV-00001…`, vehicle i charging at meter i."""

    devices: int
    start: datetime
    minutes: int
    seed: int = 1
    faulty_share: float = 0.1
    duplicate_share: float = 0.0
    out_of_order: bool = False
    late_share: float = 0.0

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError("devices must be >= 1")
        if self.minutes < 1:
            raise ValueError("minutes must be >= 1")
        if self.start.tzinfo is None:
            raise ValueError("start must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
        for name in ("faulty_share", "duplicate_share", "late_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        object.__setattr__(self, "start", self.start.astimezone(UTC))

    @property
    def end(self) -> datetime:
        """End of the simulated span (exclusive): the last readings are at `end` − 1 minute."""
        return self.start + timedelta(minutes=self.minutes)


@dataclass(frozen=True, slots=True)
class Charger:
    """A meter, its charger and the vehicle linked to it; fixed for the whole run."""

    meter_id: str
    vehicle_id: str
    power_kw: float
    efficiency: float
    faulty: bool
    capacity_kwh: float
    ambient_c: float
    voltage_offset: float


@dataclass(frozen=True, slots=True)
class VehicleTruth:
    vehicle_id: str
    meter_id: str
    total_ac: float
    total_dc: float
    efficiency: float | None
    """DC ÷ AC to 4 decimals as the server computes it; None when the vehicle never charged."""
    faulty: bool
    charger_efficiency: float
    charging_minutes: int


@dataclass(frozen=True, slots=True)
class GroundTruth:
    start: datetime
    end: datetime
    vehicles: tuple[VehicleTruth, ...]
    meter_readings: int
    vehicle_readings: int
    sent: int
    """Readings handed out for sending, duplicates included."""
    duplicates_injected: int
    late: int

    @property
    def faulty(self) -> tuple[VehicleTruth, ...]:
        return tuple(v for v in self.vehicles if v.faulty)


@dataclass(frozen=True, slots=True)
class Tick:
    """What the fleet sends at one minute: `minute` from 0; the final tick (`minute` == config.minutes)
    carries the late readings and the last duplicates."""

    minute: int
    readings: list[Reading]


@dataclass(frozen=True, slots=True)
class Batch:
    """One request's readings; `minute` is the tick it belongs to (when to send it in live mode)."""

    minute: int
    readings: list[Reading]


class _Mode(Enum):
    PLUGGED = "plugged"
    PARKED = "parked"
    DRIVING = "driving"


@dataclass(slots=True)
class _Vehicle:
    charger: Charger
    soc: float
    temp: float
    mode: _Mode
    remaining: int
    target_soc: float
    drive_kw: float
    total_ac: float = 0.0
    total_dc: float = 0.0
    charging_minutes: int = 0


def _taper(soc: float) -> float:
    """Charging power falls linearly above 80 % SoC, as chargers do in the constant-voltage phase."""
    if soc <= TAPER_FROM_SOC:
        return 1.0
    return max(0.08, (100.0 - soc) / (100.0 - TAPER_FROM_SOC))


def _relax(value: float, target: float, rate: float) -> float:
    return value + (target - value) * rate


class FleetSimulation:
    """One run of the fleet. Iterate once (`readings`, `ticks` or `batches`), then read `ground_truth()`."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self._physics = random.Random(f"fleet-physics-{config.seed}")
        self._delivery = random.Random(f"fleet-delivery-{config.seed}")
        self.chargers = self._make_chargers()
        self._vehicles = [self._initial_state(c) for c in self.chargers]
        self._started = False
        self._finished = False
        self._sent = 0
        self._duplicates = 0
        self._late = 0

    # ------------------------------------------------------------------ fleet
    def _make_chargers(self) -> list[Charger]:
        rng = self._physics
        n = self.config.devices
        faulty_count = int(self.config.faulty_share * n + 0.5)
        faulty = set(rng.sample(range(n), faulty_count))
        chargers = []
        for i in range(n):
            is_faulty = i in faulty
            if is_faulty:
                efficiency = FAULTY_EFFICIENCY + rng.uniform(-FAULTY_SPREAD, FAULTY_SPREAD)
            else:
                efficiency = HEALTHY_EFFICIENCY + rng.uniform(-HEALTHY_SPREAD, HEALTHY_SPREAD)
            chargers.append(
                Charger(
                    meter_id=meter_id(i + 1),
                    vehicle_id=vehicle_id(i + 1),
                    power_kw=round(rng.uniform(7.0, 11.0), 1),
                    efficiency=efficiency,
                    faulty=is_faulty,
                    capacity_kwh=round(rng.uniform(60.0, 80.0), 1),
                    ambient_c=rng.uniform(16.0, 22.0),
                    voltage_offset=rng.uniform(-3.0, 3.0),
                )
            )
        return chargers

    def _initial_state(self, charger: Charger) -> _Vehicle:
        rng = self._physics
        # Most vehicles start plugged in so that even a short run shows charging.
        plugged = rng.random() < 0.6
        mode = _Mode.PLUGGED if plugged else rng.choice([_Mode.PARKED, _Mode.DRIVING])
        return _Vehicle(
            charger=charger,
            soc=rng.uniform(20.0, 70.0),
            temp=charger.ambient_c + (6.0 if plugged else 2.0),
            mode=mode,
            remaining=rng.randint(120, 600) if plugged else rng.randint(1, 60),
            target_soc=rng.uniform(85.0, 100.0),
            drive_kw=rng.uniform(8.0, 20.0),
        )

    # ---------------------------------------------------------------- physics
    def _switch(self, v: _Vehicle) -> None:
        rng = self._physics
        if v.mode is _Mode.PLUGGED:
            v.mode, v.remaining = _Mode.PARKED, rng.randint(10, 120)
        elif v.mode is _Mode.PARKED:
            v.mode, v.remaining = _Mode.DRIVING, rng.randint(15, 90)
            v.drive_kw = rng.uniform(8.0, 20.0)
        else:
            v.mode, v.remaining = _Mode.PLUGGED, rng.randint(120, 600)
            v.target_soc = rng.uniform(85.0, 100.0)

    def _headroom_kwh(self, v: _Vehicle) -> float:
        return max(0.0, (v.target_soc - v.soc) / 100.0 * v.charger.capacity_kwh)

    def _step(self, v: _Vehicle) -> tuple[float, float, float]:
        """Advance one minute; the minute's (AC kWh, DC kWh, load factor for temperature)."""
        c = v.charger
        if (
            v.remaining <= 0
            or (v.mode is _Mode.PLUGGED and self._headroom_kwh(v) < MIN_CHARGE_STEP_KWH)
            or (v.mode is _Mode.DRIVING and v.soc <= MIN_DRIVING_SOC)
        ):
            self._switch(v)
        v.remaining -= 1

        ac = dc = 0.0
        if v.mode is _Mode.PLUGGED and self._headroom_kwh(v) >= MIN_CHARGE_STEP_KWH:
            taper = _taper(v.soc)
            dc = round(min(c.power_kw * taper / 60.0, self._headroom_kwh(v)), ENERGY_DECIMALS)
            ac = round(dc / c.efficiency, ENERGY_DECIMALS)
            v.soc = min(100.0, v.soc + dc / c.capacity_kwh * 100.0)
            v.charging_minutes += 1
            temp_target, rate = 25.0 + c.power_kw * taper * 1.2, 0.04
        elif v.mode is _Mode.DRIVING:
            used = v.drive_kw / 60.0
            v.soc = max(MIN_DRIVING_SOC - 5.0, v.soc - used / c.capacity_kwh * 100.0)
            temp_target, rate = c.ambient_c + 6.0 + v.drive_kw * 0.3, 0.04
        else:
            temp_target, rate = c.ambient_c, 0.03
        v.temp = min(150.0, max(-50.0, _relax(v.temp, temp_target, rate) + self._physics.gauss(0.0, 0.05)))
        v.total_ac += ac
        v.total_dc += dc
        return ac, dc, 1.0 if dc > 0 else 0.0

    def _minute(self, minute: int) -> list[Reading]:
        ts = iso(self.config.start + timedelta(minutes=minute))
        out: list[Reading] = []
        for v in self._vehicles:
            ac, dc, load = self._step(v)
            voltage = 230.0 + v.charger.voltage_offset + self._physics.gauss(0.0, 0.8) - 1.5 * load
            out.append(
                {
                    "type": "meter",
                    "meterId": v.charger.meter_id,
                    "kwhConsumedAc": ac,
                    "voltage": round(min(250.0, max(210.0, voltage)), 1),
                    "timestamp": ts,
                }
            )
            out.append(
                {
                    "type": "vehicle",
                    "vehicleId": v.charger.vehicle_id,
                    "soc": round(v.soc, 3),
                    "kwhDeliveredDc": dc,
                    "batteryTemp": round(v.temp, 2),
                    "timestamp": ts,
                }
            )
        return out

    def _begin(self) -> None:
        if self._started:
            raise RuntimeError("a FleetSimulation runs once; make a new one to run again")
        self._started = True

    # ---------------------------------------------------------------- output
    def readings(self) -> Iterator[Reading]:
        """Every reading once, minute by minute, each minute the meters and vehicles in id order;
        no delivery faults."""
        self._begin()
        for minute in range(self.config.minutes):
            batch = self._minute(minute)
            self._sent += len(batch)
            yield from batch
        self._finished = True

    def ticks(self) -> Iterator[Tick]:
        """The readings as the fleet delivers them: a duplicate goes out again with the next minute (a retry),
        a late reading only in the final tick."""
        self._begin()
        cfg, rng = self.config, self._delivery
        retries: list[Reading] = []
        late: list[Reading] = []
        for minute in range(cfg.minutes):
            out, retries = retries, []
            for reading in self._minute(minute):
                if cfg.late_share and rng.random() < cfg.late_share:
                    late.append(reading)
                else:
                    out.append(reading)
                if cfg.duplicate_share and rng.random() < cfg.duplicate_share:
                    retries.append(dict(reading))
            self._sent += len(out)
            yield Tick(minute, out)
        self._late = len(late)
        final = retries + late
        self._sent += len(final)
        self._duplicates = self._sent - 2 * cfg.devices * cfg.minutes
        yield Tick(cfg.minutes, final)
        self._finished = True

    def batches(self, batch_size: int, *, per_minute: bool = False) -> Iterator[Batch]:
        """`ticks` cut into requests of at most `batch_size` readings, shuffled when `out_of_order`.
        `per_minute` keeps each batch within one tick (live mode); otherwise batches run across minutes."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        buffer: list[Reading] = []
        minute = 0
        for tick in self.ticks():
            minute = tick.minute
            buffer.extend(tick.readings)
            while len(buffer) >= batch_size:
                yield self._batch(minute, buffer[:batch_size])
                del buffer[:batch_size]
            if per_minute and buffer:
                yield self._batch(minute, buffer)
                buffer = []
        if buffer:
            yield self._batch(minute, buffer)

    def _batch(self, minute: int, readings: list[Reading]) -> Batch:
        if self.config.out_of_order:
            self._delivery.shuffle(readings)
        return Batch(minute, readings)

    def ground_truth(self) -> GroundTruth:
        """What the server should report once every reading is in; only after the run is complete."""
        if not self._finished:
            raise RuntimeError("the ground truth is known only after the whole run was iterated")
        vehicles = tuple(self._truth(v) for v in self._vehicles)
        per_stream = self.config.devices * self.config.minutes
        return GroundTruth(
            start=self.config.start,
            end=self.config.end,
            vehicles=vehicles,
            meter_readings=per_stream,
            vehicle_readings=per_stream,
            sent=self._sent,
            duplicates_injected=self._duplicates,
            late=self._late,
        )

    @staticmethod
    def _truth(v: _Vehicle) -> VehicleTruth:
        # Rounded as the server rounds its report, so the two compare equal.
        total_ac, total_dc = round(v.total_ac, 6), round(v.total_dc, 6)
        return VehicleTruth(
            vehicle_id=v.charger.vehicle_id,
            meter_id=v.charger.meter_id,
            total_ac=total_ac,
            total_dc=total_dc,
            efficiency=round(total_dc / total_ac, 4) if total_ac > 0 else None,
            faulty=v.charger.faulty,
            charger_efficiency=round(v.charger.efficiency, 4),
            charging_minutes=v.charging_minutes,
        )
