"""What the counter rules make of a simulated register, fed its readings in measurement time.

A deliberately small version of the rules (readings/registers.py has the service's): it covers the
sequences the simulator makes, where a reset is always a non-zero value below the previous one and a
zero placeholder is always followed by a value at or above the last non-zero one. Being separate, it
checks the service's rules rather than repeating them; the tests compare the two on generated runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Event = Literal["reset", "placeholder"]


@dataclass(slots=True)
class RegisterTally:
    """One device's register: the energy counted and left out so far, and the resets and placeholders seen."""

    max_kw: float
    counted: float = 0.0
    excluded: float = 0.0
    events: list[tuple[datetime, Event]] = field(default_factory=list)
    _anchor: tuple[datetime, float] | None = None  # the last non-zero reading (the first one even if 0)

    def add(self, ts: datetime, register: float) -> None:
        """The next reading in measurement time (strictly after the previous one)."""
        anchor = self._anchor
        if anchor is None:  # the first reading: nothing to measure from
            self._anchor = (ts, register)
            return
        since, last = anchor
        if register == 0 and last > 0:  # a placeholder: the next reading measures from `last` again
            self.events.append((ts, "placeholder"))
            return
        if register < last:  # a reset: counting starts again from zero
            self.events.append((ts, "reset"))
            rise = register
        else:
            rise = register - last
        if rise > self.max_kw * (ts - since).total_seconds() / 3600:
            self.excluded += rise
        else:
            self.counted += rise
        self._anchor = (ts, register)
