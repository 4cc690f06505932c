-- A meter reading may carry no voltage (an OCPP charger that does not measure it). Its energy counts
-- as before; voltage figures skip it. NOT NULL is dropped on the partitioned parents, which
-- recurses to every partition (and partitions created later take the parents' definition).
ALTER TABLE meter_readings ALTER COLUMN voltage DROP NOT NULL;
ALTER TABLE meter_live_status ALTER COLUMN voltage DROP NOT NULL;

-- An hour whose readings all lack voltage has no min or max (least/greatest skip NULL when merging);
-- its voltage_sum stays 0. The average is voltage_sum / voltage_readings: over the readings that had one.
ALTER TABLE meter_hourly ALTER COLUMN voltage_min DROP NOT NULL;
ALTER TABLE meter_hourly ALTER COLUMN voltage_max DROP NOT NULL;
ALTER TABLE meter_hourly ADD COLUMN voltage_readings integer;
-- Every reading stored so far carried a voltage. This rewrites each rollup row once.
UPDATE meter_hourly SET voltage_readings = readings;
ALTER TABLE meter_hourly ALTER COLUMN voltage_readings SET NOT NULL;
