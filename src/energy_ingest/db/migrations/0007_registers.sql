-- Cumulative registers. A reading may carry the device's register (kWh since installation)
-- instead of its interval's energy; the interval energy is then derived from the time-sorted
-- register sequence and kept in the energy column, so every report reads one column either way.
-- `register_flags`: 1 reset (a drop: counts from zero again), 2 zero placeholder (ignored),
-- 4 implausible rise (stored, left out of totals: `excluded_kwh`).
ALTER TABLE meter_readings ADD COLUMN kwh_register double precision;
ALTER TABLE meter_readings ADD COLUMN register_flags smallint;
ALTER TABLE meter_readings ADD COLUMN excluded_kwh double precision;
ALTER TABLE vehicle_readings ADD COLUMN kwh_register double precision;
ALTER TABLE vehicle_readings ADD COLUMN register_flags smallint;
ALTER TABLE vehicle_readings ADD COLUMN excluded_kwh double precision;

ALTER TABLE meter_live_status ADD COLUMN kwh_register double precision;
ALTER TABLE vehicle_live_status ADD COLUMN kwh_register double precision;

ALTER TABLE meter_hourly ADD COLUMN excluded_kwh numeric NOT NULL DEFAULT 0;
ALTER TABLE vehicle_hourly ADD COLUMN excluded_kwh numeric NOT NULL DEFAULT 0;

-- The form a device reports energy in, fixed by its first reading: 'interval' or 'register'.
ALTER TABLE meters ADD COLUMN energy_form text CHECK (energy_form IN ('interval', 'register'));
ALTER TABLE vehicles ADD COLUMN energy_form text CHECK (energy_form IN ('interval', 'register'));

-- Resets and zero placeholders, as the register sequence says they are now (recomputed when a
-- late reading changes the sequence around them).
CREATE TABLE register_events (
    kind       text             NOT NULL CHECK (kind IN ('meter', 'vehicle')),
    device_key integer          NOT NULL,
    ts         timestamptz      NOT NULL,
    event      text             NOT NULL CHECK (event IN ('reset', 'placeholder')),
    register   double precision NOT NULL,
    previous   double precision NOT NULL,
    PRIMARY KEY (kind, device_key, ts)
);
