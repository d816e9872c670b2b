"""Fixtures of the registry tests: a throwaway PostgreSQL cluster, started once per session
when its binaries exist, and `url`: an empty database on SQLite and on that cluster."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the session; skipped without its
    binaries. As root, initdb refuses to run, so the cluster runs as the `postgres` user."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not on PATH")
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root (initdb refuses) and there is no 'postgres' user")
        if runuser is None:
            pytest.skip("running as root (initdb refuses) and runuser is not on PATH")
        as_user = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="tuneforge-pg-"))  # not tmp_path: root-only (0700)
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", free_port()
    try:
        init = subprocess.run(
            [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
             "-E", "UTF8"], capture_output=True, text=True, timeout=60)
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
        start = subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "30",
             "-o", f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
            capture_output=True, text=True, timeout=45)
        if start.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            pytest.skip(f"PostgreSQL did not start within 30 s: {log.strip()[-300:]}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"],
                           capture_output=True, timeout=30)
        shutil.rmtree(root, ignore_errors=True)



@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The session's PostgreSQL, with every table (the version table too) dropped after the
    test, so the next test opens an empty database."""
    yield postgres_server
    engine = create_engine(postgres_server)
    try:
        tables = MetaData()
        tables.reflect(engine)
        tables.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry URL nobody has opened yet: a SQLite file in a missing folder, or the
    session's PostgreSQL, emptied again after the test (postgres_url)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'missing' / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))
