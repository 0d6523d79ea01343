"""Episode rules that both the API and the worker apply: results, finals, ending.

`stage_views` turns stored rows into what texts are made from; `finalize_if_done`
auto-submits the best valid test once an ended session has no test running.
"""

from __future__ import annotations

import math

from sqlalchemy.orm import Session

from lossgym.env.task import Task
from lossgym.env.texts import StageView
from lossgym.errors import AgentError
from lossgym.store import queries
from lossgym.store.models import SessionRow, TestRow, utcnow

FINISHED = ("done", "failed", "error")  # a test in one of these states has its result


def stage_views(task: Task, profile: str, test: TestRow) -> list[StageView]:
    """One view per stage of the profile, with stored results where they exist."""
    recorded = {row.position: row for row in test.stages}
    views = []
    for position, stage in enumerate(task.spec.profiles[profile].stages):
        row = recorded.get(position)
        if row is None:
            status = "running" if test.status == "running" else "pending"
            views.append(StageView(label=stage.label, kind=stage.kind, status=status))
            continue
        views.append(
            StageView(
                label=row.label,
                kind=row.kind,
                status=row.status,
                exit_code=row.exit_code,
                metrics=dict(row.metrics),
                train_lines=list(row.train_lines),
                log_tail=row.log_tail,
                elapsed_s=row.elapsed_s,
                time_limit_s=stage.time_limit_s,
                reason=str(row.info.get("reason", "")),
            )
        )
    return views


def best_valid_test(task: Task, session: SessionRow, tests: list[TestRow]) -> TestRow | None:
    key = task.primary_metric_key(session.profile)
    sign = 1.0 if task.spec.primary_metric.direction == "minimize" else -1.0
    scored = [
        (sign * float(t.metrics[key]), t.n, t)
        for t in tests
        if t.valid and key in t.metrics and math.isfinite(float(t.metrics[key]))
    ]
    return min(scored, key=lambda item: item[:2])[2] if scored else None


def end_session(db: Session, task: Task, session: SessionRow, reason: str) -> None:
    if session.status == "active":
        session.status = "ended"
        session.ended_reason = reason
        session.ended_at = utcnow()
    finalize_if_done(db, task, session)


def finalize_if_done(db: Session, task: Task, session: SessionRow) -> None:
    """Auto-submit the best valid test of an ended session that has no final yet."""
    if session.status != "ended" or queries.get_final(db, session.id) is not None:
        return
    if queries.unfinished_tests(db, session.id):
        return  # the worker calls again when the last test finishes
    best = best_valid_test(task, session, queries.tests_of(db, session.id))
    if best is not None:
        queries.add_final(db, session.id, best, kind="auto")


def submittable(db: Session, session: SessionRow, n: int) -> TestRow:
    """The session's test #n, if it can be submitted; otherwise the AgentError that says why."""
    tests = queries.tests_of(db, session.id)
    test = next((t for t in tests if t.n == n), None)
    valid = ", ".join(str(t.n) for t in tests if t.valid) or "none yet"
    if test is None:
        raise AgentError(f"ERROR: There is no test #{n}. Tests you can submit: {valid}.")
    if test.status not in FINISHED:
        raise AgentError(f"ERROR: Test #{n} has not finished yet; submit it once its result is in.")
    if not test.valid:
        raise AgentError(f"ERROR: Test #{n} has no valid result. Tests you can submit: {valid}.")
    return test
