-- PostgreSQL twin of migrations/0003_metric_datasets.sql (schema version 3: `is_nan` and the
-- metric's dataset); translation rules in 0001_init.sql. PostgreSQL could change the primary key
-- in place, but `is_nan` must sit between `step` and `model_id` (the same column order on both
-- databases), so the table is rebuilt as in SQLite. PostgreSQL names constraints after their
-- table: the rebuilt table's are renamed back to what a table created as `metrics` has, so the
-- schema does not remember the rebuild.
CREATE TABLE metrics_v3 (
    run_uuid TEXT COLLATE "C" NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    key TEXT COLLATE "C" NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL DEFAULT 0,
    is_nan BIGINT NOT NULL DEFAULT 0,
    model_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    dataset_name TEXT COLLATE "C",
    dataset_digest TEXT COLLATE "C",
    PRIMARY KEY (run_uuid, key, timestamp, step, value, is_nan)
);
INSERT INTO metrics_v3 (run_uuid, key, value, timestamp, step, model_id)
    SELECT run_uuid, key, value, timestamp, step, model_id FROM metrics;
DROP TABLE metrics;
ALTER TABLE metrics_v3 RENAME TO metrics;
ALTER TABLE metrics RENAME CONSTRAINT metrics_v3_pkey TO metrics_pkey;
ALTER TABLE metrics RENAME CONSTRAINT metrics_v3_run_uuid_fkey TO metrics_run_uuid_fkey;
CREATE INDEX metrics_model ON metrics (model_id) WHERE model_id != '';
-- The sampled history of the MLflow UI walks a run's values of one key in step order.
CREATE INDEX metrics_steps ON metrics (run_uuid, key, step, timestamp, value, is_nan);
