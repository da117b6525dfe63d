"""The throwaway PostgreSQL of the tests (scripts/pg-cluster through tests/python/pg.py): local
only, password required, one fresh database per `new_database`, and a restart on the same port
that keeps the data (what the "database restarted while serve follows it" tests rely on)."""

import socket

import pg
import pytest


def test_restart_keeps_data_and_port(postgres):
    url = postgres.new_database("cluster_restart")
    pg.query(url, "CREATE TABLE t (k BIGINT PRIMARY KEY, v TEXT NOT NULL)")
    pg.query(url, "INSERT INTO t VALUES (1, 'kept'), (2, 'also kept')")
    before = postgres.url
    port = int(before.rsplit(":", 1)[1].split("/", 1)[0])

    postgres.restart()

    assert postgres.url == before
    assert pg.query(url, "SELECT k, v FROM t ORDER BY k") == [("1", "kept"), ("2", "also kept")]
    # A second restart right after works as well (no stale pid or socket left behind).
    postgres.restart()
    assert pg.query(url, "SELECT count(*) FROM t") == [("2",)]
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_new_databases_are_fresh_and_separate(postgres):
    a = postgres.new_database("cluster_a")
    b = postgres.new_database("cluster_b")
    assert a != b and a.endswith("/cluster_a")
    pg.query(a, "CREATE TABLE only_in_a (x BIGINT)")
    assert pg.query(b, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [("0",)]
    with pytest.raises(RuntimeError, match="already exists"):
        postgres.new_database("cluster_a")
    with pytest.raises(ValueError):
        postgres.new_database('x"; DROP DATABASE postgres; --')


def test_local_only_with_a_password(postgres):
    assert pg.query(postgres.url, "SHOW listen_addresses") == [("127.0.0.1",)]
    assert pg.query(postgres.url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [("t",)]
    wrong = postgres.url.replace(postgres.url.split("//", 1)[1].split("@", 1)[0], "regserve:wrong")
    with pytest.raises(RuntimeError, match="password authentication failed"):
        pg.query(wrong, "SELECT 1")
