-- regserve embedded store, schema version 4: settings a `regserve server` records in the registry
-- so every process opening the same registry sees them (the embedded CLI, `serve`, other
-- replicas): `artifacts_destination`, where the artifact proxy keeps `mlflow-artifacts:/` files.
-- The PostgreSQL twin (migrations/postgres/) has exactly this shape.
CREATE TABLE server_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
