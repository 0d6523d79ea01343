"""The worker: claims queued jobs, runs each stage of a test, records the results.

A job is leased, not owned: the worker renews the lease while the job runs, and
any worker that finds an expired lease puts the job back in the queue. So a
worker killed mid-test loses nothing: the next worker kills what the dead one
left running, runs the test again in a fresh attempt directory, and the
session's budget is untouched (the test was paid for once, when it was queued).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from lossgym.config import Settings
from lossgym.env.catalog import TaskCache
from lossgym.env.task import Task
from lossgym.sandbox import results
from lossgym.sandbox.events import attempt_dir
from lossgym.sandbox.gpus import Holding, configured_gpus, free_gpus, job_allocator, parse_ids
from lossgym.sandbox.results import ClaimedJob
from lossgym.sandbox.runner import Limits, Runner, is_queuing, make_runner
from lossgym.sandbox.stages import (
    LmEvalJob,
    StageJob,
    StageOutcome,
    run_lm_eval_stage,
    run_train_stage,
    train_job,
)
from lossgym.sandbox.training import WarmTraining
from lossgym.store import queries
from lossgym.store.db import Database
from lossgym.store.models import utcnow

log = logging.getLogger("lossgym.worker")
MAX_ATTEMPTS = 3  # infrastructure failures retried before a test is refunded


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        tasks: TaskCache,
        runner: Runner | None = None,
        worker_id: str | None = None,
        alive_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.tasks = tasks
        self.runner = runner or make_runner(settings)
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        # A queuing runner (Slurm) lets the scheduler hand out GPUs and start runs:
        # nothing is started ahead, and the worker only dispatches.
        self.queues = is_queuing(self.runner)
        self.reattaches = bool(getattr(self.runner, "reattaches", False))
        self.gpus = [] if self.queues else configured_gpus(settings.gpus)
        self.alive_file = alive_file  # touched while the worker works: a health check reads it
        # Training sandboxes started ahead (CPU stages), each for one later job.
        self.warm = (
            WarmTraining(self.runner, settings.runs_dir / "warm" / "training")
            if settings.warm_start and not self.queues
            else None
        )

    def run_forever(self, stop: threading.Event) -> None:
        """Run `worker_slots` tests at once until `stop` (a dispatcher for Slurm: hundreds)."""
        log.info("worker %s started (runner %s, GPUs %s, %s slot(s))", self.id, self.runner.name,
                 ",".join(self.gpus) or ("the scheduler's" if self.queues else "none"),
                 self.settings.worker_slots)  # fmt: skip
        slots = [
            threading.Thread(target=self._serve, args=(stop,), name=f"worker-slot-{n}", daemon=True)
            for n in range(1, self.settings.worker_slots)
        ]
        for slot in slots:
            slot.start()
        try:
            self._serve(stop)
            for slot in slots:
                slot.join()
        finally:
            self.close()

    def _serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._touch_alive()
            try:
                worked = self.run_once(stop)
            except Exception:  # keep serving other jobs; the lease brings this one back
                log.exception("worker %s: job crashed", self.id)
                worked = False
            if not worked:
                stop.wait(self.settings.worker_poll_s)

    def close(self) -> None:
        """Stop the sandboxes started ahead (run_forever does this when it stops)."""
        if self.warm is not None:
            self.warm.close()

    def run_once(self, stop: threading.Event | None = None) -> bool:
        """Claim and run one job; False when the queue was empty."""
        claimed = self._claim()
        if claimed is None:
            return False
        task = self.tasks.get(claimed.task)
        if claimed.attempt > MAX_ATTEMPTS:
            kill_stale_attempts(self.runner, self._job_dir(claimed), None)  # detached jobs too
            with self.db.transaction() as db:
                results.give_up(
                    db, claimed, task, f"failed on the infrastructure {MAX_ATTEMPTS} times"
                )
            return True
        claimed.reattach_dir = self._reattachable_attempt(claimed)
        if claimed.reattach_dir is not None:
            log.info("job %s: reattaching to its jobs in %s", claimed.job_id, claimed.reattach_dir)
        else:
            kill_stale_attempts(self.runner, self._job_dir(claimed), claimed.attempt)
        done, lease_lost = threading.Event(), threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(claimed.job_id, done, lease_lost), daemon=True
        )
        beat.start()
        cancel = _either(stop, lease_lost)
        # A cluster job outlives its worker: stopping or losing the lease detaches from
        # it (cancel.detach), and whoever claims the test next reattaches.
        cancel.detach = self.reattaches  # type: ignore[attr-defined]
        try:
            outcomes = self._run_stages(claimed, task, cancel)
        finally:
            done.set()
            cancel.set()  # also ends the watcher thread
            beat.join()
        if outcomes is None:  # cancelled: shutting down, or another worker has the job now
            if not lease_lost.is_set():
                with self.db.transaction() as db:
                    results.requeue(db, claimed, "the worker shut down during the test")
            return True
        self._conclude(claimed, task, outcomes)
        self._prepare_next(claimed, task)
        return True

    def _prepare_next(self, claimed: ClaimedJob, task: Task) -> None:
        """Start the next test's training sandbox now: the agent is thinking meanwhile."""
        if self.warm is None:
            return
        for position, stage in enumerate(task.spec.profiles[claimed.profile].stages):
            if stage.kind == "train" and not stage.gpus:
                self.warm.prepare(self._stage_job(claimed, task, position))

    def _touch_alive(self) -> None:
        if self.alive_file is not None:
            self.alive_file.touch()

    def _claim(self) -> ClaimedJob | None:
        with self.db.transaction() as db:
            expired = queries.requeue_expired(db)
        for job_id in expired:
            log.warning("job %s: its worker stopped heartbeating; requeued", job_id)
            if not self.reattaches:
                # Its GPUs count as free from now on: what its dead worker left
                # running on this host (processes, containers) must go first.
                # (Slurm jobs live on: whoever claims the job reattaches to them.)
                kill_stale_attempts(self.runner, self.settings.runs_dir / f"job-{job_id}", None)
        host = "slurm" if self.queues else socket.gethostname()
        with self.db.transaction() as db:
            if self.queues:  # the scheduler allocates: a job holds a count, not this host's ids
                free = [str(i) for i in range(4096)]
            else:
                held = [Holding(*row) for row in queries.gpu_holdings(db)]
                free = free_gpus(self.gpus, held, host, utcnow())
            allocate = job_allocator(self.tasks, free)
            job = queries.claim_next_job(db, self.id, self.settings.lease_s, allocate, host)
            if job is None:
                return None
            test = queries.get_test_by_id(db, job.test_id)
            queries.clear_stage_results(db, test.id)  # a re-run starts clean
            test.status = "running"
            session = test.session
            gpus = parse_ids(job.gpus)
            log.info(
                "job %s (attempt %s): test #%s of session %s on %s",
                job.id,
                job.attempts,
                test.n,
                session.id,
                f"GPUs {','.join(gpus)} of {host}" if gpus else "no GPU",
            )
            return ClaimedJob(
                job.id, test.id, session.id, session.task, session.profile, session.seed,
                dict(test.revision.files), job.attempts, gpus, dict(test.revision.regions),
                self.runner.name,
            )  # fmt: skip

    def _heartbeat(self, job_id: int, done: threading.Event, lease_lost: threading.Event) -> None:
        interval = max(self.settings.lease_s / 4, 0.5)
        while not done.wait(interval):
            self._touch_alive()
            with self.db.transaction() as db:
                if not queries.renew_lease(db, job_id, self.id, self.settings.lease_s):
                    log.warning("job %s: lease lost; stopping it", job_id)
                    lease_lost.set()
                    return

    def _run_stages(
        self, claimed: ClaimedJob, task: Task, cancel: threading.Event
    ) -> list[StageOutcome] | None:
        """Run stages in order until one fails; None when cancelled."""
        stages = task.spec.profiles[claimed.profile].stages
        outcomes: list[StageOutcome] = []
        for position, stage in enumerate(stages):
            if stage.kind == "lm-eval":
                job = self._lm_eval_job(claimed, task, position)
                outcome = run_lm_eval_stage(job, self.runner, cancel)
            else:
                stage_job = self._stage_job(claimed, task, position)
                outcome = run_train_stage(stage_job, self.runner, cancel, self.warm)
            if cancel.is_set():
                return None
            outcomes.append(outcome)
            with self.db.transaction() as db:
                results.record_stage(db, claimed, position, stage.label, stage.kind, outcome)
            if outcome.status != "ok":
                break
        return outcomes

    def _conclude(self, claimed: ClaimedJob, task: Task, outcomes: list[StageOutcome]) -> None:
        infra = next((o for o in outcomes if o.infra), None)
        n_stages = len(task.spec.profiles[claimed.profile].stages)
        with self.db.transaction() as db:
            if infra is None:
                valid = results.finish(db, claimed, task, outcomes, n_stages)
                log.info("job %s finished: %s", claimed.job_id, "valid" if valid else "failed")
            elif claimed.attempt < MAX_ATTEMPTS:
                log.warning(
                    "job %s: infrastructure failure, retrying: %s", claimed.job_id, infra.reason
                )
                results.requeue(db, claimed, infra.reason)
            else:
                log.error(
                    "job %s: giving up after %s attempts: %s",
                    claimed.job_id,
                    claimed.attempt,
                    infra.reason,
                )
                results.give_up(db, claimed, task, infra.reason)

    def _job_dir(self, claimed: ClaimedJob) -> Path:
        return self.settings.runs_dir / f"job-{claimed.job_id}"

    def _attempt_dir(self, claimed: ClaimedJob) -> Path:
        """Each attempt runs in its own directory, so a re-run never meets a dead one's files
        (except one that reattaches to jobs still on a cluster: it carries on in theirs)."""
        if claimed.reattach_dir is not None:
            return claimed.reattach_dir
        return attempt_dir(self.settings.runs_dir, claimed.job_id, claimed.attempt)

    def _reattachable_attempt(self, claimed: ClaimedJob) -> Path | None:
        """The latest earlier attempt whose cluster jobs run on, or ended with a result.

        A worker killed mid-stage leaves its Slurm jobs running; the next claim of
        the job follows them instead of submitting the test again.
        """
        reattachable = getattr(self.runner, "reattachable", None)
        if reattachable is None:
            return None
        earlier = [
            attempt_dir(self.settings.runs_dir, claimed.job_id, n)
            for n in range(claimed.attempt - 1, 0, -1)
        ]
        for directory in earlier:
            pid_files = stage_pid_files(directory)
            if not pid_files:
                continue
            # Only when every job it started lives on or ended with a result: a run
            # that failed must not be resubmitted among the files of the old one.
            if all(reattachable(pid_file) for pid_file in pid_files):
                return directory
            return None  # the latest attempt that ran anything is over: start afresh
        return None

    def _stage_job(self, claimed: ClaimedJob, task: Task, position: int) -> StageJob:
        stage = task.spec.profiles[claimed.profile].stages[position]
        return train_job(
            task, stage, self._attempt_dir(claimed) / stage.label, Path(self.settings.data_dir),
            claimed.files, claimed.regions, claimed.seed, claimed.gpus,
        )  # fmt: skip

    def _lm_eval_job(self, claimed: ClaimedJob, task: Task, position: int) -> LmEvalJob:
        """Evaluate the checkpoint of the train stage that precedes this stage."""
        stages = task.spec.profiles[claimed.profile].stages
        stage = stages[position]
        train = next(s for s in reversed(stages[:position]) if s.kind == "train")
        attempt_dir = self._attempt_dir(claimed)
        assert train.model is not None
        return LmEvalJob(
            run_dir=attempt_dir / stage.label,
            checkpoint=attempt_dir / train.label / "out" / "model.safetensors",
            evals_dir=Path(self.settings.data_dir) / "evals",
            label=stage.label,
            model_config=train.model.model_dump(),
            time_limit_s=stage.time_limit_s,
            evals=list(stage.evals) if stage.evals else None,
            limit=stage.limit,
            gpus=claimed.gpus[: stage.gpus],
            limits=Limits.of(stage.limits),
        )


def kill_stale_attempts(runner: Runner, job_dir: Path, current_attempt: int | None) -> None:
    """Kill what other attempts of this job left running (their pid files say what:
    `pid` for training, `eval.pid` for its evaluator)."""
    for pid_file in [f for attempt in job_dir.glob("attempt-*") for f in stage_pid_files(attempt)]:
        if pid_file.parent.parent.name != f"attempt-{current_attempt}":
            log.warning("cleaning up after %s", pid_file.parent)
            runner.kill_stale(pid_file.resolve())  # a warm run's directory is a link


def stage_pid_files(attempt: Path) -> list[Path]:
    """The pid files the runs of an attempt's stages wrote: `pid` for training,
    `eval.pid` for its evaluator (or an lm-eval stage)."""
    return [*attempt.glob("*/pid"), *attempt.glob("*/eval.pid")]


def _either(*events: threading.Event | None) -> threading.Event:
    """An event that is set as soon as any of `events` is (polled by a tiny thread)."""
    merged = threading.Event()
    present = [e for e in events if e is not None]

    def watch() -> None:
        while not merged.wait(0.2):
            if any(e.is_set() for e in present):
                merged.set()

    threading.Thread(target=watch, daemon=True).start()
    return merged
