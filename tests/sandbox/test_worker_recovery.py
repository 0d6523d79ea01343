"""The worker never loses a job and never charges the agent for the infrastructure.

Real parts: a `lossgym worker` subprocess killed with SIGKILL mid-training, real
torchrun runs, the real evaluator, one SQLite file.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from lossgym.config import Settings
from lossgym.env.service import EpisodeService
from lossgym.sandbox import cgroups
from lossgym.sandbox.local_runner import group_members as _members
from lossgym.sandbox.worker import Worker
from lossgym.store import queries
from lossgym.store.db import Database
from tests.conftest import fast_tasks_dir, make_service, start_worker
from tests.sandbox.runner_fixtures import wait_until

pytestmark = pytest.mark.slow


def _setup(
    tmp_path: Path, settings: Settings, **overrides: object
) -> tuple[Settings, EpisodeService]:
    fast = settings.model_copy(
        update={"tasks_dir": fast_tasks_dir(tmp_path, **overrides), "lease_s": 3.0}
    )
    db = Database(fast.database)
    db.create_schema()
    return fast, make_service(fast, db)


def _leftovers(pid_file: Path) -> set[int]:
    """What still runs of a recorded run: its cgroup's processes, or its process group's."""
    pid, _, group = pid_file.read_text().split()[1].partition(":")
    found = set(_members(int(pid), str(pid_file.parent)))
    hierarchy = cgroups.detect()
    if group and isinstance(hierarchy, cgroups.Cgroups):
        found |= hierarchy.group(group).pids()
    return found


def test_kill_9_worker_mid_test(tmp_path: Path, settings: Settings) -> None:
    fast, service = _setup(tmp_path, settings)
    sid = service.create_session("llm-pretrain-loss", "pytest")["session_id"]
    assert service.test(sid, wait=False).ok
    first_log = fast.runs_dir / "job-1" / "attempt-1" / "gpt-tiny" / "train.log"

    first = start_worker(fast, tmp_path / "worker1.log")
    wait_until(lambda: first_log.exists() and "iter " in first_log.read_text(), "training", 120)
    first.send_signal(signal.SIGKILL)
    first.wait()
    pid_file = first_log.parent / "pid"
    assert _leftovers(pid_file), "the dead worker's training should linger"

    second = start_worker(fast, tmp_path / "worker2.log")
    try:
        wait_until(lambda: service.test_info(sid, 1)["status"] in ("done", "failed"), "rerun", 240)
    finally:
        second.terminate()
        second.wait(timeout=60)

    assert not _leftovers(pid_file), "leftovers of attempt 1 must be killed"
    info = service.test_info(sid, 1)
    assert info["status"] == "done" and info["valid"], info["text"]
    assert info["text"].startswith("[Test #1] (2 tests remaining;")
    with service.db.transaction() as tx:
        assert queries.get_session(tx, sid).tests_used == 1  # type: ignore[union-attr]
        test = queries.get_test(tx, sid, 1)
        assert test is not None and len(test.stages) == 1
        assert test.stages[0].info["attempt"] == 2
        assert queries.get_job_for_test(tx, test.id).attempts == 2


def test_evaluator_failure_is_retried_then_refunded(tmp_path: Path, settings: Settings) -> None:
    # More val tokens than the split holds: the trusted evaluator exits 2 (the
    # operator's problem), which must never cost the agent a test.
    fast, service = _setup(tmp_path, settings, val_tokens=10**9, config={"max_iters": 2})
    sid = service.create_session("llm-pretrain-loss", "pytest")["session_id"]
    assert service.test(sid, wait=False).ok
    worker = Worker(fast, service.db, service.tasks)
    for _ in range(3):
        assert worker.run_once()
    info = service.test_info(sid, 1)
    assert info["status"] == "error"
    assert info["text"].startswith("[Test #1] was not counted: the infrastructure failed")
    assert "3 tests remaining" in info["text"]
    with service.db.transaction() as tx:
        assert queries.get_session(tx, sid).tests_used == 0  # type: ignore[union-attr]
    second = service.test(sid, wait=False)
    assert second.ok and second.data["test"] == 2  # numbering goes on; the budget does not
