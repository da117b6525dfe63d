"""How regserve connects to PostgreSQL, against a real server with TLS on (its own throwaway
cluster: a self-signed certificate for 127.0.0.1, and a pg_hba.conf that takes TLS connections
only): the sslmodes as libpq means them, the password from the URI, PGPASSWORD or a password
file, and no password ever printed."""
import os
import pathlib
import shutil
import subprocess
import urllib.parse

import pytest

from pg import PgCluster


def _run(regserve_bin, uri, *args, env=None, tmp):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "REGSERVE_"))}
    full_env.update(env or {})
    return subprocess.run(
        [regserve_bin, "--data-dir", str(tmp), "--backend-store-uri", uri, "models", "list", *args],
        capture_output=True, text=True, timeout=60, env=full_env,
    )


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A cluster that accepts TLS connections only, with a certificate for IP 127.0.0.1."""
    cluster = PgCluster()
    cluster.start()
    try:
        certs = tmp_path_factory.mktemp("certs")
        # A CA of our own, and the server's certificate (for IP 127.0.0.1) signed by it.
        def openssl(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60, cwd=certs)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=regserve test CA",
                "-keyout", "ca.key", "-out", "ca.crt")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                "-keyout", "server.key", "-out", "server.csr")
        (certs / "ext.cnf").write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")
        data = cluster.dir / "data"
        for name in ("server.crt", "server.key"):
            shutil.copy(certs / name, data / name)
            os.chmod(data / name, 0o600)
            shutil.chown(data / name, user=data.owner(), group=data.group())
        hba = data / "pg_hba.conf"
        lines = [ln for ln in hba.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        # Every TCP line becomes TLS-only (the unix socket lines stay for the scripts).
        hba.write_text("\n".join(ln.replace("host ", "hostssl ", 1) if ln.startswith("host ") else ln
                                 for ln in lines) + "\n")
        with open(data / "postgresql.auto.conf", "a") as conf:
            conf.write("ssl = on\n")
        cluster.restart()
        yield cluster, certs / "ca.crt"
    finally:
        cluster.stop()


def _without_password(url):
    u = urllib.parse.urlsplit(url)
    netloc = f"{u.username}@{u.hostname}:{u.port}"
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment)), u.password


def _with_query(url, query):
    return f"{url}?{query}" if query else url


def test_sslmodes_as_libpq_means_them(regserve_bin, tls_cluster, tmp_path):
    cluster, cert = tls_cluster
    url = cluster.new_database("tls_modes")
    password = urllib.parse.urlsplit(url).password
    # require: encrypted, the certificate not checked (a self-signed one is fine).
    out = _run(regserve_bin, _with_query(url, "sslmode=require"), tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    # prefer (the default) takes TLS when the server offers it.
    out = _run(regserve_bin, url, tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    # verify-full against the certificate as the root: checked, and 127.0.0.1 is its name.
    out = _run(regserve_bin, _with_query(url, f"sslmode=verify-full&sslrootcert={cert}"), tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    # verify-full against the system's roots: this certificate is not signed by any of them.
    out = _run(regserve_bin, _with_query(url, "sslmode=verify-full"), tmp=tmp_path)
    assert out.returncode != 0
    assert "certificate" in out.stderr.lower(), out.stderr
    assert password not in out.stderr
    # disable: the server takes TLS connections only, and says so.
    out = _run(regserve_bin, _with_query(url, "sslmode=disable"), tmp=tmp_path)
    assert out.returncode != 0
    assert "no encryption" in out.stderr or "pg_hba.conf" in out.stderr, out.stderr
    assert password not in out.stderr
    # A mode libpq does not know is refused before connecting, naming the URI without its password.
    out = _run(regserve_bin, _with_query(url, "sslmode=sometimes"), tmp=tmp_path)
    assert out.returncode != 0
    assert "sslmode" in out.stderr and password not in out.stderr, out.stderr


def test_passwords_from_the_uri_pgpassword_or_the_password_file(regserve_bin, tls_cluster, tmp_path):
    cluster, _ = tls_cluster
    url = cluster.new_database("tls_passwords")
    bare, password = _without_password(url)
    # No password anywhere: the server refuses, the message says why.
    out = _run(regserve_bin, bare, tmp=tmp_path, env={"HOME": str(tmp_path)})
    assert out.returncode != 0
    assert "password" in out.stderr.lower(), out.stderr
    out = _run(regserve_bin, bare, tmp=tmp_path, env={"PGPASSWORD": password})
    assert out.returncode == 0, out.stderr
    u = urllib.parse.urlsplit(url)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"# comment\nother:1:*:*:wrong\n127.0.0.1:{u.port}:tls_passwords:{u.username}:{password}\n")
    passfile.chmod(0o600)
    out = _run(regserve_bin, bare, tmp=tmp_path, env={"PGPASSFILE": str(passfile)})
    assert out.returncode == 0, out.stderr
    # ~/.pgpass when PGPASSFILE is not set.
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(passfile, home / ".pgpass")
    out = _run(regserve_bin, bare, tmp=tmp_path, env={"HOME": str(home)})
    assert out.returncode == 0, out.stderr
    # A wrong password: refused, and neither password is printed.
    wrong = url.replace(f":{password}@", ":not-the-password-1234@")
    out = _run(regserve_bin, wrong, tmp=tmp_path)
    assert out.returncode != 0
    assert "password authentication failed" in out.stderr, out.stderr
    assert password not in out.stderr and "not-the-password-1234" not in out.stderr, out.stderr
