"""PostgreSQL for tests: one cluster per test session, a fresh database per test.

The cluster is made on the spot (`initdb` into a temp dir, `pg_ctl start` on a free port on
127.0.0.1, run as the `postgres` user when the tests run as root) and stopped at session end,
even when tests fail. `CORRAL_TEST_PG_URL` (a URL to a database on an existing server, as a
user allowed to CREATE DATABASE) uses that server instead. Without either, PostgreSQL tests
are skipped, saying what to install.

Registered for the whole suite by `tests/conftest.py` (`pytest_plugins`), so every module
shares the one cluster.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

PG_BIN = Path(os.environ.get("CORRAL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_URL_VAR = "CORRAL_TEST_PG_URL"
PG_PACKAGES = "postgresql (Debian: apt-get install -y postgresql)"


@dataclass(frozen=True)
class PgServer:
    """A server the tests may create and drop databases on."""

    admin_url: str  # libpq URL of a database to run CREATE/DROP DATABASE from

    def url_of(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(False)

    def admin(self, sql: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        name = f"corral_test_{uuid.uuid4().hex[:12]}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(command: list[str]) -> list[str]:
    """Root may not run PostgreSQL: run its programs as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str]) -> None:
    result = subprocess.run(_as_postgres(command), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


@dataclass
class PgCluster:
    """A throw-away cluster: data, socket and log in one temp dir."""

    root: Path
    port: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self) -> PgServer:
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres"]
        _run([*initdb, "--auth=trust", "-E", "UTF8", "--no-sync"])
        # A test cluster: durability off (fsync) makes database creation fast.
        options = (
            f"-c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off -c max_connections=200"
        )
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log")]
        for attempt in range(3):  # a free port may be taken between probe and bind
            self.port = _free_port()
            try:
                _run([*pg_ctl, "-o", f"{options} -p {self.port}", "-w", "-t", "30", "start"])
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        return PgServer(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    given = os.environ.get(PG_URL_VAR)
    if given:
        url = make_url(given).set(drivername="postgresql")
        yield PgServer(url.render_as_string(hide_password=False))
        return
    if not (PG_BIN / "initdb").exists():
        pytest.skip(
            f"PostgreSQL is not installed ({PG_BIN}/initdb missing): install "
            f"{PG_PACKAGES}, or set {PG_URL_VAR} to a server's URL"
        )
    cluster = PgCluster(Path(tempfile.mkdtemp(prefix="corral-pg-", dir="/tmp")))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh database, dropped after the test (connections and all)."""
    name = pg_server.create_database()
    try:
        yield pg_server.url_of(name)
    finally:
        pg_server.drop_database(name)
