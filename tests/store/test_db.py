"""Writes are serialized; reads take a snapshot that neither waits for a writer nor can write."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from lossgym.store.db import Database
from lossgym.store.models import SessionRow


def _session(sid: str) -> SessionRow:
    return SessionRow(
        id=sid, token_hash=sid * 4, task="t", profile="p", agent="a", seed=1,
        budget_tests=3, budget_steps=50, workspace={},
    )  # fmt: skip


def test_a_read_does_not_wait_for_a_writer_and_sees_a_snapshot(db: Database) -> None:
    with db.transaction() as tx:
        tx.add(_session("a"))
    inside, release, read_done = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:
        with db.transaction() as tx:
            tx.add(_session("b"))
            tx.flush()
            inside.set()  # holds the write lock (BEGIN IMMEDIATE and the process lock) ...
            release.wait(timeout=60)  # ... until the reader is done

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(timeout=30)
    with db.read() as rx:  # would block here if reads took the write lock
        ids = set(rx.scalars(select(SessionRow.id)))
        read_done.set()
    release.set()
    thread.join(timeout=30)
    assert read_done.is_set() and ids == {"a"}  # the writer's row is not committed yet
    with db.read() as rx:
        assert set(rx.scalars(select(SessionRow.id))) == {"a", "b"}


def test_a_read_cannot_write(db: Database) -> None:
    with pytest.raises(OperationalError, match="readonly"), db.read() as rx:
        rx.add(_session("c"))
        rx.flush()
    with db.read() as rx:
        assert rx.scalars(select(SessionRow.id)).all() == []


def test_writes_are_serialized(db: Database) -> None:
    """Read-check-write sequences in threads never interleave: no update is lost."""
    with db.transaction() as tx:
        tx.add(_session("counter"))

    def bump() -> None:
        for _ in range(20):
            with db.transaction() as tx:
                row = tx.get_one(SessionRow, "counter")
                row.steps_used = row.steps_used + 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with db.read() as rx:
        assert rx.get_one(SessionRow, "counter").steps_used == 80
