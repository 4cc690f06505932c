-- Rollup rows are updated by every flush of their hour: leave room on each page so the updates
-- stay HOT (new partitions get this when they are created; here the existing ones).
DO $$
DECLARE part regclass;
BEGIN
    FOR part IN
        SELECT i.inhrelid::regclass FROM pg_inherits i
        WHERE i.inhparent IN ('meter_hourly'::regclass, 'vehicle_hourly'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s SET (fillfactor = 50)', part);
    END LOOP;
END $$;

-- Raw partitions whose indexes were rebuilt after their day ended (see compact_closed_days).
CREATE TABLE compacted_partitions (
    name         text        PRIMARY KEY,
    heap_bytes   bigint      NOT NULL,  -- its size then: grown well past it, it is compacted again
    compacted_at timestamptz NOT NULL DEFAULT now()
);
