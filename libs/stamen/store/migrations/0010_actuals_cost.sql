-- The actual figures that sit beside the estimate's: wall-clock time the workset held a slot (all
-- attempts) and the metered cost of its measured CPU time at list spot prices.
ALTER TABLE workset_actuals ADD COLUMN wall_seconds DOUBLE PRECISION;
ALTER TABLE workset_actuals ADD COLUMN cost_usd DOUBLE PRECISION;
