"""Whole GPUs from LOSSGYM_GPUS: tests of different sessions share a host, never a GPU.

Nothing trains here: a recording runner notes which GPUs each run was given
and when, can hold them until the scheduler had its chance to run something
alongside, and writes what the stages expect to find.
The task is the real one: gpt2-1.5b trains on 4 GPUs, gpt2-345m on 2,
gpt2-124m on 1, their lm-eval stages use 1, and tiny-cpu uses none.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations
from pathlib import Path

from lossgym.config import Settings
from lossgym.env.catalog import TaskCache
from lossgym.env.service import EpisodeService
from lossgym.sandbox.gpus import Holding, allocate, free_gpus, gpus_needed, parse_ids
from lossgym.sandbox.runner import RunResult, RunSpec
from lossgym.sandbox.worker import Worker
from lossgym.store import queries
from lossgym.store.db import Database
from lossgym.store.models import JobRow, utcnow
from tests.conftest import REPO, make_service
from tests.sandbox.runner_fixtures import await_hand_over

TASK = "llm-pretrain-loss"


HOLD_LIMIT_S = 60.0  # a held run gives up waiting: the scheduler stalled (a failure)


@dataclass(frozen=True)
class Run:
    job: str  # job-N: a test's job (its evaluator starts with its training, on its GPUs)
    label: str  # the stage's label
    gpus: tuple[str, ...]
    start: int  # ticks of the runner's clock: an order of events, not wall time
    end: int


class RecordingRunner:
    """Records which GPUs each run had, from when to when.

    With `hold`, a run lasts until the scheduler had its chance to start something
    alongside it: until another run starts, or a worker that began looking for work
    after it started found nothing it may claim. Runs overlap whenever the
    scheduler can pack them, without a run lasting any fixed time.
    """

    name = "recording"

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.runs: list[Run] = []
        self._clock = itertools.count()
        self._changed = threading.Condition()
        self._last_start = self._last_empty_claim = -1

    def now(self) -> int:
        with self._changed:
            return next(self._clock)

    def found_nothing(self, looked_at: int) -> None:
        """A worker that began looking at `looked_at` found nothing it may claim."""
        with self._changed:
            self._last_empty_claim = max(self._last_empty_claim, looked_at)
            self._changed.notify_all()

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        if not await_hand_over(spec, cancel):
            return RunResult(exit_code=None, timed_out=False, cancelled=True, seconds=0.0)
        with self._changed:
            start = self._last_start = next(self._clock)
            self._changed.notify_all()
            if self.hold:
                self._changed.wait_for(
                    lambda: max(self._last_start, self._last_empty_claim) > start, HOLD_LIMIT_S
                )
        _write_outputs(spec)
        with self._changed:
            end = next(self._clock)
            run_dir = spec.cwd.parent
            self.runs.append(
                Run(run_dir.parent.parent.name, run_dir.name, tuple(spec.gpus), start, end)
            )
        return RunResult(exit_code=0, timed_out=False, cancelled=False, seconds=0.0)

    def kill_stale(self, pid_file: Path) -> None:
        pass


def _write_outputs(spec: RunSpec) -> None:
    """What a successful training run or evaluator would leave behind."""
    if "lossgym.trainer.torchrun" in spec.argv:  # training: a curve and a checkpoint
        spec.log_path.write_text("TRAIN_METRICS: step=0, train_loss=5.0000, val_loss=5.0000\n")
        out = spec.cwd.parent / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(b"not a real checkpoint")
        return
    label = spec.argv[spec.argv.index("--label") + 1]
    out_file = Path(spec.argv[spec.argv.index("--out") + 1])
    out_file.write_text(json.dumps({"metrics": {f"val_loss_{label}": 3.0}}))


def _settings(tmp_path: Path, gpus: str) -> Settings:
    return Settings(
        database=tmp_path / "lossgym.db",
        runs_dir=tmp_path / "runs",
        data_dir=tmp_path / "data",
        tasks_dir=REPO / "tasks",
        worker_in_api=False,
        worker_poll_s=0.05,
        lease_s=10.0,
        gpus=gpus,
    ).resolved()


def _service(settings: Settings) -> EpisodeService:
    db = Database(settings.database)
    db.create_schema()
    return make_service(settings, db)


def _queue(service: EpisodeService, profiles: list[str]) -> list[tuple[str, str]]:
    """One session per profile, in this order, each with one queued test."""
    queued = []
    for i, profile in enumerate(profiles):
        sid = service.create_session(TASK, f"agent-{i}", profile=profile)["session_id"]
        assert service.test(sid, wait=False).ok
        queued.append((sid, profile))
    return queued


def _stage_gpus(service: EpisodeService) -> dict[str, int]:
    profiles = service.tasks.get(TASK).spec.profiles.values()
    return {stage.label: stage.gpus for profile in profiles for stage in profile.stages}


def _overlap(a: Run, b: Run) -> bool:
    return a.start < b.end and b.start < a.end


def _run_workers(
    settings: Settings, runner: RecordingRunner, n: int, until: Callable[[], bool]
) -> None:
    """`n` workers in threads, each with its own connection, as separate processes would.

    Each runs the loop of `Worker.run_forever`, telling the runner when it found no
    work, and this thread when it finished a job (then `until` is checked again).
    """
    stop = threading.Event()
    finished = threading.Condition()
    errors: list[BaseException] = []

    def serve(worker: Worker) -> None:
        while not stop.is_set():
            looked_at = runner.now()
            try:
                worked = worker.run_once(stop)
            except BaseException as error:
                errors.append(error)  # the test fails on it
                worked = False
            with finished:
                finished.notify_all()
            if errors:
                return
            if not worked:
                runner.found_nothing(looked_at)
                stop.wait(settings.worker_poll_s)

    dbs = [Database(settings.database) for _ in range(n)]
    workers = [Worker(settings, db, TaskCache(settings.tasks_dir), runner) for db in dbs]
    threads = [threading.Thread(target=serve, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    try:
        with finished:
            finished.wait_for(lambda: bool(errors) or until(), timeout=60)
        assert not errors, errors
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for db in dbs:
            db.dispose()


def test_sessions_share_four_gpus_without_overlap(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "0,1,2,3")
    service = _service(settings)
    profiles = ["gpt2-345m", "gpt2-124m"] * 3 + ["gpt2-1.5b", "gpt2-124m"]
    queued = _queue(service, profiles)
    runner = RecordingRunner(hold=True)

    def all_finished() -> bool:
        return all(service.test_info(sid, 1)["status"] == "done" for sid, _ in queued)

    _run_workers(settings, runner, 4, all_finished)

    for sid, profile in queued:
        info = service.test_info(sid, 1)
        assert info["status"] == "done" and info["valid"], (profile, info["text"])
    needs = _stage_gpus(service)
    assert len(runner.runs) == 3 * len(profiles)  # train, its evaluation, lm-eval
    for run in runner.runs:
        assert len(run.gpus) == needs[run.label], run
        assert set(run.gpus) <= {"0", "1", "2", "3"} and len(set(run.gpus)) == len(run.gpus)
    for a, b in combinations(runner.runs, 2):
        if _overlap(a, b) and a.job != b.job:
            assert not set(a.gpus) & set(b.gpus), (a, b)
    packed = [
        (a, b)
        for a, b in combinations(runner.runs, 2)
        if _overlap(a, b) and sorted((len(a.gpus), len(b.gpus))) == [1, 2]
    ]
    assert packed, "a 2-GPU and a 1-GPU stage should have run side by side"


def test_a_worker_never_claims_more_gpus_than_it_has(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "0")
    service = _service(settings)
    queued = _queue(service, ["gpt2-345m", "gpt2-124m", "tiny-cpu"])
    runner = RecordingRunner()
    worker = Worker(settings, service.db, service.tasks, runner)
    assert worker.run_once() and worker.run_once()
    assert not worker.run_once()  # the 2-GPU test waits for a worker with 2 GPUs

    status = {profile: service.test_info(sid, 1)["status"] for sid, profile in queued}
    assert status == {"gpt2-345m": "queued", "gpt2-124m": "done", "tiny-cpu": "done"}
    assert {run.gpus for run in runner.runs} == {("0",), ()}

    cpu_only = Worker(settings.model_copy(update={"gpus": ""}), service.db, service.tasks, runner)
    _queue(service, ["gpt2-124m"])
    assert not cpu_only.run_once()  # no GPUs: only CPU profiles


def test_leaving_the_running_state_frees_the_gpus(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "0,1")
    service = _service(settings)
    _queue(service, ["gpt2-345m"])
    with service.db.transaction() as tx:
        job = queries.claim_next_job(tx, "w", 60, lambda _t, _p: ["0", "1"], "host-a")
        assert job is not None and (job.gpus, job.host) == ("0,1", "host-a")
        job_id = job.id
    with service.db.transaction() as tx:
        assert queries.gpu_holdings(tx)[0][:2] == ("host-a", "0,1")
        tx.get_one(JobRow, job_id).lease_until = utcnow() - timedelta(seconds=1)
    with service.db.transaction() as tx:
        assert len(queries.requeue_expired(tx)) == 1
        row = tx.get_one(JobRow, job_id)
        assert (row.status, row.gpus, row.host) == ("queued", None, None)
        assert queries.gpu_holdings(tx) == []


# ── The pure allocation functions ──────────────────────────────────────────

NOW = datetime(2025, 1, 1, 12, 0, 0)
LIVE = NOW + timedelta(seconds=30)
EXPIRED = NOW - timedelta(seconds=1)
FOUR = ["0", "1", "2", "3"]


def test_parse_ids() -> None:
    assert parse_ids("0,1,2,3") == FOUR
    assert parse_ids(" 2, 0,,2 ") == ["2", "0"]
    assert parse_ids("") == [] and parse_ids(None) == []


def test_a_job_needs_its_hungriest_stage() -> None:
    profiles = TaskCache(REPO / "tasks").get(TASK).spec.profiles
    needs = {name: gpus_needed(profile) for name, profile in profiles.items()}
    assert needs == {"tiny-cpu": 0, "gpt2-124m": 1, "gpt2-345m": 2, "gpt2-1.5b": 4}


def test_allocate_fits_or_waits() -> None:
    assert allocate(2, ["1", "3"]) == ["1", "3"]
    assert allocate(1, ["1", "3"]) == ["1"]
    assert allocate(0, []) == []
    assert allocate(2, ["3"]) is None  # fits later
    assert allocate(5, FOUR) is None  # never fits this worker


def test_free_gpus_counts_live_jobs_of_this_host_only() -> None:
    held = [
        Holding("a", "0,1", LIVE),
        Holding("b", "2", LIVE),  # another host's GPU 2 is another device
        Holding("a", "3", EXPIRED),  # its worker stopped heartbeating
        Holding("a", "", LIVE),  # a CPU job
    ]
    assert free_gpus(FOUR, held, "a", NOW) == ["2", "3"]
    assert free_gpus(FOUR, held, "b", NOW) == ["0", "1", "3"]
    assert free_gpus(["1", "2"], held, "a", NOW) == ["2"]
    assert free_gpus([], held, "a", NOW) == []
