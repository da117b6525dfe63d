-- regserve embedded store, schema version 2: the part of MLflow's tracking data model that the
-- MLflow client needs to log and register models: experiments, runs (params, metrics, tags,
-- model outputs) and MLflow 3 logged models. Artifacts live under the artifact root, addressed
-- as mlflow-artifacts:/<experiment id>/... as `mlflow server` does.
CREATE TABLE experiments (
    experiment_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    artifact_location TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active',
    creation_time INTEGER NOT NULL,
    last_update_time INTEGER NOT NULL
);
INSERT INTO experiments (experiment_id, name, artifact_location, creation_time, last_update_time)
VALUES (0, 'Default', 'mlflow-artifacts:/0',
        CAST(strftime('%s', 'now') AS INTEGER) * 1000, CAST(strftime('%s', 'now') AS INTEGER) * 1000);

CREATE TABLE experiment_tags (
    experiment_id INTEGER NOT NULL REFERENCES experiments(experiment_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (experiment_id, key)
);

CREATE TABLE runs (
    run_uuid TEXT PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(experiment_id),
    run_name TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'RUNNING',
    start_time INTEGER NOT NULL,
    end_time INTEGER,
    artifact_uri TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active'
);
CREATE INDEX runs_experiment ON runs (experiment_id, start_time);

CREATE TABLE run_params (
    run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_uuid, key)
);

CREATE TABLE run_tags (
    run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_uuid, key)
);

-- Every logged value (the history); a run's current value of a key is its row with the highest
-- (step, timestamp, value), as MLflow picks it. `model_id` links a value to a logged model.
CREATE TABLE metrics (
    run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value REAL NOT NULL,
    timestamp INTEGER NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    model_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_uuid, key, timestamp, step, value)
);
CREATE INDEX metrics_model ON metrics (model_id) WHERE model_id != '';

CREATE TABLE run_outputs (
    run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_uuid, model_id)
);

CREATE TABLE logged_models (
    model_id TEXT PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(experiment_id),
    name TEXT NOT NULL,
    artifact_location TEXT NOT NULL,
    creation_timestamp INTEGER NOT NULL,
    last_updated_timestamp INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'LOGGED_MODEL_PENDING',
    model_type TEXT NOT NULL DEFAULT '',
    source_run_id TEXT NOT NULL DEFAULT '',
    lifecycle_stage TEXT NOT NULL DEFAULT 'active'
);
CREATE INDEX logged_models_experiment ON logged_models (experiment_id, creation_timestamp);
CREATE INDEX logged_models_run ON logged_models (source_run_id, name);

CREATE TABLE logged_model_tags (
    model_id TEXT NOT NULL REFERENCES logged_models(model_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE logged_model_params (
    model_id TEXT NOT NULL REFERENCES logged_models(model_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);
