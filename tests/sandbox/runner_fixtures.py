"""The runners under test, each skipped with a reason where this machine lacks it."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lossgym.sandbox.runner import Runner, python_runtime

DOCKER_IMAGE = os.environ.get("LOSSGYM_TEST_DOCKER_IMAGE", "lossgym-base:bookworm")
RUNNER_KINDS = ["local", "bwrap", "docker", "slurm"]
ISOLATING_KINDS = ["bwrap", "docker", "slurm"]


def bwrap_problem() -> str | None:
    from lossgym.sandbox.local_runner import bwrap_problem as problem

    found = problem()
    return f"{found} (.ci/provision-docker installs it)" if found else None


def docker_problem() -> str | None:
    from lossgym.sandbox.docker_runner import DockerUnavailable, docker_client

    try:
        client = docker_client()
    except DockerUnavailable as error:
        return f"{error} (.ci/provision-docker starts one)"
    try:
        client.images.get(DOCKER_IMAGE)
    except Exception:
        return f"image {DOCKER_IMAGE} is missing (.ci/provision-docker builds it)"
    return None


def slurm_problem() -> str | None:
    """Why no Slurm cluster answers here, or None (.ci/provision-slurm starts one)."""
    import shutil
    import subprocess

    if shutil.which("sbatch") is None:
        return "Slurm is not installed (.ci/provision-slurm installs and starts it)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"scontrol ping failed: {error}"
    if "UP" not in ping.stdout:
        return f"no slurmctld answers ({ping.stdout.strip()}; .ci/provision-slurm starts one)"
    return bwrap_problem()


def make_test_runner(kind: str, **docker_options: object) -> Runner:
    """A runner of `kind`, or skip the test with the reason it cannot run here."""
    if kind == "slurm":
        if problem := slurm_problem():
            pytest.skip(problem)
        from lossgym.sandbox.slurm_runner import SlurmRunner

        return SlurmRunner(container="bwrap", poll_s=0.25)
    if kind == "local":
        from lossgym.sandbox.local_runner import LocalRunner

        return LocalRunner(isolation="none")
    if kind == "bwrap":
        if problem := bwrap_problem():
            pytest.skip(problem)
        from lossgym.sandbox.local_runner import LocalRunner

        return LocalRunner(isolation="bwrap")
    if problem := docker_problem():
        pytest.skip(problem)
    from lossgym.sandbox.docker_runner import DockerRunner

    return DockerRunner(
        DOCKER_IMAGE,
        python=__import__("sys").executable,
        runtime=python_runtime(),
        **docker_options,  # type: ignore[arg-type]
    )


class Lifeline:
    """A FIFO a run's process holds open for writing as long as it lives.

    The test holds the reading end: the first bytes that arrive say the process
    started, and end-of-file says every process that held it is dead. Both are
    events the test waits on, where it would otherwise watch a file for growth.
    """

    def __init__(self, directory: Path, name: str = "lifeline") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / name
        os.mkfifo(self.path)
        os.chmod(self.path, 0o666)  # the sandbox user opens it too
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # no writer needed yet
        self.received = b""
        self.ended = False  # end-of-file: a writer came, and none is left

    def started(self, timeout_s: float = 60.0) -> bool:
        """Wait until something was written; False if nothing was within the timeout."""
        self._read_until(lambda: bool(self.received) or self.ended, timeout_s)
        return bool(self.received)

    def all_dead(self, timeout_s: float = 60.0) -> bool:
        """Wait until every writer has gone (closing it, or dying); False on the timeout."""
        return self._read_until(lambda: self.ended, timeout_s)

    def cancel_once_started(self, cancel: threading.Event) -> Callable[[], bool]:
        """From a thread, set `cancel` once the run writes here (or after the timeout).

        Returns a join that says whether the run had started when it was cancelled.
        """
        started: list[bool] = []

        def wait_then_cancel() -> None:
            started.append(self.started())
            cancel.set()

        thread = threading.Thread(target=wait_then_cancel)
        thread.start()

        def join() -> bool:
            thread.join()
            return started == [True]

        return join

    def close(self) -> None:
        os.close(self._fd)  # a writer still alive gets SIGPIPE on its next write

    def _read_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)  # POLLHUP is always reported
        deadline = time.monotonic() + timeout_s
        while not done():
            remaining_ms = max(0.0, deadline - time.monotonic()) * 1000
            if not poller.poll(remaining_ms):  # a timeout of 0 still sees what is there
                return False
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            self.received += chunk
            self.ended = not chunk
        return True


def await_hand_over(spec: object, cancel: threading.Event | None, timeout_s: float = 60) -> bool:
    """What a fake runner does first: a warm-started run (`--wait-inbox DIR`) waits
    for its job file, as the real processes do. False when it was stopped first."""
    argv = spec.argv  # type: ignore[attr-defined]
    if "--wait-inbox" not in argv:
        return True
    job = Path(argv[argv.index("--wait-inbox") + 1]) / "job.json"
    deadline = time.monotonic() + timeout_s
    while not job.exists():
        if (cancel is not None and cancel.is_set()) or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll a condition nothing signals (a file another process writes, a scheduler's
    state); fail the test, naming `what`, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
