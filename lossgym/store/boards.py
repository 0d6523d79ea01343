"""The leaderboard's read queries. Every function takes an open transaction.

The board of a (task, profile) is read in a few set-wise queries (sessions,
finals, their stage times, unfinished tests, usage), never one query per session, and
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
    UsageRow,
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
    usage: dict[str, Any] | None = None  # UsageRow.to_dict(), when the agent reported one


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
    usage = _usage(db, in_board)
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
                unisolated=sid in unisolated, usage=usage.get(sid),
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


def _usage(db: Session, in_board: Sequence[Any]) -> dict[str, dict[str, Any]]:
    rows = db.scalars(
        select(UsageRow).join(SessionRow, SessionRow.id == UsageRow.session_id).where(*in_board)
    )
    return {row.session_id: row.to_dict() for row in rows}


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


@dataclass(frozen=True)
class CurveEntry:
    """One session's loss curve for a comparison: its final test's, else its latest valid one's."""

    session_id: str
    task: str
    profile: str
    agent: str
    seed: int
    status: str  # the session's own: active | ended
    test: int | None = None  # the test whose curve this is
    final: bool = False  # that test is the session's final
    metrics: dict[str, Any] = field(default_factory=dict)
    curve: list[Any] = field(default_factory=list)  # the train stage's [[step, train, monitor]]


def session_curves(db: Session, session_ids: Sequence[str]) -> dict[str, CurveEntry]:
    """The known sessions among `session_ids`, each with the train-stage curve of its final
    test (without a final: of its latest valid test; none: no curve). Three queries in all."""
    sessions = db.execute(
        select(
            SessionRow.id, SessionRow.task, SessionRow.profile, SessionRow.agent,
            SessionRow.seed, SessionRow.status,
        ).where(SessionRow.id.in_(session_ids))
    ).all()  # fmt: skip
    shown = _shown_tests(db, session_ids)
    entries = {}
    for sid, task, profile, agent, seed, status in sessions:
        entries[sid] = CurveEntry(sid, task, profile, agent, seed, status, *shown.get(sid, ()))
    return entries


def _shown_tests(
    db: Session, session_ids: Sequence[str]
) -> dict[str, tuple[int, bool, dict[str, Any], list[Any]]]:
    """Per session, (n, is final, metrics, curve) of its final test, else its latest valid one."""
    finals = dict(
        db.execute(
            select(FinalRow.session_id, FinalRow.test_id).where(
                FinalRow.session_id.in_(session_ids)
            )
        ).all()
    )
    on_stage_0 = (StageResultRow.test_id == TestRow.id) & (StageResultRow.position == 0)
    tests = db.execute(
        select(TestRow.session_id, TestRow.id, TestRow.n, TestRow.metrics, StageResultRow.curve)
        .outerjoin(StageResultRow, on_stage_0)
        .where(TestRow.session_id.in_(session_ids), TestRow.valid.is_(True))
        .order_by(TestRow.n)
    ).all()
    shown: dict[str, tuple[int, bool, dict[str, Any], list[Any]]] = {}
    for sid, test_id, n, metrics, curve in tests:
        is_final = finals.get(sid) == test_id
        if is_final or sid not in finals:  # in order of n: the latest valid test wins
            shown[sid] = (n, is_final, dict(metrics or {}), list(curve or []))
    return shown
