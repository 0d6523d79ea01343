"""The SQLite database: engine, WAL mode, serialized writes and lock-free reads.

SQLite allows one writer at a time. We make that explicit: every write
transaction starts with `BEGIN IMMEDIATE`, so a read-check-write sequence
(such as "is there budget left? then spend one test") can never interleave
with another. Reads that change nothing (GETs, polls of a running test, the
board) take `read()` instead: a deferred transaction on a `query_only`
connection, which in WAL mode sees a consistent snapshot and neither waits
for the writer nor holds it up.
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


def make_engine(path: Path, read_only: bool = False) -> Engine:
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
        if read_only:  # a write through this engine is an error, not a silent lock grab
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


class Database:
    """Owns the engine; hands out one short transaction at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = make_engine(path)
        self.read_engine = make_engine(path, read_only=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self.read_engine, expire_on_commit=False)
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

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A consistent snapshot for reading; takes no write lock and may not write."""
        with self._readers() as db:  # closing it rolls back: there is nothing to commit
            yield db

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()
