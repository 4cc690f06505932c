"""The garbage collector, set for a long-running worker.

CPython's cycle collector runs its youngest generation every 700 container objects allocated, and
every tenth of those runs also the next one, walking objects that live as long as the process (the
app, its routes, its caches). Each MQTT message or HTTP request allocates dozens, so at 15,000
messages a second a worker spent about 15 % of its time collecting (py-spy, bench/README.md).

After start-up the long-lived objects are frozen (never walked again) and the youngest generation is
collected every YOUNG_THRESHOLD allocations: the garbage a message leaves is freed by reference
counting at once; only cycles wait, and a few thousand objects more wait at most a moment.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def settle() -> None:
    """Call once the worker is started: freeze what exists, collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
