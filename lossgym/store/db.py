"""The SQLite database: engine, WAL mode, and serialized write transactions.

SQLite allows one writer at a time. We make that explicit: every transaction
starts with `BEGIN IMMEDIATE`, so a read-check-write sequence (such as "is
there budget left? then spend one test") can never interleave with another.
Together with WAL, readers are never blocked by that writer for long.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: no alembic.ini to keep in sync."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def make_engine(path: Path) -> Engine:
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": 60},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """Owns the engine; hands out one short transaction at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = make_engine(path)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Threads of one process queue here, in order, instead of in SQLite's busy
        # handler, which sleeps with growing back-off while the lock is held.
        self._writer = threading.RLock()

    def create_schema(self) -> None:
        """Bring the database to the newest schema by running the pending migrations."""
        with self._writer, self.engine.connect() as connection:
            command.upgrade(alembic_config(connection), "head")
            connection.commit()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any exception."""
        with self._writer, self._sessions() as db, db.begin():
            yield db

    def dispose(self) -> None:
        self.engine.dispose()
