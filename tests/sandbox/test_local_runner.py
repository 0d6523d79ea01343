"""LocalRunner without isolation (an opt-in): exit codes, logs, time limits and cancel kill the whole tree."""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from pathlib import Path

from lossgym.sandbox.local_runner import LocalRunner
from lossgym.sandbox.runner import RunSpec, base_env
from tests.sandbox.runner_fixtures import Lifeline


def _spec(tmp_path: Path, code: str, timeout_s: float = 30.0) -> RunSpec:
    argv = [sys.executable, "-c", code]
    return RunSpec(argv, tmp_path, tmp_path / "run.log", timeout_s, base_env({}))


def _dies(pid: int, timeout_s: float = 60.0) -> bool:
    """Whether `pid` ends (a zombie counts as dead) within the timeout: a signal lands
    asynchronously, so wait for the kernel to say it exited (its pidfd turns readable)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout_s)[0])
    finally:
        os.close(pidfd)


def test_exit_code_and_log(tmp_path: Path) -> None:
    result = LocalRunner(isolation="none").run(
        _spec(tmp_path, "print('hello'); raise SystemExit(3)")
    )
    assert result.exit_code == 3 and not result.timed_out and not result.cancelled
    assert (tmp_path / "run.log").read_text().strip() == "hello"


def test_environment_is_clean(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LOSSGYM_OPERATOR_KEY", "secret")
    code = "import os; print(sorted(k for k in os.environ if k.startswith('LOSSGYM')))"
    assert LocalRunner(isolation="none").run(_spec(tmp_path, code)).exit_code == 0
    assert (tmp_path / "run.log").read_text().strip() == "[]"


SPAWN = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
"""
CHILD = SPAWN + "time.sleep(300)\n"  # the parent stays, until the runner ends it


def _child_pid(log: Path) -> int:
    """The pid the run printed; the run has ended, so its log is complete."""
    words = log.read_text().split() if log.exists() else []
    assert words, "child never started"
    return int(words[0])


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    start = time.monotonic()
    result = LocalRunner(isolation="none").run(_spec(tmp_path, CHILD, timeout_s=1.5))
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - start < 15
    assert _dies(_child_pid(tmp_path / "run.log"))


def test_cancel_stops_the_run(tmp_path: Path) -> None:
    lifeline = Lifeline(tmp_path)  # the parent writes to it once its child runs
    cancel = threading.Event()
    had_started = lifeline.cancel_once_started(cancel)
    code = SPAWN + "open('lifeline', 'w').write('spawned')\n" + "time.sleep(300)\n"
    try:
        result = LocalRunner(isolation="none").run(_spec(tmp_path, code), cancel)
        started = had_started()
    finally:
        lifeline.close()
    assert started, "the run never said its child runs"
    assert result.cancelled and not result.timed_out
    assert _dies(_child_pid(tmp_path / "run.log"))


def test_children_left_behind_are_killed(tmp_path: Path) -> None:
    result = LocalRunner(isolation="none").run(_spec(tmp_path, SPAWN))  # the parent exits
    assert result.exit_code == 0
    assert _dies(_child_pid(tmp_path / "run.log"))
