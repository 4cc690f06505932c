"""A simulated fleet of meters and the vehicles they charge, minute by minute, with its ground truth.

Pure and deterministic: the same `FleetConfig` gives the same readings in the same order and the same
ground truth. The physics (charging, driving, temperatures) draws from its own random stream, the
delivery faults (duplicates, late readings, shuffling) from another and the register faults (resets,
zero placeholders, implausible jumps) from a third, so the readings and the ground truth do not change
when only the delivery faults do, and the physics does not change with the register faults.

With registers, a device reports its cumulative register (`kwhConsumedAcTotal`, `kwhDeliveredDcTotal`)
and its ground truth is what the counter rules make of the time-sorted registers (registers.py): the
first reading counts nothing, a reset counts from zero, a placeholder nothing, a jump is left out.

With `transactions` (the simulator's `--transport ocpp`), the meters are charge points' connector
meters, each in one OCPP transaction that spans the run: the register is read once more when the
transaction starts, a minute before `start` (its meterStart), and its last reading is a whole Wh (its
meterStop); OCPP 1.6 sends both as integers of Wh.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Literal

from energy_ingest.simulate.registers import Event, RegisterTally

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
REGISTERS = ("none", "meters", "vehicles", "all")
# What a register reads when the run starts (kWh since installation), and an implausible jump: far
# beyond what any charger delivers in a minute, so it is left out whatever MAX_INTERVAL_KW says.
INITIAL_REGISTER_KWH = (100.0, 20_000.0)
JUMP_KWH = (1_000.0, 5_000.0)
DEFAULT_MAX_INTERVAL_KW = 350.0
ID_PREFIX = re.compile(r"[A-Za-z0-9._:-]{0,40}")  # device ids are at most 64 of these characters
DEFAULT_RESET_SHARE = 0.002
DEFAULT_PLACEHOLDER_SHARE = 0.005
DEFAULT_JUMP_SHARE = 0.0


def iso(ts: datetime) -> str:
    """RFC 3339 in UTC with `Z`, as the API answers."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def meter_id(i: int, prefix: str = "") -> str:
    return f"{prefix}MTR-{i:05d}"


def vehicle_id(i: int, prefix: str = "") -> str:
    return f"{prefix}EV-{i:05d}"


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """`devices` meters `MTR-00001…` and as many vehicles `EV-00001…` (ids after `id_prefix`), vehicle i
    charging at meter i."""

    devices: int
    start: datetime
    minutes: int
    seed: int = 1
    faulty_share: float = 0.1
    duplicate_share: float = 0.0
    out_of_order: bool = False
    late_share: float = 0.0
    registers: Literal["none", "meters", "vehicles", "all"] = "none"
    """Which devices report cumulative registers instead of each interval's energy."""
    reset_share: float = DEFAULT_RESET_SHARE
    """Share of a register's charging minutes in which it drops (meter replaced or rolled over)."""
    placeholder_share: float = DEFAULT_PLACEHOLDER_SHARE
    """Share of register readings that read 0 (an offline device's placeholder)."""
    jump_share: float = DEFAULT_JUMP_SHARE
    """Share of register readings that jump implausibly (by 1,000–5,000 kWh)."""
    max_interval_kw: float = DEFAULT_MAX_INTERVAL_KW
    """The service's MAX_INTERVAL_KW: faster rises are left out of its totals, and of the truth."""
    id_prefix: str = ""
    """Put before every device id: a device keeps the energy form it started with, so a register run
    against a service that already holds an interval run of the same ids needs other ids."""

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError("devices must be >= 1")
        if self.minutes < 1:
            raise ValueError("minutes must be >= 1")
        if self.start.tzinfo is None:
            raise ValueError("start must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
        for name in ("faulty_share", "duplicate_share", "late_share", "reset_share", "placeholder_share", "jump_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.registers not in REGISTERS:
            raise ValueError(f"registers must be one of {', '.join(REGISTERS)}")
        if not self.max_interval_kw > 0:
            raise ValueError("max_interval_kw must be > 0")
        if not ID_PREFIX.fullmatch(self.id_prefix):
            raise ValueError(f"the id prefix may hold up to 40 letters, digits and ._:- only, not {self.id_prefix!r}")
        object.__setattr__(self, "start", self.start.astimezone(UTC))

    @property
    def transaction_start(self) -> datetime:
        """When the OCPP transactions start (`FleetSimulation(transactions=True)`): a minute before the
        first readings."""
        return self.start - timedelta(minutes=1)

    @property
    def meter_registers(self) -> bool:
        return self.registers in ("meters", "all")

    @property
    def vehicle_registers(self) -> bool:
        return self.registers in ("vehicles", "all")

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
    excluded_ac: float = 0.0
    """Implausible register rises of the meter, left out of `total_ac` (the report's `excludedAc`)."""
    excluded_dc: float = 0.0


@dataclass(frozen=True, slots=True)
class RegisterEvent:
    """A reset or placeholder the simulator injected, as `GET /v1/{meters,vehicles}/{id}/resets` lists it."""

    kind: Literal["meter", "vehicle"]
    device_id: str
    timestamp: datetime
    event: Event


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
    registers: str = "none"
    resets: int = 0
    placeholders: int = 0
    jumps: int = 0
    events: tuple[RegisterEvent, ...] = ()
    """Every reset and placeholder injected, by device and time."""

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


@dataclass(frozen=True, slots=True)
class Message:
    """One device's readings for one MQTT message, on `{prefix}/{kind}s/{device_id}`."""

    minute: int
    kind: Literal["meter", "vehicle"]
    device_id: str
    readings: list[Reading]


@dataclass(slots=True)
class _Register:
    value: float  # what the counter reads (kWh, to ENERGY_DECIMALS)
    tally: RegisterTally
    held: bool = False  # the last reading was a placeholder: no reset right after it, or the 0 would be one


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
    meter_register: _Register | None = None
    vehicle_register: _Register | None = None


def _taper(soc: float) -> float:
    """Charging power falls linearly above 80 % SoC, as chargers do in the constant-voltage phase."""
    if soc <= TAPER_FROM_SOC:
        return 1.0
    return max(0.08, (100.0 - soc) / (100.0 - TAPER_FROM_SOC))


def _relax(value: float, target: float, rate: float) -> float:
    return value + (target - value) * rate


class FleetSimulation:
    """One run of the fleet. Iterate once (`readings`, `ticks` or `batches`), then read `ground_truth()`.

    `transactions`: the meters are in one OCPP transaction each over the run (needs meter registers):
    their registers are also read when the transaction starts, a minute before `config.start`
    (`meter_starts`), and read a whole Wh at the last minute. The counter rules count from the start
    reading, so the first minute's energy counts too."""

    def __init__(self, config: FleetConfig, *, transactions: bool = False) -> None:
        if transactions and not config.meter_registers:
            raise ValueError("transactions need meter registers (registers 'meters' or 'all')")
        self.config = config
        self.transactions = transactions
        self._physics = random.Random(f"fleet-physics-{config.seed}")
        self._delivery = random.Random(f"fleet-delivery-{config.seed}")
        self._faults = random.Random(f"fleet-registers-{config.seed}")
        self.chargers = self._make_chargers()
        self._vehicles = [self._initial_state(c) for c in self.chargers]
        self.meter_starts: dict[str, float] = {}
        """With `transactions`: each meter's register (kWh, a whole Wh) when its transaction starts."""
        for v in self._vehicles:
            if config.meter_registers:
                v.meter_register = self._new_register()
                if transactions:
                    # The meterStart reading: the truth counts the first minute's energy from it.
                    v.meter_register.tally.add(config.transaction_start, v.meter_register.value)
                    self.meter_starts[v.charger.meter_id] = v.meter_register.value
            if config.vehicle_registers:
                v.vehicle_register = self._new_register()
        self._started = False
        self._finished = False
        self._sent = 0
        self._duplicates = 0
        self._late = 0
        self._resets = 0
        self._placeholders = 0
        self._jumps = 0

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
                    meter_id=meter_id(i + 1, self.config.id_prefix),
                    vehicle_id=vehicle_id(i + 1, self.config.id_prefix),
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

    def _new_register(self) -> _Register:
        start = round(self._faults.uniform(*INITIAL_REGISTER_KWH), 3)
        return _Register(start, RegisterTally(self.config.max_interval_kw))

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

    def _register(self, register: _Register, minute: int, at: datetime, energy: float, *, stops: bool = False) -> float:
        """The register reading of a minute in which `energy` flowed, faults injected. `stops`: the
        register ends a transaction, so its last reading is a whole Wh (rounded up: no drop)."""
        rng, cfg = self._faults, self.config
        fault = minute > 0
        if fault and energy > 0 and not register.held and register.value > energy and rng.random() < cfg.reset_share:
            # Replaced or rolled over while charging: the new count holds this minute's energy only.
            register.value = energy
            self._resets += 1
        elif fault and rng.random() < cfg.jump_share:
            register.value = round(register.value + energy + rng.uniform(*JUMP_KWH), ENERGY_DECIMALS)
            self._jumps += 1
        else:
            register.value = round(register.value + energy, ENERGY_DECIMALS)
            # Not in the last minute: a placeholder is one only once a reading after it says so.
            fault = fault and minute < cfg.minutes - 1 and register.value > 0
            if fault and rng.random() < cfg.placeholder_share:
                register.held = True
                self._placeholders += 1
                register.tally.add(at, 0.0)
                return 0.0
        if stops and minute == cfg.minutes - 1:
            # The tolerance keeps a float such as 12.345 (12344.999… Wh) at 12,345 Wh.
            register.value = round(math.ceil(register.value * 1000 - 1e-6) / 1000, ENERGY_DECIMALS)
        register.held = False
        register.tally.add(at, register.value)
        return register.value

    def _minute(self, minute: int) -> list[Reading]:
        at = self.config.start + timedelta(minutes=minute)
        ts = iso(at)
        out: list[Reading] = []
        for v in self._vehicles:
            ac, dc, load = self._step(v)
            voltage = 230.0 + v.charger.voltage_offset + self._physics.gauss(0.0, 0.8) - 1.5 * load
            meter: Reading = {"type": "meter", "meterId": v.charger.meter_id}
            if v.meter_register is None:
                meter["kwhConsumedAc"] = ac
            else:
                meter["kwhConsumedAcTotal"] = self._register(v.meter_register, minute, at, ac, stops=self.transactions)
            meter["voltage"] = round(min(250.0, max(210.0, voltage)), 1)
            meter["timestamp"] = ts
            vehicle: Reading = {"type": "vehicle", "vehicleId": v.charger.vehicle_id, "soc": round(v.soc, 3)}
            if v.vehicle_register is None:
                vehicle["kwhDeliveredDc"] = dc
            else:
                vehicle["kwhDeliveredDcTotal"] = self._register(v.vehicle_register, minute, at, dc)
            vehicle["batteryTemp"] = round(v.temp, 2)
            vehicle["timestamp"] = ts
            out += (meter, vehicle)
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

    def messages(self, batch_size: int, *, per_minute: bool = False) -> Iterator[Message]:
        """`ticks` cut per device (MQTT has a topic per device) into messages of at most `batch_size`
        readings; with `out_of_order` the messages of a tick and the readings of a message are shuffled.
        `per_minute` sends what each tick holds with the tick (live mode); otherwise a device's message
        goes once it is full, and the rest at the end."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        buffers: dict[tuple[Literal["meter", "vehicle"], str], list[Reading]] = {}
        for tick in self.ticks():
            ready: list[Message] = []
            for reading in tick.readings:
                key = _device_of(reading)
                buffer = buffers.setdefault(key, [])
                buffer.append(reading)
                if len(buffer) >= batch_size:
                    ready.append(Message(tick.minute, *key, buffer))
                    del buffers[key]
            if per_minute or tick.minute == self.config.minutes:
                ready += (Message(tick.minute, *key, buffer) for key, buffer in buffers.items())
                buffers.clear()
            if self.config.out_of_order:
                self._delivery.shuffle(ready)
                for message in ready:
                    self._delivery.shuffle(message.readings)
            yield from ready

    def ground_truth(self) -> GroundTruth:
        """What the server should report once every reading is in; only after the run is complete."""
        if not self._finished:
            raise RuntimeError("the ground truth is known only after the whole run was iterated")
        vehicles = tuple(self._truth(v) for v in self._vehicles)
        per_stream = self.config.devices * self.config.minutes
        events: list[RegisterEvent] = []
        for v in self._vehicles:
            if v.meter_register is not None:
                events += (RegisterEvent("meter", v.charger.meter_id, *e) for e in v.meter_register.tally.events)
            if v.vehicle_register is not None:
                events += (RegisterEvent("vehicle", v.charger.vehicle_id, *e) for e in v.vehicle_register.tally.events)
        return GroundTruth(
            start=self.config.start,
            end=self.config.end,
            vehicles=vehicles,
            meter_readings=per_stream,
            vehicle_readings=per_stream,
            sent=self._sent,
            duplicates_injected=self._duplicates,
            late=self._late,
            registers=self.config.registers,
            resets=self._resets,
            placeholders=self._placeholders,
            jumps=self._jumps,
            events=tuple(events),
        )

    @staticmethod
    def _truth(v: _Vehicle) -> VehicleTruth:
        # A register's energy is what the counter rules count; an interval device's the sum of its readings.
        # Rounded as the server rounds its report, so the two compare equal.
        ac, excluded_ac = _counted(v.meter_register, v.total_ac)
        dc, excluded_dc = _counted(v.vehicle_register, v.total_dc)
        total_ac, total_dc = round(ac, 6), round(dc, 6)
        return VehicleTruth(
            vehicle_id=v.charger.vehicle_id,
            meter_id=v.charger.meter_id,
            total_ac=total_ac,
            total_dc=total_dc,
            efficiency=round(total_dc / total_ac, 4) if total_ac > 0 else None,
            faulty=v.charger.faulty,
            charger_efficiency=round(v.charger.efficiency, 4),
            charging_minutes=v.charging_minutes,
            excluded_ac=round(excluded_ac, 6),
            excluded_dc=round(excluded_dc, 6),
        )


def _counted(register: _Register | None, interval_total: float) -> tuple[float, float]:
    if register is None:
        return interval_total, 0.0
    return register.tally.counted, register.tally.excluded


def _device_of(reading: Reading) -> tuple[Literal["meter", "vehicle"], str]:
    if reading["type"] == "meter":
        return "meter", str(reading["meterId"])
    return "vehicle", str(reading["vehicleId"])
