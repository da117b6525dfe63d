-- PostgreSQL twin of migrations/0004_server_settings.sql (schema version 4: settings the server
-- keeps in its database); translation rules in 0001_init.sql.
CREATE TABLE server_settings (
    key TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);
