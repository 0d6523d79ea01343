"""What a worker writes back: stage results, a finished test, a retry, or a refund.

Budget rule (SPEC §6): a test that fails because of the agent's code counts; one
that fails because of the infrastructure is retried, and if it keeps failing it
is closed as an infrastructure error and its test is given back to the session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from lossgym.env import episode
from lossgym.env.task import Task
from lossgym.sandbox.stages import StageOutcome
from lossgym.store import queries
from lossgym.store.models import StageResultRow, utcnow


@dataclass
class ClaimedJob:
    job_id: int
    test_id: int
    session_id: str
    task: str
    profile: str
    seed: int
    files: dict[str, str]
    attempt: int
    gpus: list[str] = field(default_factory=list)  # whole GPUs held for every stage
    regions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per file
    sandbox: str = ""  # the runner's name: "bwrap", "docker", "slurm", "local" (unisolated)
    # Set when this attempt carries on in an earlier attempt's directory, whose
    # jobs still run on a cluster a restarted worker reattached to (Slurm).
    reattach_dir: Path | None = None


def record_stage(
    db: Session, claimed: ClaimedJob, position: int, label: str, kind: str, outcome: StageOutcome
) -> None:
    info = dict(outcome.info, reason=outcome.reason, seed=claimed.seed, attempt=claimed.attempt)
    db.add(
        StageResultRow(
            test_id=claimed.test_id, position=position, label=label, kind=kind,
            status=outcome.status, exit_code=outcome.exit_code, metrics=outcome.metrics,
            curve=outcome.curve, train_lines=outcome.train_lines,
            log_tail=outcome.log_tail, log_path=outcome.log_path,
            train_s=outcome.train_s, eval_s=outcome.eval_s,
            elapsed_s=outcome.train_s + outcome.eval_s, info=info,
        )
    )  # fmt: skip


def finish(
    db: Session, claimed: ClaimedJob, task: Task, outcomes: list[StageOutcome], n_stages: int
) -> bool:
    """Close the test with its metrics; True when every stage produced valid metrics."""
    valid = len(outcomes) == n_stages and all(o.status == "ok" for o in outcomes)
    metrics: dict[str, float] = {}
    for outcome in outcomes:
        metrics.update(outcome.metrics)
    test = queries.get_test_by_id(db, claimed.test_id)
    test.status = "done" if valid else "failed"
    test.valid = valid
    test.sandbox = claimed.sandbox
    test.metrics = metrics
    test.finished_at = utcnow()
    job = queries.get_job_for_test(db, claimed.test_id)
    job.status, job.finished_at = "done", utcnow()
    episode.finalize_if_done(db, task, test.session)
    return valid


def requeue(db: Session, claimed: ClaimedJob, reason: str) -> None:
    """Put the job back at once (infrastructure failure or a clean shutdown)."""
    job = queries.get_job_for_test(db, claimed.test_id)
    job.status, job.worker_id, job.lease_until, job.error = "queued", None, None, reason
    job.gpus, job.host = None, None  # its GPUs are free again
    queries.get_test_by_id(db, claimed.test_id).status = "queued"
    queries.clear_stage_results(db, claimed.test_id)


def give_up(db: Session, claimed: ClaimedJob, task: Task, reason: str) -> None:
    """Close a job the infrastructure keeps failing: an error, and the test refunded."""
    test = queries.get_test_by_id(db, claimed.test_id)
    test.status, test.valid, test.finished_at = "error", False, utcnow()
    session = test.session
    session.tests_used = max(session.tests_used - 1, 0)
    job = queries.get_job_for_test(db, claimed.test_id)
    job.status, job.finished_at, job.error = "done", utcnow(), reason
    episode.finalize_if_done(db, task, session)
