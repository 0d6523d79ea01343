"""Queries on the database: sessions, revisions, tool calls, tests, finals, usage and jobs.

Every function takes an open transaction. The env service, the worker and the
leaderboard call these; routes never do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from lossgym.store.models import (
    FinalRow,
    JobRow,
    RevisionRow,
    SessionRow,
    StageResultRow,
    TestRow,
    ToolCallRow,
    UsageRow,
    utcnow,
)


def get_session(db: Session, session_id: str) -> SessionRow | None:
    return db.get(SessionRow, session_id)


def session_by_token_hash(db: Session, token_hash: str) -> SessionRow | None:
    return db.scalars(select(SessionRow).where(SessionRow.token_hash == token_hash)).one_or_none()


def add_tool_call(
    db: Session, session_id: str, tool: str, arguments: dict[str, Any], ok: bool, text: str
) -> ToolCallRow:
    seq = _next_seq(db, ToolCallRow, session_id)
    row = ToolCallRow(
        session_id=session_id, seq=seq, tool=tool, arguments=arguments, ok=ok, text=text
    )
    db.add(row)
    return row


def add_revision(
    db: Session, session_id: str, files: dict[str, str], regions: dict[str, Any], content_hash: str
) -> RevisionRow:
    seq = _next_seq(db, RevisionRow, session_id)
    row = RevisionRow(
        session_id=session_id, seq=seq, files=files, regions=regions, content_hash=content_hash
    )
    db.add(row)
    db.flush()
    return row


def latest_revision(db: Session, session_id: str) -> RevisionRow:
    stmt = (
        select(RevisionRow)
        .where(RevisionRow.session_id == session_id)
        .order_by(RevisionRow.seq.desc())
        .limit(1)
    )
    return db.scalars(stmt).one()


def tool_calls(db: Session, session_id: str) -> list[ToolCallRow]:
    stmt = select(ToolCallRow).where(ToolCallRow.session_id == session_id).order_by(ToolCallRow.seq)
    return list(db.scalars(stmt))


def revisions(db: Session, session_id: str) -> list[RevisionRow]:
    stmt = select(RevisionRow).where(RevisionRow.session_id == session_id).order_by(RevisionRow.seq)
    return list(db.scalars(stmt))


def add_test_with_job(db: Session, session: SessionRow, revision: RevisionRow) -> TestRow:
    """Record the session's next test and queue the job that runs it.

    Numbers follow the tests recorded, not the budget spent: a test refunded
    after an infrastructure error keeps its number.
    """
    last = db.scalar(select(func.max(TestRow.n)).where(TestRow.session_id == session.id))
    test = TestRow(session_id=session.id, n=(last or 0) + 1, revision_id=revision.id)
    db.add(test)
    db.flush()
    db.add(JobRow(test_id=test.id))
    return test


def get_test(db: Session, session_id: str, n: int) -> TestRow | None:
    stmt = select(TestRow).where(TestRow.session_id == session_id, TestRow.n == n)
    return db.scalars(stmt).one_or_none()


def get_test_by_id(db: Session, test_id: int) -> TestRow:
    return db.get_one(TestRow, test_id)


def tests_of(db: Session, session_id: str, with_stages: bool = False) -> list[TestRow]:
    """The session's tests in order; `with_stages` also loads their stages and revisions."""
    stmt = select(TestRow).where(TestRow.session_id == session_id).order_by(TestRow.n)
    if with_stages:
        stmt = stmt.options(selectinload(TestRow.stages), selectinload(TestRow.revision))
    return list(db.scalars(stmt))


def unfinished_tests(db: Session, session_id: str) -> int:
    stmt = select(func.count(TestRow.id)).where(
        TestRow.session_id == session_id, TestRow.status.in_(("queued", "running"))
    )
    return db.scalar(stmt) or 0


def get_final(db: Session, session_id: str) -> FinalRow | None:
    return db.scalars(select(FinalRow).where(FinalRow.session_id == session_id)).one_or_none()


def add_final(db: Session, session_id: str, test: TestRow, kind: str) -> FinalRow:
    row = FinalRow(session_id=session_id, test_id=test.id, kind=kind)
    db.add(row)
    db.flush()
    return row


def get_usage(db: Session, session_id: str) -> UsageRow | None:
    return db.get(UsageRow, session_id)


def put_usage(db: Session, session_id: str, totals: dict[str, Any]) -> UsageRow:
    """Set the session's usage totals (`UsageRow` columns by name), creating its row once."""
    row = db.get(UsageRow, session_id)
    if row is None:
        row = UsageRow(session_id=session_id, **totals)
        db.add(row)
    else:
        for name, value in totals.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
    db.flush()
    return row


# ── Jobs ────────────────────────────────────────────────────────────────────


def requeue_expired(db: Session) -> list[int]:
    """Put back jobs whose worker stopped heartbeating (crashed or was killed); their ids."""
    expired = list(
        db.scalars(
            select(JobRow.id).where(JobRow.status == "running", JobRow.lease_until < utcnow())
        )
    )
    if expired:
        db.execute(
            update(JobRow)
            .where(JobRow.id.in_(expired))
            .values(status="queued", worker_id=None, lease_until=None, gpus=None, host=None)
        )
    return expired


def gpu_holdings(db: Session) -> list[tuple[str | None, str | None, datetime | None]]:
    """(host, gpus, lease_until) of every running job: what the claim must not hand out."""
    stmt = select(JobRow.host, JobRow.gpus, JobRow.lease_until).where(JobRow.status == "running")
    return [(host, gpus, lease) for host, gpus, lease in db.execute(stmt)]


Allocate = Callable[[str, str], list[str] | None]


def claim_next_job(
    db: Session,
    worker_id: str,
    lease_s: float,
    allocate: Allocate | None = None,
    host: str | None = None,
) -> JobRow | None:
    """The oldest queued job that fits, now leased to `worker_id`; None when none does.

    `allocate(task, profile)` gives the GPU ids for a job of such a session, or
    None when it does not fit now; without it every job fits with no GPUs.
    Policy: first come, first served among the jobs that fit. A job that does
    not fit stays queued and later, smaller jobs go ahead of it; it runs once
    enough GPUs are free at the same time (no reservation against starvation).
    """
    stmt = (
        select(JobRow.id, SessionRow.task, SessionRow.profile)
        .join(TestRow, TestRow.id == JobRow.test_id)
        .join(SessionRow, SessionRow.id == TestRow.session_id)
        .where(JobRow.status == "queued")
        .order_by(JobRow.id)
    )
    for job_id, task, profile in db.execute(stmt).all():
        gpus = [] if allocate is None else allocate(task, profile)
        if gpus is not None:
            job = db.get_one(JobRow, job_id)
            job.status, job.worker_id, job.attempts = "running", worker_id, job.attempts + 1
            job.gpus, job.host = ",".join(gpus), host
            job.started_at = utcnow()
            job.lease_until = utcnow() + timedelta(seconds=lease_s)
            return job
    return None


def renew_lease(db: Session, job_id: int, worker_id: str, lease_s: float) -> bool:
    """Extend the lease; False when the job is no longer ours (it was requeued)."""
    result = db.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.worker_id == worker_id, JobRow.status == "running")
        .values(lease_until=utcnow() + timedelta(seconds=lease_s))
    )
    return (result.rowcount or 0) == 1  # type: ignore[attr-defined]


def clear_stage_results(db: Session, test_id: int) -> None:
    for row in db.scalars(select(StageResultRow).where(StageResultRow.test_id == test_id)):
        db.delete(row)


def _next_seq(db: Session, model: type[ToolCallRow] | type[RevisionRow], session_id: str) -> int:
    current = db.scalar(select(func.max(model.seq)).where(model.session_id == session_id))
    return (current or 0) + 1


def get_job_for_test(db: Session, test_id: int) -> JobRow:
    return db.scalars(select(JobRow).where(JobRow.test_id == test_id)).one()
