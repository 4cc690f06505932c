-- Hourly rollups per device, maintained in the same statement as the raw insert from the rows
-- actually inserted. Sums are numeric: exact, so any window answered as whole hours from here
-- plus partial hours from raw rows equals the raw answer to the last digit.
-- Partitioned by UTC day of `hour`, like the raw readings: a window reads only its days,
-- and retention drops whole days.
CREATE TABLE meter_hourly (
    meter_key   integer     NOT NULL,
    hour        timestamptz NOT NULL,
    readings    integer     NOT NULL,
    kwh         numeric     NOT NULL,
    voltage_sum numeric     NOT NULL,
    voltage_min real        NOT NULL,
    voltage_max real        NOT NULL,
    PRIMARY KEY (meter_key, hour)
) PARTITION BY RANGE (hour);

CREATE TABLE vehicle_hourly (
    vehicle_key integer     NOT NULL,
    hour        timestamptz NOT NULL,
    readings    integer     NOT NULL,
    kwh         numeric     NOT NULL,
    temp_sum    numeric     NOT NULL,
    temp_min    real        NOT NULL,
    temp_max    real        NOT NULL,
    last_ts     timestamptz NOT NULL,
    last_soc    real        NOT NULL,
    PRIMARY KEY (vehicle_key, hour)
) PARTITION BY RANGE (hour);

-- Readings arrive roughly in time order, so a block-range index on ts is tiny and lets
-- fleet-wide queries read just the minutes at a window's edges.
CREATE INDEX meter_readings_ts_brin ON meter_readings USING brin (ts);
CREATE INDEX vehicle_readings_ts_brin ON vehicle_readings USING brin (ts);

-- Fleet-wide reports read every device's rollups for a range of hours.
CREATE INDEX meter_hourly_hour ON meter_hourly (hour);
CREATE INDEX vehicle_hourly_hour ON vehicle_hourly (hour);
