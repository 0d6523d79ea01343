"""LocalRunner without isolation (an opt-in): exit codes, logs, time limits and cancel kill the whole tree."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from lossgym.sandbox.local_runner import LocalRunner
from lossgym.sandbox.runner import RunSpec, base_env


def _spec(tmp_path: Path, code: str, timeout_s: float = 30.0) -> RunSpec:
    argv = [sys.executable, "-c", code]
    return RunSpec(argv, tmp_path, tmp_path / "run.log", timeout_s, base_env({}))


def _alive(pid: int, grace_s: float = 3.0) -> bool:
    """Whether `pid` still runs after a short grace period (signals land asynchronously)."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        try:
            # A zombie (state Z) is dead for our purposes.
            if stat.read_text().split()[2] == "Z":
                return False
        except (FileNotFoundError, ProcessLookupError):
            return False
        time.sleep(0.05)
    return True


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


CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
time.sleep(300)
"""


def _child_pid(log: Path) -> int:
    for _ in range(100):
        text = log.read_text() if log.exists() else ""
        if text.strip():
            return int(text.split()[0])
        time.sleep(0.05)
    raise AssertionError("child never started")


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    start = time.monotonic()
    result = LocalRunner(isolation="none").run(_spec(tmp_path, CHILD, timeout_s=1.5))
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - start < 15
    assert not _alive(_child_pid(tmp_path / "run.log"))


def test_cancel_stops_the_run(tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    result = LocalRunner(isolation="none").run(_spec(tmp_path, CHILD), cancel)
    assert result.cancelled and not result.timed_out
    assert not _alive(_child_pid(tmp_path / "run.log"))


def test_children_left_behind_are_killed(tmp_path: Path) -> None:
    orphan_maker = CHILD.rsplit("time.sleep(300)", 1)[0]  # the parent exits at once
    result = LocalRunner(isolation="none").run(_spec(tmp_path, orphan_maker))
    assert result.exit_code == 0
    assert not _alive(_child_pid(tmp_path / "run.log"))
