"""Sandboxes started ahead (`warm_start`): each serves one job, limits count from the job.

Real parts: bubblewrap sandboxes, torchrun, the real evaluator and pre-flight
smoke run, the worker on one SQLite file.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from lossgym.config import Settings
from lossgym.env.limits import PreflightSpec
from lossgym.env.task import load_task
from lossgym.env.workspace import Region
from lossgym.errors import AgentError
from lossgym.sandbox.preflight import Preflight
from lossgym.sandbox.runner import Mount, RunSpec, base_env
from lossgym.sandbox.standby import Standby
from lossgym.sandbox.worker import Worker
from lossgym.store.db import Database
from tests.conftest import REPO, fast_tasks_dir, make_service
from tests.sandbox.runner_fixtures import make_test_runner

TASK = "llm-pretrain-loss"
WAITER = (
    "import sys, time; from lossgym.trainer.wait import wait_for_job; "
    "job = wait_for_job(sys.argv[1], 60); print('got', job['n'], flush=True); "
    "time.sleep(job['sleep'])"
)


def _waiter(tmp_path: Path, name: str) -> tuple[RunSpec, Path]:
    inbox = tmp_path / name / "in"
    inbox.mkdir(parents=True)
    spec = RunSpec(
        [sys.executable, "-I", "-c", WAITER, str(inbox)], inbox, tmp_path / name / "log", 30.0,
        base_env({}), mounts=[Mount(inbox)],
    )  # fmt: skip
    return spec, inbox


@pytest.mark.parametrize("kind", ["local", "bwrap"])
def test_the_time_limit_counts_from_the_hand_over(tmp_path: Path, kind: str) -> None:
    runner = make_test_runner(kind)
    spec, inbox = _waiter(tmp_path, "a")
    standby = Standby(runner, spec, inbox)
    time.sleep(1.5)  # idle for longer than the job's own limit below
    assert standby.usable
    standby.go({"n": 1, "sleep": 0}, time_limit_s=1.0)
    result = standby.wait()
    assert result.exit_code == 0 and not result.timed_out, spec.log_path.read_text()
    assert "got 1" in spec.log_path.read_text() and result.seconds < 1.0
    assert not standby.usable  # one job each

    spec, inbox = _waiter(tmp_path, "b")
    standby = Standby(runner, spec, inbox)
    standby.go({"n": 2, "sleep": 30}, time_limit_s=1.0)
    started = time.monotonic()
    result = standby.wait()
    assert result.timed_out and result.exit_code is None and not result.cancelled
    assert time.monotonic() - started < 5


def test_cancel_stops_a_waiting_standby(tmp_path: Path) -> None:
    spec, inbox = _waiter(tmp_path, "c")
    standby = Standby(make_test_runner("bwrap"), spec, inbox)
    stop = threading.Event()
    standby.follow(stop)
    stop.set()
    result = standby.wait()
    assert result.cancelled and not result.timed_out and result.exit_code is None


def _template_regions() -> tuple[dict[str, str], dict[str, list[Region]]]:
    task = load_task(REPO / "tasks", TASK)
    workspace = task.new_workspace()
    path = task.spec.workspace[0].path
    return dict(workspace.files), {path: list(workspace.regions_of(path))}


def test_preflight_keeps_one_smoke_sandbox_ready(tmp_path: Path) -> None:
    preflight = Preflight(make_test_runner("bwrap"), tmp_path / "pre", per_minute=100, warm=True)
    files, regions = _template_regions()
    spec = PreflightSpec()
    try:
        preflight.check("s1", files, regions, spec)
        (ready,) = preflight._standbys.values()
        assert ready.usable
        path = next(iter(regions))
        region = next(r for r in regions[path] if r.name == "compute_loss")
        lines = files[path].split("\n")
        body = lines[region.start - 1 : region.end]
        broken = [*lines[: region.start - 1], *body[:-1]]
        broken += ["    return logits.sum() * float('nan')", *lines[region.end :]]
        with pytest.raises(AgentError, match="must be finite"):
            preflight.check("s1", {**files, path: "\n".join(broken)}, regions, spec)
        assert not ready.usable and not ready.run_dir.exists()  # used once, then gone
        (refill,) = preflight._standbys.values()
        assert refill is not ready
    finally:
        preflight.close()
    assert preflight._standbys == {}
    refill.wait()  # stopped by close()


@pytest.mark.slow
def test_worker_runs_the_next_test_in_the_sandbox_it_started(
    tmp_path: Path, settings: Settings
) -> None:
    fast = settings.model_copy(update={"tasks_dir": fast_tasks_dir(tmp_path), "warm_start": True})
    db = Database(fast.database)
    db.create_schema()
    service = make_service(fast, db)
    worker = Worker(fast, db, service.tasks)
    sid = service.create_session(TASK, "pytest")["session_id"]
    try:
        for n in (1, 2):
            assert service.test(sid, wait=False).ok
            assert worker.run_once()
            info = service.test_info(sid, n)
            assert info["status"] == "done" and info["valid"], info["text"]
            assert "warm" not in info["text"] and "slot-" not in info["text"]
        first, second = (fast.runs_dir / f"job-{j}" / "attempt-1" / "gpt-tiny" for j in (1, 2))
        assert not first.is_symlink() and first.is_dir()  # the first test started cold
        assert second.is_symlink()  # the second ran in the sandbox started after the first
        slot = second.resolve()
        assert slot.parent == fast.runs_dir / "warm" / "training"
        assert (second / "eval" / "metrics.json").is_file() and (second / "run.json").is_file()
        assert '"seed"' in (second / "config.json").read_text()
        assert worker.warm is not None and worker.warm._slots  # the third's is waiting
    finally:
        worker.close()
        db.dispose()


def test_a_run_that_ended_before_its_job_is_the_infrastructures(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    spec = RunSpec([sys.executable, "-c", "pass"], inbox, tmp_path / "log", 30.0, base_env({}))
    standby = Standby(make_test_runner("local"), spec, inbox)
    while standby.usable:  # it exits at once, never having read a job
        time.sleep(0.05)
    standby.go({"n": 1}, time_limit_s=5)
    with pytest.raises(OSError, match="ended before its job was handed over"):
        standby.wait()
