-- regserve embedded store, schema version 5: registry webhooks (MLflow >= 3.3's
-- /api/2.0/mlflow/webhooks) and their delivery outbox. The PostgreSQL twin
-- (migrations/postgres/) has exactly this shape.
--
-- `webhooks` and `webhook_events` keep what MLflow's `webhooks`/`webhook_events` keep: a
-- deleted hook is soft-deleted (`deleted_timestamp`), as MLflow does. `webhook_events` also
-- holds regserve's extension events (action `stage_transitioned`), which the REST API lists
-- apart from `events` (the MLflow client refuses an action it does not know).
CREATE TABLE webhooks (
    webhook_id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    url TEXT NOT NULL,
    secret TEXT,
    status TEXT NOT NULL DEFAULT 'ACTIVE',
    creation_timestamp INTEGER NOT NULL,
    last_updated_timestamp INTEGER NOT NULL,
    deleted_timestamp INTEGER
);
CREATE INDEX webhooks_by_creation ON webhooks (creation_timestamp, webhook_id);

CREATE TABLE webhook_events (
    webhook_id TEXT NOT NULL REFERENCES webhooks(webhook_id) ON DELETE CASCADE,
    entity TEXT NOT NULL,
    action TEXT NOT NULL,
    PRIMARY KEY (webhook_id, entity, action)
);
CREATE INDEX webhook_events_by_event ON webhook_events (entity, action);

-- The transactional outbox: one row per (event, subscribed hook), written in the registry
-- write's own transaction; the delivery workers of every server on this database claim rows
-- with a lease (`lease_until`), delete them once delivered, and mark them FAILED after the
-- last retry. `body` is the exact JSON that is sent (and signed).
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL UNIQUE,
    webhook_id TEXT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'PENDING',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER,
    last_error TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
