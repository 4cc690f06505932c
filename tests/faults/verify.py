"""What the clients were told against what the database holds, counted the way a user would."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.faults.load import Key, Ledger, Request

_STORED = (
    """SELECT 'meter', m.meter_id, r.ts, r.kwh_consumed_ac, r.voltage::float8
    FROM meter_readings r JOIN meters m USING (meter_key)""",
    """SELECT 'vehicle', v.vehicle_id, r.ts, r.kwh_delivered_dc, r.soc::float8, r.battery_temp::float8
    FROM vehicle_readings r JOIN vehicles v USING (vehicle_key)""",
)

_DUPLICATED = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM meter_readings GROUP BY meter_key, ts HAVING count(*) > 1) d)
     + (SELECT count(*) FROM (SELECT 1 FROM vehicle_readings GROUP BY vehicle_key, ts HAVING count(*) > 1) d)
     + (SELECT count(*) - count(DISTINCT meter_id) FROM meters)
     + (SELECT count(*) - count(DISTINCT vehicle_id) FROM vehicles)
"""

# Live state must be the newest stored reading of every device, no more, no less.
_LIVE = """
SELECT 'meter ' || coalesce(m.meter_id, l.meter_key::text), n.ts, l.ts
FROM (SELECT DISTINCT ON (meter_key) meter_key, ts, kwh_consumed_ac, voltage
      FROM meter_readings ORDER BY meter_key, ts DESC) n
FULL JOIN meter_live_status l USING (meter_key)
LEFT JOIN meters m USING (meter_key)
WHERE (n.ts, n.kwh_consumed_ac, n.voltage) IS DISTINCT FROM (l.ts, l.kwh_consumed_ac, l.voltage)
UNION ALL
SELECT 'vehicle ' || coalesce(v.vehicle_id, l.vehicle_key::text), n.ts, l.ts
FROM (SELECT DISTINCT ON (vehicle_key) vehicle_key, ts, kwh_delivered_dc, soc, battery_temp
      FROM vehicle_readings ORDER BY vehicle_key, ts DESC) n
FULL JOIN vehicle_live_status l USING (vehicle_key)
LEFT JOIN vehicles v USING (vehicle_key)
WHERE (n.ts, n.kwh_delivered_dc, n.soc, n.battery_temp)
      IS DISTINCT FROM (l.ts, l.kwh_delivered_dc, l.soc, l.battery_temp)
"""

# Every rollup row must equal the aggregate of its hour's raw rows, and every raw hour must have one.
_ROLLUPS = """
WITH raw AS (
    SELECT meter_key, date_trunc('hour', ts, 'UTC') AS hour, count(*)::int AS readings,
           sum(kwh_consumed_ac::numeric) AS kwh, sum(voltage::numeric) AS voltage_sum,
           min(voltage) AS voltage_min, max(voltage) AS voltage_max
    FROM meter_readings GROUP BY 1, 2)
SELECT 'meter key ' || meter_key, hour, raw.readings, h.readings, raw.kwh, h.kwh
FROM raw FULL JOIN meter_hourly h USING (meter_key, hour)
WHERE (raw.readings, raw.kwh, raw.voltage_sum, raw.voltage_min, raw.voltage_max)
      IS DISTINCT FROM (h.readings, h.kwh, h.voltage_sum, h.voltage_min, h.voltage_max)
UNION ALL
SELECT 'vehicle key ' || vehicle_key, hour, raw.readings, h.readings, raw.kwh, h.kwh
FROM (SELECT vehicle_key, date_trunc('hour', ts, 'UTC') AS hour, count(*)::int AS readings,
             sum(kwh_delivered_dc::numeric) AS kwh, sum(battery_temp::numeric) AS temp_sum,
             min(battery_temp) AS temp_min, max(battery_temp) AS temp_max, max(ts) AS last_ts,
             (array_agg(soc ORDER BY ts DESC))[1] AS last_soc
      FROM vehicle_readings GROUP BY 1, 2) raw
FULL JOIN vehicle_hourly h USING (vehicle_key, hour)
WHERE (raw.readings, raw.kwh, raw.temp_sum, raw.temp_min, raw.temp_max, raw.last_ts, raw.last_soc)
      IS DISTINCT FROM (h.readings, h.kwh, h.temp_sum, h.temp_min, h.temp_max, h.last_ts, h.last_soc)
"""

# Left behind when a process dies inside CREATE/REINDEX … CONCURRENTLY; still maintained on every write.
_INVALID_INDEXES = "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1"

SAMPLES = 5


@dataclass
class Tally:
    """One run's figures. The lists hold what went wrong (empty when all is well)."""

    requests: int = 0
    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: list[Key] = field(default_factory=list)  # acknowledged, not stored
    wrong_values: list[Key] = field(default_factory=list)  # stored with values other than sent
    phantom: int = 0  # stored, never sent
    duplicated: int = 0  # one reading (or device id) stored more than once
    unacknowledged: int = 0  # readings that never got a 2xx, even after retries
    torn: list[str] = field(default_factory=list)  # requests partly stored: atomicity broken
    answer_lost: list[str] = field(default_factory=list)  # stored by an attempt whose answer never came
    stored_despite_error: list[str] = field(default_factory=list)  # stored by an attempt answered 503/429
    false_claims: list[str] = field(default_factory=list)  # 2xx answers whose counts do not add up
    bad_answers: list[str] = field(default_factory=list)  # 5xx but 503, errors not problem+json, …
    live_mismatches: list[str] = field(default_factory=list)
    rollup_mismatches: list[str] = field(default_factory=list)
    invalid_indexes: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(value, list):
                mine.extend(value)
            else:
                setattr(self, name, mine + value)

    def problems(self, *, answer_lost_ok: bool, outcome_unknown_ok: bool = False) -> list[str]:
        """Everything here that a user would call data loss or a wrong answer.

        `answer_lost_ok`: the server was killed, so some commits never got their answer out.
        `outcome_unknown_ok`: the database was, so a connection lost after COMMIT was sent leaves the
        service unable to know whether it committed; it answers 503 and the resend finds duplicates.
        """
        found = []
        checks: list[tuple[str, list[Any]]] = [
            ("acknowledged readings not stored", self.lost),
            ("readings stored with other values than sent", self.wrong_values),
            ("requests partly stored", self.torn),
            ("2xx answers whose counts are wrong", self.false_claims),
            ("unexpected answers", self.bad_answers),
            ("live state differs from the newest stored reading", self.live_mismatches),
            ("rollups differ from raw rows", self.rollup_mismatches),
        ]
        if not answer_lost_ok:
            checks.append(("requests committed but never answered", self.answer_lost))
        if not outcome_unknown_ok:
            checks.append(("requests stored although answered 503/429", self.stored_despite_error))
        for what, items in checks:
            if items:
                found.append(f"{len(items)} {what}, e.g. {items[:SAMPLES]}")
        if self.phantom:
            found.append(f"{self.phantom} stored readings were never sent")
        if self.duplicated:
            found.append(f"{self.duplicated} readings or devices stored more than once")
        if self.unacknowledged:
            found.append(f"{self.unacknowledged} readings never acknowledged, even after retries")
        return found


def check(database_url: str, ledger: Ledger) -> Tally:
    with psycopg.connect(database_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        stored: dict[Key, tuple[float, ...]] = {
            (row[0], row[1], row[2]): tuple(row[3:]) for sql in _STORED for row in conn.execute(sql).fetchall()
        }
        duplicated = conn.execute(_DUPLICATED).fetchone()
        live = conn.execute(_LIVE).fetchall()
        rollups = conn.execute(_ROLLUPS).fetchall()
        invalid = [str(row[0]) for row in conn.execute(_INVALID_INDEXES).fetchall()]
    tally = Tally(
        requests=len(ledger.requests),
        stored=len(stored),
        duplicated=int(duplicated[0]) if duplicated else 0,
        answers=ledger.answers(),
        invalid_indexes=invalid,
        live_mismatches=[f"{r[0]}: newest stored {r[1]}, live {r[2]}" for r in live],
        rollup_mismatches=[f"{r[0]} {r[1]}: raw {r[2]} readings {r[4]} kWh, rollup {r[3]} / {r[5]}" for r in rollups],
    )
    sent: set[Key] = set()
    for request in ledger.requests:
        _tally_request(tally, ledger, request, stored, sent)
    tally.sent = len(sent)
    tally.phantom = sum(1 for key in stored if key not in sent)
    return tally


def _tally_request(
    tally: Tally, ledger: Ledger, request: Request, stored: dict[Key, tuple[float, ...]], sent: set[Key]
) -> None:
    size = len(request.readings)
    acked = request.acked
    n_stored = 0
    for reading in request.readings:
        sent.add(reading.key)
        values = stored.get(reading.key)
        if values is not None:
            n_stored += 1
            if values != reading.values:
                tally.wrong_values.append(reading.key)
        elif acked is not None:
            tally.lost.append(reading.key)
    if acked is not None:
        tally.acknowledged += size
    else:
        tally.unacknowledged += size
    if 0 < n_stored < size:
        tally.torn.append(f"{n_stored} of {size} stored: {ledger.describe(request)}")
    for attempt in request.attempts:
        if attempt.ok:
            if attempt.accepted is None or attempt.duplicates is None or attempt.accepted + attempt.duplicates != size:
                tally.false_claims.append(f"request {request.id} of {size}: {attempt.outcome} {attempt.detail}")
        elif attempt.status in (429, 503):
            if attempt.retry_after is None or not attempt.content_type.startswith("application/problem+json"):
                tally.bad_answers.append(f"{attempt.status} without Retry-After or problem+json: {attempt.detail}")
        elif attempt.status is not None:
            tally.bad_answers.append(f"{attempt.status} {attempt.content_type}: {attempt.detail}")
    if n_stored == 0:
        return
    # Which attempt stored it? Readings are unique, so a 2xx that calls them all new stored them;
    # otherwise an earlier attempt (or, unacknowledged, some attempt) committed without telling.
    if acked is not None and acked.accepted == size:
        if n_stored == size:
            return
        tally.false_claims.append(f"request {request.id}: {size} accepted, {n_stored} stored")
        return
    if acked is not None and acked.accepted:
        tally.false_claims.append(f"request {request.id}: {acked.accepted} of {size} accepted after a retry")
    before = request.attempts[: request.attempts.index(acked)] if acked is not None else request.attempts
    if any(a.outcome in ("cut", "timeout") for a in before):
        tally.answer_lost.append(ledger.describe(request))
    else:
        tally.stored_despite_error.append(ledger.describe(request))
