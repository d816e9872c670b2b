"""The registry's tables and its engine: SQLite under TUNEFORGE_HOME, or any SQLAlchemy URL.

The classes below are the reference schema; migrations/versions/ builds it step by step, and
opening a database upgrades it to the newest step (tests/registry/test_migrate.py checks that
the two agree). A schema change therefore edits a class here and adds a version file there.

Several processes (workers, the server, the CLI) write to one SQLite file at once, so every
SQLite connection runs in WAL mode with a 30 s busy timeout, and each write transaction takes
the write lock at BEGIN (BEGIN IMMEDIATE): a read-then-write such as "next version number"
can never interleave with another writer's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Connection,
    Double,
    Engine,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tuneforge.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30
READ_ONLY = "tuneforge_read_only"  # execution option: this connection's transactions only read
MIGRATIONS = Path(__file__).with_name("migrations")
# our own name, so a PostgreSQL database shared with another Alembic project keeps both apart
VERSION_TABLE = "tuneforge_registry_version"
# the key of the PostgreSQL advisory lock held while migrating: "tuneforg" in ASCII
MIGRATION_LOCK_KEY = 0x74756E65666F7267


class Base(DeclarativeBase):
    """Declarative base of the registry tables."""


class DatasetRow(Base):
    """A dataset file known by path and name; `id` is "ds-" plus 10 hex characters."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("path", "name"), Index("ix_datasets_name", "name"))

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String)
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str | None] = mapped_column(String)
    records: Mapped[int | None]
    created: Mapped[float] = mapped_column(Double)


class RunRow(Base):
    """A training run; its files live in `run_dir`, this row only indexes them."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_created", "created"), Index("ix_runs_status", "status"))

    id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str | None] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    stage: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    run_dir: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str | None] = mapped_column(Text)
    # no foreign key: a parent may be registered after its child, or live in another registry
    parent_run_id: Mapped[str | None] = mapped_column(String)
    dataset_ids: Mapped[list[str]] = mapped_column(JSON)
    created: Mapped[float] = mapped_column(Double)
    updated: Mapped[float] = mapped_column(Double)


class ModelRow(Base):
    """A published model name; integer ids, as Qianfan's SDK uses."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    created: Mapped[float] = mapped_column(Double)


class ModelVersionRow(Base):
    """Version N of a model: what was published, from which run, with its lineage frozen."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int]
    run_id: Mapped[str | None] = mapped_column(String)
    base_model: Mapped[str] = mapped_column(Text)
    adapter_path: Mapped[str | None] = mapped_column(Text)
    model_path: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    lineage: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Double)


class ServiceRow(Base):
    """A serving process (or group of them) and where it listens."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    service_type: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    endpoints: Mapped[list[str]] = mapped_column(JSON)
    pids: Mapped[list[int]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[float] = mapped_column(Double)
    updated: Mapped[float] = mapped_column(Double)


class JobRow(Base):
    """A job of the training service: a queued, running or finished trainer run.

    `id` is the run id (the REST face's task_id, the OpenAI face's job id); the run directory
    holds the trainer's files, this row the queue's state and the latest progress, written
    by the worker so that status requests never read the run's files.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created"),
                      Index("ix_jobs_created", "created"))

    id: Mapped[str] = mapped_column(String, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    run_dir: Mapped[str] = mapped_column(Text)
    output_dir: Mapped[str | None] = mapped_column(Text)
    base_model: Mapped[str | None] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    worker_pid: Mapped[int | None]
    attempts: Mapped[int]
    created: Mapped[float] = mapped_column(Double)
    started: Mapped[float | None] = mapped_column(Double)
    finished: Mapped[float | None] = mapped_column(Double)
    updated: Mapped[float] = mapped_column(Double)


def create_registry_engine(url: str) -> Engine:
    """An engine for `url`, its database upgraded to the newest migration (upgrade_to_head).

    Raises:
        ConfigError: `url` is not a SQLAlchemy URL, or names a dialect or driver that is not
            installed; the error names the field `db_url`.
    """
    try:
        parsed = make_url(url)
        engine = _sqlite_engine(parsed) if parsed.get_backend_name() == "sqlite" else (
            create_engine(parsed)
        )
    except (ArgumentError, ImportError) as exc:
        raise ConfigError.one(
            "expected a SQLAlchemy URL such as sqlite:////path/registry.db or "
            f"postgresql+psycopg://user@host/db, got {_shown(url)!r} ({exc})",
            field="db_url", source="settings",
        ) from None
    try:
        upgrade_to_head(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config for the registry, built in code (there is no alembic.ini).

    migrations/env.py runs on `connection`. To write the next migration, point it at a
    database upgraded to head and call `alembic.command.revision(alembic_config(connection),
    message, autogenerate=True)`, then read and trim the file it writes to versions/.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Apply every migration the database lacks, in one transaction that first takes a lock.

    Several processes may open an empty database at once; the lock makes the first one
    migrate while the others wait, then find the version table at head and do nothing.
    SQLite: the transaction begins with BEGIN IMMEDIATE (see _sqlite_engine), which holds the
    database's write lock until commit. PostgreSQL: pg_advisory_xact_lock, released at
    commit; its DDL is transactional, so a failed migration leaves nothing behind. Other
    dialects migrate without a lock. A database made by create_all before migrations existed
    (tables, no version table) is stamped as the first migration, whose schema it has.
    """
    # imported here, not at the top: alembic brings mako and pygments (~0.2 s) to every
    # `import tuneforge.registry`, also in commands that never open one
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
        current = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
        config = alembic_config(connection)
        if current is None and inspect(connection).has_table(RunRow.__tablename__):
            logger.info("registry at %s predates migrations: stamping it 0001",
                        engine.url.render_as_string(hide_password=True))
            command.stamp(config, "0001")
        command.upgrade(config, "head")


def _sqlite_engine(url: URL) -> Engine:
    """SQLite that several processes may write at once without corrupting it or each other.

    SQLAlchemy's pysqlite recipe: the driver emits no BEGIN of its own (isolation_level None)
    and a "begin" listener emits BEGIN IMMEDIATE, taking the write lock before the first read
    of a write transaction. Connections with the READ_ONLY option begin a plain deferred
    transaction, so readers never wait for writers (WAL).
    """
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _use_wal(cursor: Any) -> None:
    """Switch a new database to WAL. Switching takes a lock that busy_timeout does not wait
    for, so two processes opening one new file at once may see "database is locked" here:
    wait and try again (the other one has usually switched it by then)."""
    import sqlite3

    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _shown(url: str) -> str:
    """`url` with any password masked, for error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
