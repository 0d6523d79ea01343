"""What a session and its tests look like to their owner: `GET /sessions/{id}` and its tests.

Every function takes an open transaction (a read one will do) and a loaded
session; hidden metrics never appear here (SPEC §4).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from lossgym.env import episode, texts
from lossgym.env.task import Task
from lossgym.errors import NotFound
from lossgym.store import queries
from lossgym.store.models import SessionRow, TestRow, utcnow


def session_info(db: Session, session: SessionRow, task: Task) -> dict[str, Any]:
    """The session's state; `best_test` is what an auto-submit would pick now."""
    final = queries.get_final(db, session.id)
    tests = list(session.tests)
    best = episode.best_valid_test(task, session, tests)
    final_n = next((t.n for t in tests if final is not None and t.id == final.test_id), None)
    usage = queries.get_usage(db, session.id)
    return {
        "session_id": session.id,
        "task": session.task,
        "profile": session.profile,
        "agent": session.agent,
        "status": session.status,
        "ended_reason": session.ended_reason,
        "steps_used": session.steps_used,
        "budget_steps": session.budget_steps,
        "tests_used": session.tests_used,
        "budget_tests": session.budget_tests,
        "tests": [{"n": t.n, "status": t.status, "valid": t.valid} for t in tests],
        "best_test": None if best is None else best.n,
        "final": None
        if final is None
        else {"n": final_n, "test_id": final.test_id, "kind": final.kind},
        "usage": None if usage is None else usage.to_dict(),
    }


def test_info(db: Session, session: SessionRow, task: Task, n: int) -> dict[str, Any]:
    test = queries.get_test(db, session.id, n)
    if test is None:
        raise NotFound(f"Session {session.id} has no test #{n}.")
    hidden = task.spec.hidden_metrics
    stages = [
        {
            "label": v.label,
            "kind": v.kind,
            "status": v.status,
            "metrics": texts.visible_metrics(v.metrics, hidden),
            "train_lines": v.train_lines,
            "log_tail": v.log_tail[-2000:],
        }
        for v in episode.stage_views(task, session.profile, test)
    ]
    return {
        "n": test.n,
        "status": test.status,
        "valid": test.valid,
        "metrics": texts.visible_metrics(test.metrics, hidden),
        "stages": stages,
        "text": test_text(db, session, test, task),
    }


def test_text(db: Session, session: SessionRow, test: TestRow, task: Task) -> str:
    """The `test` tool's text for this test as it stands: pending, an error, or the report."""
    if test.status not in episode.FINISHED:
        waited = (utcnow() - test.created_at).total_seconds()
        return texts.test_pending(test.n, test.status, session.id, max(waited, 0.0))
    remaining = max(session.budget_tests - session.tests_used, 0)
    if test.status == "error":
        job = queries.get_job_for_test(db, test.id)
        return texts.test_infra_error(test.n, remaining, job.error or "unknown")
    views = episode.stage_views(task, session.profile, test)
    return texts.test_report(test.n, remaining, views, task.spec.hidden_metrics)
