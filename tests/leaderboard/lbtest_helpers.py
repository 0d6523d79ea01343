"""Filling a database with known results, as the worker would record them."""

from __future__ import annotations

from datetime import datetime

from lossgym.env import episode
from lossgym.env.service import EpisodeService
from lossgym.env.tools import SubmitArgs
from lossgym.store import queries
from lossgym.store.db import Database
from lossgym.store.models import StageResultRow, utcnow

TASK = "llm-pretrain-loss"
FILE = "nanoGPT/custom_pretrain.py"


def label(service: EpisodeService) -> str:
    return service.tasks.get(TASK).profile().train_stage.label


def primary_key(service: EpisodeService) -> str:
    return f"val_loss_{label(service)}"


def finish_test(
    service: EpisodeService,
    db: Database,
    sid: str,
    n: int,
    metrics: dict[str, float] | None,
    elapsed_s: float = 10.0,
    sandbox: str = "bwrap",
) -> None:
    """Record test n's result (metrics None: the stage failed) and finalize if the session ended."""
    stage_label = label(service)
    curve = [[0, 10.9, 10.8], [10, 6.0, 6.1], [20, 5.0, 5.2]]
    with db.transaction() as tx:
        test = queries.get_test(tx, sid, n)
        assert test is not None
        tx.add(
            StageResultRow(
                test_id=test.id, position=0, label=stage_label, kind="train",
                status="ok" if metrics is not None else "failed",
                exit_code=0 if metrics is not None else 1, metrics=metrics or {},
                curve=curve if metrics is not None else [],
                train_lines=["TRAIN_METRICS: step=20, train_loss=5.0000, val_loss=5.2000"],
                log_tail="tail of the log\n", elapsed_s=elapsed_s, train_s=elapsed_s - 1, eval_s=1.0,
            )
        )  # fmt: skip
        test.status = "done" if metrics is not None else "failed"
        test.valid = metrics is not None
        test.metrics = metrics or {}
        test.sandbox = sandbox
        test.finished_at = utcnow()
        queries.get_job_for_test(tx, test.id).status = "done"
        episode.finalize_if_done(tx, service.tasks.get(TASK), test.session)


def set_created(db: Database, sid: str, moment: datetime) -> None:
    with db.transaction() as tx:
        session = queries.get_session(tx, sid)
        assert session is not None
        session.created_at = moment


def end(service: EpisodeService, db: Database, sid: str, reason: str = "operator_stop") -> None:
    """End a session without a submit (its best valid test is auto-submitted)."""
    with db.transaction() as tx:
        session = queries.get_session(tx, sid)
        assert session is not None
        episode.end_session(tx, service.tasks.get(TASK), session, reason)


def scored_session(
    service: EpisodeService,
    db: Database,
    agent: str,
    seed: int,
    value: float,
    *,
    extra: dict[str, float] | None = None,
    auto: bool = False,
    created_at: datetime | None = None,
) -> str:
    """A session with one valid test of primary value `value`, submitted (or auto-submitted)."""
    sid = service.create_session(TASK, agent, seed=seed)["session_id"]
    assert service.test(sid, wait=False).ok
    finish_test(service, db, sid, 1, {primary_key(service): value, **(extra or {})})
    if auto:
        end(service, db, sid)
    else:
        assert service.submit(sid, SubmitArgs(n=1)).ok
    if created_at is not None:
        set_created(db, sid, created_at)
    return sid
