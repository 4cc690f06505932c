"""The counter rules: the energy of each register reading, from a device's time-sorted registers.

A register reading's energy is the rise since the same device's previous register reading in
measurement time, with these rules:
- the first reading of a device contributes nothing (there is nothing to measure from);
- a drop is a reset (meter replaced or rolled over): the energy after it counts from zero;
- a register of exactly 0 after non-zero values, followed by a value at or above the last
  non-zero one, is a placeholder (an offline charger's) and is ignored; followed by a lower value,
  that 0 was a reset;
- a rise faster than `max_kw` is implausible: stored and flagged, left out of totals (`excluded`);
- a rise is rounded to the nano-kWh, so a register's decimals give an energy's without float noise.

`derive` is a pure function of the sequence; the writer applies it to the stretch a flush changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

RESET = 1
PLACEHOLDER = 2
IMPLAUSIBLE = 4
DIGITS = 9  # a rise's decimal places (kWh)


@dataclass(frozen=True, slots=True)
class Point:
    ts: datetime
    register: float


@dataclass(frozen=True, slots=True)
class Derived:
    ts: datetime
    energy: float  # counted in totals
    excluded: float  # an implausible rise, left out
    flags: int


@dataclass(frozen=True, slots=True)
class Event:
    ts: datetime
    event: str  # "reset" or "placeholder"
    register: float
    previous: float


def derive(points: Sequence[Point], basis: Point | None, max_kw: float) -> tuple[list[Derived], list[Event]]:
    """Energy of each of `points` (time-sorted), measured on from `basis`: the device's last reading
    before them with a non-zero register, or None when they start the device's sequence."""
    derived: dict[datetime, Derived] = {}
    events: list[Event] = []
    anchor = basis  # what the next rise is measured from
    zeros: list[Point] = []  # zeros after a non-zero anchor, undecided until a non-zero follows
    for p in points:
        if anchor is None:
            derived[p.ts] = Derived(p.ts, 0.0, 0.0, 0)
            anchor = p
            continue
        if p.register == 0 and anchor.register > 0:
            zeros.append(p)
            derived[p.ts] = Derived(p.ts, 0.0, 0.0, 0)
            continue
        since = anchor
        flags = 0
        if zeros and p.register < anchor.register:
            # The first zero was a reset: counting starts again from it.
            first = zeros[0]
            derived[first.ts] = Derived(first.ts, 0.0, 0.0, RESET)
            events.append(Event(first.ts, "reset", 0.0, anchor.register))
            since = zeros[-1]
        elif zeros:
            for z in zeros:
                derived[z.ts] = Derived(z.ts, 0.0, 0.0, PLACEHOLDER)
                events.append(Event(z.ts, "placeholder", 0.0, anchor.register))
        elif p.register < anchor.register:
            flags = RESET
            events.append(Event(p.ts, "reset", p.register, anchor.register))
            since = Point(anchor.ts, 0.0)
        zeros = []
        # To the nano-kWh: 0.7 - 0.2 is 0.49999999999999994 in floating point, and the live state and
        # readings should say 0.5, as the meter would; no meter counts finer.
        rise = round(p.register - since.register, DIGITS)
        hours = (p.ts - since.ts).total_seconds() / 3600
        if rise > max_kw * hours:
            derived[p.ts] = Derived(p.ts, 0.0, rise, flags | IMPLAUSIBLE)
        else:
            derived[p.ts] = Derived(p.ts, rise, 0.0, flags)
        anchor = p
    return [derived[p.ts] for p in points], events
