-- The hot store is keyed by the device's integer key, like the cold tables, so a flush can
-- upsert it straight from the staged rows. Rebuilt from the cold history.
DROP TABLE meter_live_status;
DROP TABLE vehicle_live_status;

CREATE TABLE meter_live_status (
    meter_key       integer          PRIMARY KEY REFERENCES meters,
    ts              timestamptz      NOT NULL,
    received_at     timestamptz      NOT NULL,
    kwh_consumed_ac double precision NOT NULL,
    voltage         real             NOT NULL
) WITH (fillfactor = 70);

CREATE TABLE vehicle_live_status (
    vehicle_key      integer          PRIMARY KEY REFERENCES vehicles,
    ts               timestamptz      NOT NULL,
    received_at      timestamptz      NOT NULL,
    kwh_delivered_dc double precision NOT NULL,
    soc              real             NOT NULL,
    battery_temp     real             NOT NULL
) WITH (fillfactor = 70);

INSERT INTO meter_live_status
SELECT DISTINCT ON (meter_key) meter_key, ts, received_at, kwh_consumed_ac, voltage
FROM meter_readings ORDER BY meter_key, ts DESC, received_at;

INSERT INTO vehicle_live_status
SELECT DISTINCT ON (vehicle_key) vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp
FROM vehicle_readings ORDER BY vehicle_key, ts DESC, received_at;
