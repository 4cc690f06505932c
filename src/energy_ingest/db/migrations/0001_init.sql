-- Devices get a small integer key: the cold tables repeat it in every row and index
-- entry, where a text id would cost 8-20 bytes more per reading.
CREATE TABLE meters (
    meter_key  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter_id   text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vehicles (
    vehicle_key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Cold history: one row per reading, partitioned by day of measurement time.
-- Columns ordered widest first so the row packs without alignment padding.
CREATE TABLE meter_readings (
    ts              timestamptz      NOT NULL,
    received_at     timestamptz      NOT NULL,
    kwh_consumed_ac double precision NOT NULL,
    meter_key       integer          NOT NULL,
    voltage         real             NOT NULL,
    PRIMARY KEY (meter_key, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE vehicle_readings (
    ts               timestamptz      NOT NULL,
    received_at      timestamptz      NOT NULL,
    kwh_delivered_dc double precision NOT NULL,
    vehicle_key      integer          NOT NULL,
    soc              real             NOT NULL,
    battery_temp     real             NOT NULL,
    PRIMARY KEY (vehicle_key, ts)
) PARTITION BY RANGE (ts);

-- Hot store: the newest reading of each device by measurement time. Free space on
-- each page lets the constant updates stay HOT (no index change).
CREATE TABLE meter_live_status (
    meter_id        text             PRIMARY KEY,
    ts              timestamptz      NOT NULL,
    received_at     timestamptz      NOT NULL,
    kwh_consumed_ac double precision NOT NULL,
    voltage         real             NOT NULL
) WITH (fillfactor = 70);

CREATE TABLE vehicle_live_status (
    vehicle_id       text             PRIMARY KEY,
    ts               timestamptz      NOT NULL,
    received_at      timestamptz      NOT NULL,
    kwh_delivered_dc double precision NOT NULL,
    soc              real             NOT NULL,
    battery_temp     real             NOT NULL
) WITH (fillfactor = 70);

-- Which meter (charger) a vehicle draws from, over time. valid_to NULL = still linked.
CREATE TABLE vehicle_meter_links (
    link_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id text        NOT NULL,
    meter_id   text        NOT NULL,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX vehicle_meter_links_vehicle ON vehicle_meter_links (vehicle_id, valid_from);
CREATE INDEX vehicle_meter_links_meter ON vehicle_meter_links (meter_id, valid_from);
