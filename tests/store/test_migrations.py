"""Schema changes are migrations: the migrations build exactly what the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from lossgym.store.db import Database
from lossgym.store.models import Base


def test_migrations_match_the_models(tmp_path: Path) -> None:
    db = Database(tmp_path / "fresh.db")
    db.create_schema()
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"render_as_batch": True})
        assert compare_metadata(context, Base.metadata) == []
        assert context.get_current_revision() is not None
        assert set(inspect(connection).get_table_names()) >= set(Base.metadata.tables)
    db.dispose()


def test_upgrading_twice_is_a_no_op(tmp_path: Path) -> None:
    db = Database(tmp_path / "again.db")
    db.create_schema()
    db.create_schema()
    with db.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() is not None
    db.dispose()
