"""The worker: claims queued jobs, runs each stage of a test, records the results.

A job is leased, not owned: the worker renews the lease while the job runs, and
any worker that finds an expired lease puts the job back in the queue. So a
worker killed mid-test loses nothing; the test runs again and the session's
budget is not touched (the test was paid for once, when it was queued).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from lossgym.config import Settings
from lossgym.env import episode
from lossgym.env.catalog import TaskCache
from lossgym.env.task import Task
from lossgym.leaderboard import store
from lossgym.leaderboard.db import Database
from lossgym.leaderboard.models import StageResultRow, utcnow
from lossgym.sandbox.runner import LocalRunner, Runner
from lossgym.sandbox.stages import StageJob, StageOutcome, run_train_stage

log = logging.getLogger("lossgym.worker")


@dataclass
class ClaimedJob:
    job_id: int
    test_id: int
    session_id: str
    task: str
    profile: str
    seed: int
    files: dict[str, str]


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        tasks: TaskCache,
        runner: Runner | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.tasks = tasks
        self.runner = runner or LocalRunner()
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    def run_forever(self, stop: threading.Event) -> None:
        log.info("worker %s started", self.id)
        while not stop.is_set():
            try:
                worked = self.run_once(stop)
            except Exception:  # keep serving other jobs; the lease brings this one back
                log.exception("worker %s: job crashed", self.id)
                worked = False
            if not worked:
                stop.wait(self.settings.worker_poll_s)

    def run_once(self, stop: threading.Event | None = None) -> bool:
        """Claim and run one job; False when the queue was empty."""
        claimed = self._claim()
        if claimed is None:
            return False
        lost = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(claimed.job_id, lost), daemon=True)
        beat.start()
        try:
            self._run_stages(claimed, self.tasks.get(claimed.task), _either(stop, lost))
        finally:
            lost.set()
            beat.join()
        return True

    def _claim(self) -> ClaimedJob | None:
        with self.db.transaction() as db:
            if store.requeue_expired(db):
                log.warning("requeued jobs whose worker stopped heartbeating")
            job = store.claim_next_job(db, self.id, self.settings.lease_s)
            if job is None:
                return None
            test = store.get_test_by_id(db, job.test_id)
            store.clear_stage_results(db, test.id)  # a re-run starts clean
            test.status = "running"
            session = test.session
            log.info("job %s: test #%s of session %s", job.id, test.n, session.id)
            return ClaimedJob(
                job.id, test.id, session.id, session.task, session.profile, session.seed,
                dict(test.revision.files),
            )  # fmt: skip

    def _heartbeat(self, job_id: int, lost: threading.Event) -> None:
        interval = max(self.settings.lease_s / 4, 0.5)
        while not lost.wait(interval):
            with self.db.transaction() as db:
                if not store.renew_lease(db, job_id, self.id, self.settings.lease_s):
                    log.warning("job %s: lease lost; stopping it", job_id)
                    lost.set()

    def _run_stages(self, claimed: ClaimedJob, task: Task, cancel: threading.Event) -> None:
        stages = task.spec.profiles[claimed.profile].stages
        outcomes: list[StageOutcome] = []
        for position, stage in enumerate(stages):
            if stage.kind != "train":
                outcome = StageOutcome(
                    status="failed", reason=f"stage kind {stage.kind!r} is not supported yet"
                )
            else:
                outcome = run_train_stage(
                    self._stage_job(claimed, task, position), self.runner, cancel
                )
            if cancel.is_set():
                return  # lost the lease or shutting down: another worker re-runs the job
            outcomes.append(outcome)
            self._record_stage(claimed, position, stage.label, stage.kind, outcome)
            if outcome.status != "ok":
                break
        self._finish(claimed, task, outcomes, len(stages))

    def _stage_job(self, claimed: ClaimedJob, task: Task, position: int) -> StageJob:
        stage = task.spec.profiles[claimed.profile].stages[position]
        run_dir = self.settings.runs_dir / f"job-{claimed.job_id}" / stage.label
        entrypoint = task.spec.workspace[0].path
        return StageJob(
            run_dir=run_dir,
            files=claimed.files,
            entrypoint=entrypoint,
            dataset_dir=Path(self.settings.data_dir) / stage.dataset,
            label=stage.label,
            nproc=stage.nproc,
            time_limit_s=stage.time_limit_s,
            train_config=stage.train_config(),
            model_config=stage.model.model_dump(),
            val_tokens=stage.val_tokens,
            seed=claimed.seed,
        )

    def _record_stage(
        self, claimed: ClaimedJob, position: int, label: str, kind: str, outcome: StageOutcome
    ) -> None:
        info = dict(outcome.info, reason=outcome.reason, seed=claimed.seed)
        with self.db.transaction() as db:
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

    def _finish(
        self, claimed: ClaimedJob, task: Task, outcomes: list[StageOutcome], n_stages: int
    ) -> None:
        valid = len(outcomes) == n_stages and all(o.status == "ok" for o in outcomes)
        metrics: dict[str, float] = {}
        for outcome in outcomes:
            metrics.update(outcome.metrics)
        with self.db.transaction() as db:
            test = store.get_test_by_id(db, claimed.test_id)
            test.status = "done" if valid else "failed"
            test.valid = valid
            test.metrics = metrics
            test.finished_at = utcnow()
            job = store.get_job_for_test(db, claimed.test_id)
            job.status, job.finished_at = "done", utcnow()
            episode.finalize_if_done(db, task, test.session)
        log.info("job %s finished: %s", claimed.job_id, "valid" if valid else "failed")


def _either(*events: threading.Event | None) -> threading.Event:
    """An event that is set as soon as any of `events` is (polled by a tiny thread)."""
    merged = threading.Event()
    present = [e for e in events if e is not None]

    def watch() -> None:
        while not merged.is_set():
            if any(e.is_set() for e in present):
                merged.set()
                return
            merged.wait(0.2)

    threading.Thread(target=watch, daemon=True).start()
    return merged
