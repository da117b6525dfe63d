"""A throwaway PostgreSQL cluster for the tests, over scripts/pg-cluster (the script the Rust tests
use too), and `psql` to talk to it.

    cluster = PgCluster()
    url = cluster.start()                 # postgresql://regserve:PASSWORD@127.0.0.1:PORT/postgres
    db = cluster.new_database("reg_a")    # URL of a fresh, empty database
    cluster.query(db, "SELECT 1")         # [("1",)]
    cluster.restart()                     # same port, same data
    cluster.stop()                        # and its directory is removed

The cluster lives in a new directory under the system temp dir (not pytest's tmp_path): when the
tests run as root the server runs as the `postgres` OS user, which must reach the directory.
"""

import glob
import pathlib
import re
import shutil
import subprocess
import tempfile
import urllib.parse

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "pg-cluster"
TIMEOUT_S = 120
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# psql's unaligned output with separators no test value contains, and a marker for NULL.
FIELD_SEP, RECORD_SEP, NULL = "\x1f", "\x1e", "\x1d"


def psql_binary():
    found = shutil.which("psql") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"), reverse=True)), None)
    if not found:
        raise RuntimeError("no psql: install Debian's 'postgresql' package (scripts/test does)")
    return found


def with_database(url, name):
    """`url` with its database part replaced by `name`."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def psql(url, *args, input=None):
    """Runs psql on `url` (stops at the first error); returns its stdout, raises with stderr."""
    res = subprocess.run(
        [psql_binary(), "--no-psqlrc", "-X", "-w", "-v", "ON_ERROR_STOP=1", "-d", url, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if res.returncode != 0:
        raise RuntimeError(f"psql {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
    return res.stdout


def query(url, sql):
    """The rows of `sql` as tuples of strings (None for NULL)."""
    out = psql(url, "-A", "-t", "-q", "-F", FIELD_SEP, "-R", RECORD_SEP, "-P", "null=" + NULL, "-c", sql)
    out = out.rstrip("\n")
    if not out:
        return []
    return [tuple(None if f == NULL else f for f in rec.split(FIELD_SEP)) for rec in out.split(RECORD_SEP) if rec != ""]


def apply_file(url, path):
    """Runs an SQL file in one transaction, as the migration runner does."""
    psql(url, "-q", "--single-transaction", "-f", str(path))


class PgCluster:
    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="regserve-pg-"))
        self.url = None

    def _script(self, command):
        res = subprocess.run(
            [str(SCRIPT), command, str(self.dir)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        if res.returncode != 0:
            raise RuntimeError(f"scripts/pg-cluster {command} {self.dir} failed ({res.returncode}):\n{res.stderr}")
        lines = res.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def start(self):
        """initdb (first time) and start; returns the superuser URL of the `postgres` database."""
        self.url = self._script("start")
        return self.url

    def restart(self):
        """Stops and starts the server on the same port (the URL does not change)."""
        url = self._script("restart")
        if url != self.url:
            raise RuntimeError(f"the cluster came back as {url}, not {self.url}")
        return url

    def stop(self):
        """Stops the server and removes its directory (also after a failed start)."""
        try:
            if (self.dir / "data").exists():
                self._script("stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.url = None

    def new_database(self, name):
        """Creates database `name` (CREATE DATABASE) and returns its URL."""
        if not DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        psql(self.url, "-q", "-c", f'CREATE DATABASE "{name}"')
        return with_database(self.url, name)

    def query(self, url, sql):
        return query(url, sql)
