-- regserve embedded store, schema version 3: metrics as MLflow keeps them.
-- * NaN: SQLite cannot hold NaN in a REAL column (it becomes NULL), so, as MLflow does, a NaN
--   value is stored as 0 with `is_nan` = 1; `is_nan` joins the primary key so a NaN and a real 0
--   at the same (timestamp, step) are two values. ±Infinity is stored as ±1.7976931348623157e308
--   (done by the code, as MLflow does).
-- * The dataset a logged model's metric was computed on (`dataset_name`, `dataset_digest`),
--   NULL when not given. `model_id` ('' for none) links a value to a logged model.
-- The table is rebuilt because SQLite cannot change a primary key in place.
CREATE TABLE metrics_v3 (
    run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value REAL NOT NULL,
    timestamp INTEGER NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    is_nan INTEGER NOT NULL DEFAULT 0,
    model_id TEXT NOT NULL DEFAULT '',
    dataset_name TEXT,
    dataset_digest TEXT,
    PRIMARY KEY (run_uuid, key, timestamp, step, value, is_nan)
);
INSERT INTO metrics_v3 (run_uuid, key, value, timestamp, step, model_id)
    SELECT run_uuid, key, value, timestamp, step, model_id FROM metrics;
DROP TABLE metrics;
ALTER TABLE metrics_v3 RENAME TO metrics;
CREATE INDEX metrics_model ON metrics (model_id) WHERE model_id != '';
-- The sampled history of the MLflow UI walks a run's values of one key in step order.
CREATE INDEX metrics_steps ON metrics (run_uuid, key, step, timestamp, value, is_nan);
