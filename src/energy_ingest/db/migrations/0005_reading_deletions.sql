-- The audit log of repairs: every deletion of a device's readings over a range, with what it removed.
CREATE TABLE reading_deletions (
    deletion_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('meter', 'vehicle')),
    device_id   text        NOT NULL,
    from_ts     timestamptz NOT NULL,
    to_ts       timestamptz NOT NULL,
    deleted     integer     NOT NULL,
    deleted_kwh numeric     NOT NULL,
    reason      text,
    deleted_by  text        NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);
