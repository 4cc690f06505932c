-- OCPP 1.6J: registered charge points, their connectors' live status, id tags and charging sessions.

-- A charge point's password (OCPP security profile 1, HTTP Basic) is stored as a salted SHA-256.
-- Passwords are at least 16 characters and the generated ones are 192-bit random, so a fast hash
-- suits the handshake of a thousand chargers reconnecting at once.
CREATE TABLE chargers (
    charger_id    text        PRIMARY KEY,
    password_salt bytea       NOT NULL,
    password_hash bytea       NOT NULL,
    vendor        text,
    model         text,
    serial_number text,
    firmware      text,
    booted_at     timestamptz,
    last_seen_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Connector 0 is the charge point itself. `meter_id` NULL: the meter is `{charger_id}-{connector_id}`.
CREATE TABLE charger_connectors (
    charger_id        text        NOT NULL REFERENCES chargers ON DELETE CASCADE,
    connector_id      integer     NOT NULL CHECK (connector_id >= 0),
    meter_id          text,
    status            text,
    error_code        text,
    info              text,
    vendor_error_code text,
    status_at         timestamptz,
    soc               real,
    soc_at            timestamptz,
    PRIMARY KEY (charger_id, connector_id)
);

-- Which vehicle an idTag (RFID card, vehicle identity) stands for. A tag without a vehicle is accepted
-- but links nothing.
CREATE TABLE id_tags (
    id_tag     text        PRIMARY KEY,
    vehicle_id text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per OCPP transaction; `session_id` is the transactionId given to the charger.
CREATE TABLE charging_sessions (
    session_id     integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charger_id     text        NOT NULL,
    connector_id   integer     NOT NULL,
    meter_id       text        NOT NULL,
    id_tag         text        NOT NULL,
    vehicle_id     text,
    id_tag_status  text        NOT NULL,
    started_at     timestamptz NOT NULL,
    meter_start_wh bigint      NOT NULL,
    stopped_at     timestamptz,
    meter_stop_wh  bigint,
    stop_reason    text,
    ended_by       text        CHECK (ended_by IN ('charger', 'inferred')),
    soc_first      real,
    soc_first_at   timestamptz,
    soc_last       real,
    soc_last_at    timestamptz,
    link_id        bigint,
    link_note      text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- A StartTransaction the charger sends again (it never saw the answer) is the same session.
    UNIQUE (charger_id, connector_id, started_at)
);
CREATE INDEX charging_sessions_open ON charging_sessions (charger_id, connector_id) WHERE stopped_at IS NULL;
CREATE INDEX charging_sessions_started ON charging_sessions (started_at DESC, session_id DESC);
CREATE INDEX charging_sessions_vehicle ON charging_sessions (vehicle_id, started_at DESC, session_id DESC);
CREATE INDEX charging_sessions_charger ON charging_sessions (charger_id, started_at DESC, session_id DESC);

-- Links made by charging sessions are told apart from those set by hand.
ALTER TABLE vehicle_meter_links
    ADD COLUMN source     text    NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'ocpp')),
    ADD COLUMN session_id integer;
