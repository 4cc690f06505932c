"""Which parts of a window come from hourly rollups and which from raw readings.

A range [lo, hi) is answered from rollups for every whole UTC hour inside it and from raw rows
for the rest (its edges). An hour that a bucket boundary cuts (a day boundary in a time zone
with a half-hour offset, a 15-minute bucket) must come from raw rows too. Before the raw
retention cutoff there are no raw rows: the range is widened to whole hours there instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

HOUR = timedelta(hours=1)

Range = tuple[datetime, datetime]


def floor_hour(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


def ceil_hour(ts: datetime) -> datetime:
    down = floor_hour(ts)
    return down if down == ts else down + HOUR


@dataclass(slots=True)
class Cover:
    """How to answer [lo, hi): `hours` ranges from rollups, `raw` ranges from readings."""

    lo: datetime
    hi: datetime
    hours: list[Range] = field(default_factory=list)
    raw: list[Range] = field(default_factory=list)
    widened: bool = False  # rounded out to whole hours where raw rows are past retention


def merge(ranges: Iterable[Range]) -> list[Range]:
    merged: list[Range] = []
    for lo, hi in sorted(r for r in ranges if r[0] < r[1]):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def cover(lo: datetime, hi: datetime, raw_from: datetime, cuts: Iterable[datetime] = ()) -> Cover:
    """Decompose [lo, hi). `raw_from`: raw readings exist from here on. `cuts`: bucket boundaries."""
    widened = False
    if lo < raw_from and lo != floor_hour(lo):
        lo, widened = floor_hour(lo), True
    if hi <= raw_from and hi != ceil_hour(hi):
        hi, widened = ceil_hour(hi), True
    result = Cover(lo, hi, widened=widened)
    if lo >= hi:
        return result
    h_lo, h_hi = ceil_hour(lo), floor_hour(hi)
    if h_lo >= h_hi:
        result.raw = [(lo, hi)]
        return result
    inner = [c for c in cuts if h_lo <= c < h_hi and c != floor_hour(c)]
    cut_hours = sorted({floor_hour(c) for c in inner if floor_hour(c) >= raw_from})
    # A cut hour past retention has no raw rows: it stays whole, in the bucket where it starts.
    result.widened = widened or any(floor_hour(c) < raw_from for c in inner)
    hours: list[Range] = []
    start = h_lo
    for h in cut_hours:
        hours.append((start, h))
        start = h + HOUR
    hours.append((start, h_hi))
    result.hours = merge(hours)
    result.raw = merge([(lo, h_lo), (h_hi, hi), *((h, h + HOUR) for h in cut_hours)])
    return result


QUARTER = timedelta(minutes=15)


def bucket_starts(lo: datetime, hi: datetime, bucket: str, zone: ZoneInfo) -> list[datetime]:
    """Start of every bucket that meets [lo, hi), in order (UTC instants)."""
    if bucket == "15m":
        first = datetime.fromtimestamp(lo.timestamp() // 900 * 900, UTC)
        count = -((first - hi) // QUARTER)  # ceiling division
        return [first + n * QUARTER for n in range(count)]
    if bucket == "1h":
        first = floor_hour(lo)
        count = (ceil_hour(hi) - first) // HOUR
        return [first + n * HOUR for n in range(count)]
    starts: list[datetime] = []
    day = lo.astimezone(zone).date()
    while True:
        start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
        if start >= hi:
            return starts
        starts.append(start)
        day += timedelta(days=1)


def bucket_cuts(lo: datetime, hi: datetime, bucket: str | None, zone: ZoneInfo) -> list[datetime]:
    """Bucket boundaries strictly inside (lo, hi): where an hour may have to be split."""
    if bucket is None:
        return []
    return [s for s in bucket_starts(lo, hi, bucket, zone) if lo < s < hi]
