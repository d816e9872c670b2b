"""The registry's Alembic migrations: an empty database upgraded to head has exactly the
tables of db.py, reopening changes nothing, a pre-migration database is adopted, and several
processes may open an empty database at once. On SQLite and, when its binaries exist, on a
throwaway PostgreSQL (conftest.py)."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.synchronize
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, column, create_engine, insert, inspect, select, table
from sqlalchemy.engine import make_url

from tuneforge.registry import Registry
from tuneforge.registry.db import (
    VERSION_TABLE,
    Base,
    RunRow,
    alembic_config,
    create_registry_engine,
)

OPENERS = 6
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def schema_differences(engine: Engine) -> list[object]:
    """What autogenerate would change to make the database match db.py; [] when equal."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def versions(engine: Engine) -> list[str]:
    """Every row of the version table: one, the head, once migrated."""
    version_table = table(VERSION_TABLE, column("version_num"))
    with engine.connect() as connection:
        return list(connection.scalars(select(version_table.c.version_num)))


def test_the_migrations_form_one_chain_from_0001() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert HEAD is not None
    assert [rev.revision for rev in script.walk_revisions()][-1] == "0001"
    assert len(script.get_heads()) == 1


def test_an_empty_database_migrates_to_exactly_the_tables_of_db_py(url: str) -> None:
    engine = create_registry_engine(url)
    try:
        assert schema_differences(engine) == []
        assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, VERSION_TABLE}
        assert versions(engine) == [HEAD]
    finally:
        engine.dispose()


def test_opening_a_migrated_database_again_is_a_no_op(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alembic.runtime.migration")
    first = Registry(url)
    first.save_run("r1", stage="sft", status="running", run_dir="/runs/r1")
    first.close()
    assert "Running upgrade  -> 0001" in caplog.text
    caplog.clear()

    again = Registry(url)
    try:
        assert "Running upgrade" not in caplog.text
        assert again.get_run("r1").status == "running"
        assert versions(again._engine) == [HEAD]
        assert schema_differences(again._engine) == []
    finally:
        again.close()


def test_a_database_made_before_migrations_is_stamped_and_kept(url: str) -> None:
    # the registry's first build called create_all (the tables of 0001: no jobs yet) and
    # kept no version table
    database = make_url(url).database
    if url.startswith("sqlite") and database:
        Path(database).parent.mkdir(parents=True)
    old = create_engine(url)
    Base.metadata.create_all(old, tables=[t for name, t in Base.metadata.tables.items()
                                          if name != "jobs"])
    with old.begin() as connection:
        connection.execute(insert(RunRow).values(
            id="r1", kind="trainer", stage="sft", status="succeeded", run_dir="/runs/r1",
            dataset_ids=[], created=1.0, updated=1.0))
    old.dispose()

    registry = Registry(url)
    try:
        assert registry.get_run("r1").status == "succeeded"
        assert versions(registry._engine) == [HEAD]
        assert schema_differences(registry._engine) == []
    finally:
        registry.close()


def _open_at_once(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    """One of several processes opening the same empty database the moment all are ready."""
    barrier.wait(timeout=60)
    Registry(url).close()


def test_several_processes_opening_an_empty_database_all_succeed(url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(OPENERS)
    openers = [context.Process(target=_open_at_once, args=(url, barrier))
               for _ in range(OPENERS)]
    for opener in openers:
        opener.start()
    try:
        deadline = time.monotonic() + 90
        for opener in openers:
            opener.join(timeout=max(0.0, deadline - time.monotonic()))
        assert [o.exitcode for o in openers] == [0] * OPENERS
    finally:
        for opener in openers:
            if opener.is_alive():
                opener.kill()
                opener.join(timeout=10)

    engine = create_engine(url)
    try:
        assert versions(engine) == [HEAD]
        assert schema_differences(engine) == []
    finally:
        engine.dispose()
