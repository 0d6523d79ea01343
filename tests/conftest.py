"""Shared fixtures: prepared data, a fresh database per test, a live HTTP server."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from lossgym.config import Settings
from lossgym.env.catalog import TaskCache
from lossgym.env.service import EpisodeService, PreflightCheck
from lossgym.store.db import Database

REPO = Path(__file__).resolve().parent.parent
OPERATOR_KEY = "test-operator-key"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that train (marked slow) share one xdist group: under `-n 2 --dist loadgroup`
    (make test) they run one at a time on one worker, so two trainings never compete for
    the cores, while the other worker takes everything else."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("training"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The embedded dataset, prepared once (idempotent; `make test` prepares it first)."""
    from lossgym.trainer.data import prepare_dataset

    path = Path(os.environ.get("LOSSGYM_DATA_DIR", REPO / "data")).resolve()
    prepare_dataset("shakespeare", path, progress=lambda _msg: None)
    return path


def isolation_for_tests() -> str:
    """bubblewrap where it works (CI provides it); elsewhere the tests that are not about
    the sandbox run agent code unisolated, and the sandbox's own tests skip."""
    from lossgym.sandbox.local_runner import bwrap_problem

    return "auto" if bwrap_problem() is None else "none"


@pytest.fixture
def settings(tmp_path: Path, data_dir: Path) -> Settings:
    return Settings(
        database=tmp_path / "lossgym.db",
        runs_dir=tmp_path / "runs",
        data_dir=data_dir,
        worker_in_api=False,
        operator_key=OPERATOR_KEY,
        worker_poll_s=0.2,
        isolation=isolation_for_tests(),
        # Sandboxes started ahead hold ~1 GB each while idle; the tests that
        # are about them turn this on (tests/sandbox/test_warm_start.py).
        warm_start=False,
    ).resolved()


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database)
    database.create_schema()
    yield database
    database.dispose()


def make_service(
    settings: Settings, db: Database, preflight: PreflightCheck | None = None
) -> EpisodeService:
    """The episode service with the pre-flight of the configured sandbox, as `serve` has."""
    from lossgym.sandbox.preflight import Preflight
    from lossgym.sandbox.runner import make_runner

    if preflight is None:
        preflight = Preflight(make_runner(settings), settings.runs_dir / "preflight")
    return EpisodeService(settings, db, TaskCache(settings.tasks_dir), preflight)


@pytest.fixture(scope="session")
def shared_preflight(tmp_path_factory: pytest.TempPathFactory) -> PreflightCheck:
    """One pre-flight for the tests' services: it keeps verdicts by workspace and limits,
    so the many sessions on the unmodified template are smoke-run once, not per test."""
    from lossgym.sandbox.preflight import Preflight
    from lossgym.sandbox.runner import make_runner

    work = tmp_path_factory.mktemp("preflight")
    runner = make_runner(Settings(database=work / "none.db", isolation=isolation_for_tests()))
    return Preflight(runner, work, per_minute=1000)


@pytest.fixture
def service(settings: Settings, db: Database, shared_preflight: PreflightCheck) -> EpisodeService:
    return make_service(settings, db, shared_preflight)


def fast_tasks_dir(
    tmp_path: Path, preflight_time_limit_s: float | None = None, **stage_overrides: object
) -> Path:
    """A copy of the task whose tiny-cpu training is a few seconds long.

    Tasks are data: the copy differs only in its task.yaml, no code changes.
    `stage_overrides` replace keys of the stage (e.g. val_tokens) or, under
    `config`, its training knobs.
    """
    import shutil

    import yaml

    tasks = tmp_path / "tasks"
    shutil.copytree(REPO / "tasks" / "llm-pretrain-loss", tasks / "llm-pretrain-loss")
    spec_path = tasks / "llm-pretrain-loss" / "task.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    stage = spec["profiles"]["tiny-cpu"]["stages"][0]
    stage["config"].update(max_iters=30, eval_interval=10, eval_iters=2, log_interval=5)
    stage["val_tokens"] = 4096
    for key, value in stage_overrides.items():
        if key == "config":
            stage["config"].update(value)  # type: ignore[arg-type]
        else:
            stage[key] = value
    if preflight_time_limit_s is not None:
        spec["preflight"]["time_limit_s"] = preflight_time_limit_s
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return tasks


SERVER_LOGS = itertools.count(1)
ANNOUNCED = re.compile(rb"^LossGym on (http://\S+)")


class _ServerOutput(threading.Thread):
    """Copies the server's output into its log; `announced` is set once the server named
    the address it listens on (or its output ended: it exited)."""

    def __init__(self, stream: IO[bytes], log_path: Path) -> None:
        super().__init__(daemon=True)  # a grandchild may hold the pipe open after the server
        self.stream, self.log_path = stream, log_path
        self.base: str | None = None
        self.announced = threading.Event()

    def run(self) -> None:
        with open(self.log_path, "wb") as log:
            for line in self.stream:
                log.write(line)
                log.flush()
                if self.base is None and (found := ANNOUNCED.match(line)):
                    self.base = found[1].decode()
                    self.announced.set()
        self.announced.set()


@dataclass(frozen=True)
class LiveServer:
    base: str  # e.g. http://127.0.0.1:41233
    pid: int
    log_path: Path  # the server's stdout and stderr


@contextmanager
def run_server(settings: Settings, worker: bool) -> Iterator[str]:
    """`lossgym serve --port 0` in a subprocess; yields its base URL."""
    with start_server(settings, worker) as server:
        yield server.base


@contextmanager
def start_server(
    settings: Settings, worker: bool, python_flags: tuple[str, ...] = ()
) -> Iterator[LiveServer]:
    """`python [python_flags] -m lossgym.cli serve --port 0` in a subprocess.

    The OS hands the server its port: the server listens before it prints the
    "LossGym on URL" line it is read from, so requests queue until it serves them.
    """
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)  # only a server asked to (-X importtime) traces
    env.update(
        PYTHONUNBUFFERED="1",
        LOSSGYM_DATABASE=str(settings.database),
        LOSSGYM_RUNS_DIR=str(settings.runs_dir),
        LOSSGYM_DATA_DIR=str(settings.data_dir),
        LOSSGYM_OPERATOR_KEY=settings.operator_key,
        LOSSGYM_TASKS_DIR=str(settings.tasks_dir),
        LOSSGYM_LEASE_S=str(settings.lease_s),
        LOSSGYM_PREFLIGHT_PER_MINUTE=str(settings.preflight_per_minute),
        LOSSGYM_TEST_WAIT_S=str(settings.test_wait_s),
        LOSSGYM_WORKER_POLL_S="0.2",
        LOSSGYM_RUNNER=settings.runner,
        LOSSGYM_ISOLATION=settings.isolation,
        LOSSGYM_DOCKER_IMAGE=settings.docker_image,
        LOSSGYM_DOCKER_HOST_PYTHON=str(settings.docker_host_python).lower(),
        LOSSGYM_WARM_START=str(settings.warm_start).lower(),
        LOSSGYM_SLURM_POLL_S=str(settings.slurm_poll_s),
    )
    log_path = settings.database.parent / f"server-{next(SERVER_LOGS)}.log"
    argv = [sys.executable, *python_flags, "-m", "lossgym.cli", "serve", "--port", "0"]
    argv.append("--worker" if worker else "--no-worker")
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO
    )
    assert proc.stdout is not None
    output = _ServerOutput(proc.stdout, log_path)
    output.start()
    try:
        yield LiveServer(_wait_healthy(proc, output), proc.pid, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        output.join(timeout=10)


def _wait_healthy(proc: subprocess.Popen[bytes], output: _ServerOutput) -> str:
    """The server's base URL once it answers /health; raises with its log if it cannot."""
    if not output.announced.wait(timeout=60) or output.base is None:
        problem = "did not say where it listens" if proc.poll() is None else "exited early"
        raise RuntimeError(f"server {problem}:\n{_log(output)}")
    try:  # it listens already: this request waits in the queue until the app serves it
        reply = httpx.get(f"{output.base}/health", timeout=60)
    except httpx.HTTPError as error:
        raise RuntimeError(f"server did not become healthy ({error!r}):\n{_log(output)}") from None
    if reply.status_code != 200:
        raise RuntimeError(f"server /health said {reply.status_code}:\n{_log(output)}")
    return output.base


def _log(output: _ServerOutput) -> str:
    if output.is_alive():
        output.join(timeout=5)  # the rest of what an exiting server wrote
    return output.log_path.read_text(errors="replace") if output.log_path.exists() else ""


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    """A live server with no worker: jobs queue but never run."""
    with run_server(settings, worker=False) as base:
        yield base


@pytest.fixture
def server_with_worker(settings: Settings) -> Iterator[str]:
    with run_server(settings, worker=True) as base:
        yield base


@pytest.fixture
def new_session() -> Callable[[str], dict]:
    def create(base: str, agent: str = "pytest") -> dict:
        reply = httpx.post(f"{base}/sessions", json={"task": "llm-pretrain-loss", "agent": agent})
        assert reply.status_code == 201, reply.text
        body = reply.json()
        body["headers"] = {"Authorization": f"Bearer {body['token']}"}
        return body

    return create


def start_worker(settings: Settings, log: Path, **env_extra: str) -> subprocess.Popen[bytes]:
    """`lossgym worker` in a subprocess against `settings`' database, runs and tasks;
    `env_extra`: more LOSSGYM_* variables (the runner, say)."""
    env = dict(os.environ)
    env.update(
        LOSSGYM_DATABASE=str(settings.database), LOSSGYM_RUNS_DIR=str(settings.runs_dir),
        LOSSGYM_DATA_DIR=str(settings.data_dir), LOSSGYM_TASKS_DIR=str(settings.tasks_dir),
        LOSSGYM_LEASE_S=str(settings.lease_s), LOSSGYM_WORKER_POLL_S="0.2", **env_extra,
    )  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lossgym.cli", "worker"], env=env, cwd=REPO,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
