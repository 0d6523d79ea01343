"""The database tables (SQLAlchemy 2 declarative models).

Every agent-visible text is stored as it was shown (`ToolCall.text`), so a
session's transcript can be replayed exactly. JSON columns hold small
structured values (metrics, curves, workspace state); big logs stay on disk
and only their tail and path are stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class SessionRow(Base):
    """One agent episode on one (task, profile)."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    task: Mapped[str] = mapped_column(String(100))
    profile: Mapped[str] = mapped_column(String(100))
    agent: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | ended
    ended_reason: Mapped[str | None] = mapped_column(String(40))
    budget_tests: Mapped[int]
    budget_steps: Mapped[int]
    tests_used: Mapped[int] = mapped_column(default=0)
    steps_used: Mapped[int] = mapped_column(default=0)
    workspace: Mapped[dict[str, Any]]  # Workspace.to_state(): files, regions, undo history
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]

    tests: Mapped[list[TestRow]] = relationship(back_populates="session", order_by="TestRow.n")


class ToolCallRow(Base):
    """One tool call and the exact text the agent was shown: the transcript."""

    __tablename__ = "tool_calls"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    seq: Mapped[int]
    tool: Mapped[str] = mapped_column(String(40))
    arguments: Mapped[dict[str, Any]]
    ok: Mapped[bool]
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RevisionRow(Base):
    """A snapshot of the workspace after each change (revision 0 = the template)."""

    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    seq: Mapped[int]
    content_hash: Mapped[str] = mapped_column(String(64))
    files: Mapped[dict[str, Any]]
    regions: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TestRow(Base):
    """One spent test: the workspace revision it ran and its outcome."""

    __tablename__ = "tests"
    __test__ = False  # not a pytest test class
    __table_args__ = (UniqueConstraint("session_id", "n"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    n: Mapped[int]
    revision_id: Mapped[int] = mapped_column(ForeignKey("revisions.id"))
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued|running|done|failed
    valid: Mapped[bool] = mapped_column(default=False)  # every stage finished with finite metrics
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The runner that ran it: "bwrap", "docker", or "local" (no isolation, an opt-in).
    sandbox: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    session: Mapped[SessionRow] = relationship(back_populates="tests")
    revision: Mapped[RevisionRow] = relationship()
    stages: Mapped[list[StageResultRow]] = relationship(order_by="StageResultRow.position")


class StageResultRow(Base):
    """The outcome of one stage (train, lm-eval) of one test."""

    __tablename__ = "stage_results"
    __table_args__ = (UniqueConstraint("test_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    test_id: Mapped[int] = mapped_column(ForeignKey("tests.id"), index=True)
    position: Mapped[int]
    label: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))  # ok | failed | timeout | invalid
    exit_code: Mapped[int | None]
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)  # trusted evaluator only
    curve: Mapped[list[Any]] = mapped_column(default=list)  # [[step, train_loss, monitor_loss]]
    train_lines: Mapped[list[Any]] = mapped_column(default=list)  # last TRAIN_METRICS lines
    log_tail: Mapped[str] = mapped_column(Text, default="")
    log_path: Mapped[str] = mapped_column(Text, default="")
    train_s: Mapped[float] = mapped_column(default=0.0)
    eval_s: Mapped[float] = mapped_column(default=0.0)
    elapsed_s: Mapped[float] = mapped_column(default=0.0)
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)  # seeds, hashes, versions


class JobRow(Base):
    """Work for a worker: run every stage of one test. Survives restarts."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    test_id: Mapped[int] = mapped_column(ForeignKey("tests.id"), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued|running|done
    worker_id: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    # Whole GPUs a running job holds ("0,1"; "" for none) on `host`. Only rows
    # still running with a live lease count (see sandbox/gpus.py).
    gpus: Mapped[str | None] = mapped_column(String(200))
    host: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class FinalRow(Base):
    """The test a session is scored by. One per session, enforced by the schema."""

    __tablename__ = "finals"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), unique=True)
    test_id: Mapped[int] = mapped_column(ForeignKey("tests.id"))
    kind: Mapped[str] = mapped_column(String(20))  # submitted | auto
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRow(Base):
    """What an agent's model spent on one session, as the agent reports it (cumulative totals).

    One row per session at most; each report replaces the totals, which only grow.
    """

    __tablename__ = "session_usage"

    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    input_tokens: Mapped[int]
    output_tokens: Mapped[int]
    requests: Mapped[int]
    cost_usd: Mapped[float | None]  # None: the agent does not know its price
    transcript: Mapped[str | None] = mapped_column(String(500))  # the agent's JSONL file name
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """The public shape of a usage record (the same in every reply and record)."""
        return {
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "requests": self.requests,
            "cost_usd": self.cost_usd,
            "transcript": self.transcript,
            "updated_at": self.updated_at.replace(microsecond=0).isoformat() + "Z",
        }
