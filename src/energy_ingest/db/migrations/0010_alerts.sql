-- Alerts (raised by the service's own evaluation rounds) and the webhooks that tell people about them.

-- An alert's life: active → acknowledged (optional) → cleared. History is kept: a cleared alert that
-- fires again is a new row.
CREATE TABLE alerts (
    alert_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule            text        NOT NULL
                                CHECK (rule IN ('low_efficiency', 'offline', 'counter_reset', 'session_without_dc')),
    device_kind     text        NOT NULL CHECK (device_kind IN ('meter', 'vehicle')),
    device_id       text        NOT NULL,
    status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'acknowledged', 'cleared')),
    raised_at       timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    note            text,
    cleared_at      timestamptz,
    details         jsonb       NOT NULL DEFAULT '{}',
    -- The newest thing the rule saw for this alert: offline, the last reading's receipt; counter_reset, the
    -- newest register event; session_without_dc, the newest session's stop. Events up to it are told.
    evidence_at     timestamptz,
    changed_at      timestamptz NOT NULL,  -- raised, merged with newer evidence, acknowledged or cleared
    CHECK ((status = 'cleared') = (cleared_at IS NOT NULL)),
    CHECK ((status = 'active') = (acknowledged_at IS NULL) OR status = 'cleared')
);
-- At most one open alert per rule and device, whatever several workers do at once.
CREATE UNIQUE INDEX alerts_one_open ON alerts (rule, device_kind, device_id) WHERE status <> 'cleared';
CREATE INDEX alerts_newest ON alerts (raised_at DESC, alert_id DESC);
CREATE INDEX alerts_device ON alerts (device_id, raised_at DESC, alert_id DESC);

-- Per-device overrides of the rules' settings (NULL: the service's default).
CREATE TABLE alert_settings (
    device_kind   text             NOT NULL CHECK (device_kind IN ('meter', 'vehicle')),
    device_id     text             NOT NULL,
    threshold     double precision,
    min_ac_kwh    double precision,
    offline_after text,
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_kind, device_id)
);

-- How far the evaluator has read: 'register_events' up to a recorded_at (`position`); 'sessions' has judged
-- every charging session below a session id (`number`), or will never judge it.
CREATE TABLE alert_cursors (
    name     text        PRIMARY KEY,
    position timestamptz,
    number   bigint
);

-- Sessions from that id on that the session_without_dc rule has judged already (each is judged once).
CREATE TABLE alert_session_checks (
    session_id integer PRIMARY KEY
);

-- When each register event was recorded, so the evaluator reads only new ones. Events that exist now
-- are history (-infinity): alerts start with the events recorded from here on.
ALTER TABLE register_events ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE register_events ALTER COLUMN recorded_at SET DEFAULT now();
CREATE INDEX register_events_recorded ON register_events (recorded_at);
INSERT INTO alert_cursors (name, position) VALUES ('register_events', now());
-- Likewise, sessions that ended before alerts existed are not judged; those still open will be.
INSERT INTO alert_cursors (name, number)
SELECT 'sessions', coalesce(min(session_id) FILTER (WHERE stopped_at IS NULL), max(session_id) + 1, 1)
FROM charging_sessions;
INSERT INTO alert_session_checks (session_id)
SELECT session_id FROM charging_sessions
WHERE stopped_at IS NOT NULL AND session_id >= (SELECT number FROM alert_cursors WHERE name = 'sessions');

-- Webhooks. The secret is kept as given: the service signs every delivery with it.
CREATE TABLE webhooks (
    webhook_id integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url        text        NOT NULL,
    events     text[]      NOT NULL,
    secret     text        NOT NULL,
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The outbox: each alert change inserts its deliveries in the same transaction. `body` is the JSON sent,
-- as it was at the change; `next_attempt_at` is also the lease of a delivery being sent.
CREATE TABLE webhook_deliveries (
    seq             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     uuid        NOT NULL UNIQUE,
    webhook_id      integer     NOT NULL REFERENCES webhooks ON DELETE CASCADE,
    event           text        NOT NULL,
    alert_id        bigint,
    body            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    finished_at     timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_of ON webhook_deliveries (webhook_id, seq DESC);
-- An alert's events reach a webhook in order: a delivery waits while an earlier one of the same alert pends.
CREATE INDEX webhook_deliveries_alert ON webhook_deliveries (webhook_id, alert_id, seq) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    delivery_seq bigint           NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
    attempt      integer          NOT NULL,
    at           timestamptz      NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  double precision NOT NULL,
    response     text,
    PRIMARY KEY (delivery_seq, attempt)
);
