-- regserve embedded registry, schema version 1: MLflow's Model Registry data model.
-- Models are keyed by an integer id so that a rename is one UPDATE; `next_version` makes
-- version numbers monotonic per model: a deleted version's number is never handed out again.
CREATE TABLE registered_models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    creation_timestamp INTEGER NOT NULL,
    last_updated_timestamp INTEGER NOT NULL,
    next_version INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE registered_model_tags (
    model_id INTEGER NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE model_versions (
    model_id INTEGER NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    creation_timestamp INTEGER NOT NULL,
    last_updated_timestamp INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL DEFAULT '',
    current_stage TEXT NOT NULL DEFAULT 'None',
    source TEXT NOT NULL,
    run_id TEXT NOT NULL DEFAULT '',
    run_link TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'READY',
    status_message TEXT NOT NULL DEFAULT '',
    storage_location TEXT NOT NULL DEFAULT '',
    logged_model_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (model_id, version)
);
CREATE INDEX model_versions_stage ON model_versions (model_id, current_stage, version);

CREATE TABLE model_version_tags (
    model_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, version, key),
    FOREIGN KEY (model_id, version) REFERENCES model_versions(model_id, version) ON DELETE CASCADE
);

CREATE TABLE registered_model_aliases (
    model_id INTEGER NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (model_id, alias),
    FOREIGN KEY (model_id, version) REFERENCES model_versions(model_id, version) ON DELETE CASCADE
);
