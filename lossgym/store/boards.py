"""The leaderboard's read queries. Every function takes an open transaction.

The board of a (task, profile) is read in four set-wise queries (sessions,
finals, their stage times, unfinished tests), never one query per session, and
never loads the sessions' workspace column: the page must stay fast with
thousands of sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lossgym.store.models import (
    FinalRow,
    SessionRow,
    StageResultRow,
    TestRow,
)

UNISOLATED = "local"  # the runner name of LOSSGYM_ISOLATION=none


@dataclass(frozen=True)
class SessionResult:
    """What the ranking needs to know about one session (built from the store's rows)."""

    session_id: str
    agent: str
    seed: int
    status: str  # the session's own: active | ended
    created_at: datetime
    tests_used: int
    ended_reason: str | None = None
    unfinished_tests: int = 0
    final_test: int | None = None
    final_kind: str | None = None  # submitted | auto
    metrics: dict[str, float] = field(default_factory=dict)  # the final test's, hidden included
    elapsed_s: float = 0.0  # the final test's stages, summed
    unisolated: bool = False  # a test of it ran without a sandbox (LOSSGYM_ISOLATION=none)


@dataclass(frozen=True)
class _Final:
    test_id: int
    n: int
    kind: str
    metrics: dict[str, Any]


def session_results(db: Session, task: str, profile: str) -> list[SessionResult]:
    """Every session of (task, profile) with its final test's metrics and stage time."""
    in_board = (SessionRow.task == task, SessionRow.profile == profile)
    sessions = db.execute(
        select(
            SessionRow.id, SessionRow.agent, SessionRow.seed, SessionRow.status,
            SessionRow.created_at, SessionRow.tests_used, SessionRow.ended_reason,
        ).where(*in_board)
    ).all()  # fmt: skip
    finals = _finals(db, in_board)
    elapsed = _final_elapsed(db, in_board)
    unfinished = _unfinished(db, in_board)
    unisolated = _unisolated(db, in_board)
    results = []
    for sid, agent, seed, status, created_at, tests_used, ended_reason in sessions:
        final = finals.get(sid)
        results.append(
            SessionResult(
                session_id=sid, agent=agent, seed=seed, status=status, created_at=created_at,
                tests_used=tests_used, ended_reason=ended_reason,
                unfinished_tests=unfinished.get(sid, 0),
                final_test=None if final is None else final.n,
                final_kind=None if final is None else final.kind,
                metrics={} if final is None else dict(final.metrics),
                elapsed_s=0.0 if final is None else elapsed.get(final.test_id, 0.0),
                unisolated=sid in unisolated,
            )
        )  # fmt: skip
    return results


def _finals(db: Session, in_board: Sequence[Any]) -> dict[str, _Final]:
    rows = db.execute(
        select(FinalRow.session_id, FinalRow.kind, TestRow.id, TestRow.n, TestRow.metrics)
        .join(TestRow, TestRow.id == FinalRow.test_id)
        .join(SessionRow, SessionRow.id == FinalRow.session_id)
        .where(*in_board)
    ).all()
    return {sid: _Final(test_id, n, kind, metrics or {}) for sid, kind, test_id, n, metrics in rows}


def _final_elapsed(db: Session, in_board: Sequence[Any]) -> dict[int, float]:
    rows = db.execute(
        select(StageResultRow.test_id, func.sum(StageResultRow.elapsed_s))
        .join(FinalRow, FinalRow.test_id == StageResultRow.test_id)
        .join(SessionRow, SessionRow.id == FinalRow.session_id)
        .where(*in_board)
        .group_by(StageResultRow.test_id)
    ).all()
    return {test_id: float(total or 0.0) for test_id, total in rows}


def _unfinished(db: Session, in_board: Sequence[Any]) -> dict[str, int]:
    rows = db.execute(
        select(TestRow.session_id, func.count(TestRow.id))
        .join(SessionRow, SessionRow.id == TestRow.session_id)
        .where(*in_board, TestRow.status.in_(("queued", "running")))
        .group_by(TestRow.session_id)
    ).all()
    return {sid: int(count) for sid, count in rows}


def _unisolated(db: Session, in_board: Sequence[Any]) -> set[str]:
    """Sessions with a test that ran without a sandbox (the runner "local")."""
    rows = db.execute(
        select(TestRow.session_id)
        .join(SessionRow, SessionRow.id == TestRow.session_id)
        .where(*in_board, TestRow.sandbox == UNISOLATED)
        .distinct()
    ).scalars()
    return set(rows)


def agent_final_curves(db: Session, task: str, profile: str, agent: str) -> list[list[Any]]:
    """The train-stage curves of `agent`'s final tests on (task, profile), e.g. a baseline's."""
    stmt = (
        select(StageResultRow.curve)
        .join(FinalRow, FinalRow.test_id == StageResultRow.test_id)
        .join(SessionRow, SessionRow.id == FinalRow.session_id)
        .where(
            SessionRow.task == task,
            SessionRow.profile == profile,
            SessionRow.agent == agent,
            StageResultRow.position == 0,
        )
    )
    return [list(curve or []) for curve in db.scalars(stmt)]
