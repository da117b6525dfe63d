//! The throwaway PostgreSQL of the Rust tests (`tests/common/pg.rs` over `scripts/pg-cluster`):
//! local only, password required, fresh databases, and a stop/restart on the same port that keeps
//! the data (what the "database restarted while serve follows it" tests rely on).

mod common;

use common::pg::{psql, PgCluster};

#[test]
fn restart_keeps_data_and_port_and_stop_refuses_connections() {
    let pg = PgCluster::start();
    let db = pg.new_database("restart_test");
    psql(&db, "CREATE TABLE t (k BIGINT PRIMARY KEY, v TEXT NOT NULL); INSERT INTO t VALUES (1, 'kept')").unwrap();

    pg.restart();
    assert_eq!(psql(&db, "SELECT k, v FROM t").unwrap(), "1|kept");

    pg.stop();
    let err = psql(&db, "SELECT 1").unwrap_err();
    assert!(err.contains("refused") || err.contains("could not connect"), "{err}");
    pg.restart();
    assert_eq!(psql(&db, "SELECT count(*) FROM t").unwrap(), "1");
}

#[test]
fn local_only_with_a_password_and_fresh_databases() {
    let pg = PgCluster::start();
    assert_eq!(psql(pg.url(), "SHOW listen_addresses").unwrap(), "127.0.0.1");
    let (_, rest) = pg.url().split_once("//").unwrap();
    let (creds, _) = rest.split_once('@').unwrap();
    let wrong = pg.url().replace(creds, "regserve:wrong");
    let err = psql(&wrong, "SELECT 1").unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");

    let a = pg.new_database("fresh_a");
    let b = pg.new_database("fresh_b");
    psql(&a, "CREATE TABLE only_in_a (x BIGINT)").unwrap();
    assert_eq!(psql(&b, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").unwrap(), "0");
}
