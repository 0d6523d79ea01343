"""Tests through the Slurm runner, end to end: the API, retries, a worker's restart.

Real parts: the one-node cluster of `.ci/provision-slurm`, torchrun and the
evaluator in their batch jobs, a `lossgym serve` and `lossgym worker`
subprocesses, one SQLite file.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from lossgym.config import Settings
from lossgym.env.service import EpisodeService
from lossgym.sandbox.slurm_queue import Slurm
from lossgym.store import queries
from lossgym.store.db import Database
from tests.conftest import fast_tasks_dir, make_service, run_server, start_worker
from tests.sandbox.runner_fixtures import slurm_problem, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def slurm_settings(tmp_path: Path, settings: Settings) -> Settings:
    if problem := slurm_problem():
        pytest.skip(problem)
    tasks = fast_tasks_dir(tmp_path, config={"max_iters": 12, "eval_interval": 6})
    return settings.model_copy(
        update={
            "tasks_dir": tasks,
            "runner": "slurm",
            "slurm_poll_s": 0.25,
            "lease_s": 3.0,
            "isolation": "bwrap",
        }  # fmt: skip
    )


def _service(settings: Settings) -> EpisodeService:
    db = Database(settings.database)
    db.create_schema()
    return make_service(settings, db)


def _slurm_id(pid_file: Path) -> str:
    return pid_file.read_text().split()[1]


def test_a_test_through_the_api_outlives_an_outside_scancel(
    slurm_settings: Settings, new_session
) -> None:
    """A tiny-cpu test end to end through `lossgym serve` on Slurm, whose training job
    an operator cancels from outside: it is retried, and the session pays once."""
    first = slurm_settings.runs_dir / "job-1" / "attempt-1" / "gpt-tiny"
    with run_server(slurm_settings, worker=True) as base:
        session = new_session(base, "slurm-e2e")
        replies: list[httpx.Response] = []
        post = threading.Thread(target=lambda: replies.append(httpx.post(
            f"{base}/test", json={}, headers=session["headers"], timeout=600)))  # fmt: skip
        post.start()
        wait_until(lambda: "iter " in _text(first / "train.log"), "training on the cluster", 240.0)
        Slurm().scancel(_slurm_id(first / "pid"))  # an operator, or the scheduler
        post.join(timeout=600)
    assert replies and replies[0].status_code == 200, replies
    text = replies[0].json()["text"]
    assert text.startswith("[Test #1] (2 tests remaining;"), text
    assert "Final metrics (gpt-tiny): val_loss_gpt-tiny=" in text
    retry = slurm_settings.runs_dir / "job-1" / "attempt-2" / "gpt-tiny"
    scripts = sorted(p.parent.name for p in retry.glob(".slurm-*/job.sh"))
    assert scripts == [".slurm-eval.pid", ".slurm-pid"], "training and evaluation: one job each"
    assert "#SBATCH --time=" in (retry / ".slurm-pid" / "job.sh").read_text()
    db = Database(slurm_settings.database)
    with db.transaction() as tx:
        assert queries.get_session(tx, session["session_id"]).tests_used == 1  # type: ignore[union-attr]
        test = queries.get_test(tx, session["session_id"], 1)
        assert test is not None and queries.get_job_for_test(tx, test.id).attempts == 2
    db.dispose()


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(settings, log, LOSSGYM_RUNNER="slurm", LOSSGYM_SLURM_POLL_S="0.25",
                        LOSSGYM_WARM_START="false")  # fmt: skip


def test_a_restarted_worker_reattaches_and_submits_nothing_twice(
    slurm_settings: Settings, tmp_path: Path
) -> None:
    slow = fast_tasks_dir(tmp_path / "slow", config={"max_iters": 25})
    settings = slurm_settings.model_copy(update={"tasks_dir": slow})
    service = _service(settings)
    sid = service.create_session("llm-pretrain-loss", "pytest")["session_id"]
    assert service.test(sid, wait=False).ok
    stage = settings.runs_dir / "job-1" / "attempt-1" / "gpt-tiny"
    first = _worker(settings, tmp_path / "worker1.log")
    wait_until(lambda: "iter " in _text(stage / "train.log"), "training on the cluster", 240.0)
    first.send_signal(signal.SIGKILL)
    first.wait()
    job_id = _slurm_id(stage / "pid")
    second = _worker(settings, tmp_path / "worker2.log")
    try:
        wait_until(
            lambda: service.test_info(sid, 1)["status"] in ("done", "failed", "error"),
            "result",
            240.0,
        )
    finally:
        second.terminate()
        second.wait(timeout=60)
    info = service.test_info(sid, 1)
    assert info["status"] == "done" and info["valid"], info["text"]
    assert "reattaching" in _text(tmp_path / "worker2.log")
    assert _slurm_id(stage / "pid") == job_id, "training was submitted again"
    assert not (settings.runs_dir / "job-1" / "attempt-2").exists()
    assert len(list((stage / ".slurm-pid").glob("slurm-*.out"))) == 1
    assert _text(stage / "train.log").count("config: {") == 1, "training ran twice"
    with service.db.transaction() as tx:
        assert queries.get_session(tx, sid).tests_used == 1  # type: ignore[union-attr]
