-- API keys. Only a SHA-256 of each key is stored (keys are 256-bit random, so a fast hash is
-- enough); `prefix` is the visible part that tells keys apart in listings and logs.
CREATE TABLE api_keys (
    key_id       integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix       text        NOT NULL UNIQUE,
    hash         bytea       NOT NULL,
    name         text        NOT NULL,
    scopes       text[]      NOT NULL,
    device_id    text,
    rate_limit   double precision,   -- readings per second, NULL: none
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    changed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Workers poll for keys changed since their last look (revocations reach them within seconds).
CREATE INDEX api_keys_changed_at ON api_keys (changed_at);
