"""One suite for every runner: local, local inside bubblewrap, and Docker.

The behaviour every runner shares (exit codes, logs, time limits, cancel,
cleanup after a dead worker) runs against all three; what isolation promises
(no network, nothing unmounted visible, read-only mounts, an unprivileged user)
runs against the isolating two.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lossgym.sandbox.runner import PYTHON, Mount, Runner, RunSpec, base_env
from tests.sandbox.runner_fixtures import ISOLATING_KINDS, RUNNER_KINDS, make_test_runner


@pytest.fixture(params=RUNNER_KINDS)
def runner(request: pytest.FixtureRequest) -> Runner:
    return make_test_runner(request.param)


@pytest.fixture(params=ISOLATING_KINDS)
def isolating(request: pytest.FixtureRequest) -> Runner:
    return make_test_runner(request.param)


def _spec(tmp_path: Path, code: str, timeout_s: float = 60.0, **kw: object) -> RunSpec:
    work = tmp_path / "run"
    work.mkdir(exist_ok=True)
    mounts = [Mount(work, writable=True), *kw.pop("mounts", [])]  # type: ignore[misc]
    return RunSpec(
        [PYTHON, "-c", code], work, tmp_path / "run.log", timeout_s, base_env({}),
        mounts=mounts, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _log(tmp_path: Path) -> str:
    return (tmp_path / "run.log").read_text()


def test_exit_code_and_log(runner: Runner, tmp_path: Path) -> None:
    result = runner.run(_spec(tmp_path, "print('hello'); raise SystemExit(3)"))
    assert result.exit_code == 3 and not result.timed_out and not result.cancelled
    assert _log(tmp_path).strip() == "hello"


def test_stderr_goes_to_the_log_too(runner: Runner, tmp_path: Path) -> None:
    result = runner.run(_spec(tmp_path, "import sys; print('oops', file=sys.stderr)"))
    assert result.exit_code == 0 and "oops" in _log(tmp_path)


def test_environment_is_only_the_specs(runner: Runner, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LOSSGYM_OPERATOR_KEY", "secret")
    spec = _spec(tmp_path, "import os; print(os.environ.get('LOSSGYM_OPERATOR_KEY'), os.getcwd())")
    spec.env["MY_VAR"] = "x"
    assert runner.run(spec).exit_code == 0
    assert _log(tmp_path).split() == ["None", str(tmp_path / "run")]


# A parent that forks a child; the child appends to a file every 50 ms, forever.
TICKER = """
import os, sys, time
if os.fork() == 0:
    while True:
        with open("ticks", "a") as f:
            f.write(".")
        time.sleep(0.05)
print("started", flush=True)
time.sleep(300)
"""


def _ticks_stopped(tmp_path: Path) -> bool:
    """True when the ticking child is dead: the file stops growing."""
    ticks = tmp_path / "run" / "ticks"
    before = ticks.stat().st_size if ticks.exists() else 0
    time.sleep(0.5)
    return (ticks.stat().st_size if ticks.exists() else 0) == before


def test_time_limit_kills_the_whole_tree(runner: Runner, tmp_path: Path) -> None:
    start = time.monotonic()
    result = runner.run(_spec(tmp_path, TICKER, timeout_s=3.0))
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - start < 20
    assert (tmp_path / "run" / "ticks").exists(), "the child should have run"
    assert _ticks_stopped(tmp_path), "the forked child must die with the run"


def test_cancel_stops_the_run(runner: Runner, tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(2.0, cancel.set).start()
    result = runner.run(_spec(tmp_path, TICKER), cancel)
    assert result.cancelled and not result.timed_out and result.exit_code is None
    assert _ticks_stopped(tmp_path)


def test_kill_stale_ends_a_run_a_dead_worker_left(runner: Runner, tmp_path: Path) -> None:
    """A new worker finds the pid file of an orphaned run and kills it."""
    pid_file = tmp_path / "pid"
    spec = _spec(tmp_path, TICKER, pid_file=pid_file)
    results = []
    orphan = threading.Thread(target=lambda: results.append(runner.run(spec)))
    orphan.start()
    for _ in range(200):
        if "started" in (_log(tmp_path) if (tmp_path / "run.log").exists() else ""):
            break
        time.sleep(0.05)
    runner.kill_stale(pid_file)
    orphan.join(timeout=30)
    assert not orphan.is_alive() and results[0].exit_code != 0
    assert _ticks_stopped(tmp_path)


def test_unmounted_paths_are_invisible(isolating: Runner, tmp_path: Path) -> None:
    secret = tmp_path / "val_000000.bin"
    secret.write_text("validation tokens")
    code = f"import os; print(os.path.exists({str(secret)!r}), os.path.exists('/root/.ssh'))"
    assert isolating.run(_spec(tmp_path, code)).exit_code == 0
    assert _log(tmp_path).split() == ["False", "False"]


def test_read_only_mounts_cannot_be_written(isolating: Runner, tmp_path: Path) -> None:
    shared = tmp_path / "shard.bin"
    shared.write_text("train tokens")
    code = f"""
try:
    open({str(shared)!r}, "a").write("forged")
except OSError as error:
    print("refused", error.errno)
open("out.txt", "w").write("ok")
"""
    assert isolating.run(_spec(tmp_path, code, mounts=[Mount(shared)])).exit_code == 0
    assert "refused" in _log(tmp_path) and shared.read_text() == "train tokens"
    assert (tmp_path / "run" / "out.txt").read_text() == "ok"


def test_no_network(isolating: Runner, tmp_path: Path) -> None:
    code = """
import socket
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    print("connected")
except OSError:
    print("unreachable")
print(sorted(name for _, name in socket.if_nameindex()))
"""
    assert isolating.run(_spec(tmp_path, code)).exit_code == 0
    assert _log(tmp_path).splitlines() == ["unreachable", "['lo']"]


def test_runs_as_an_unprivileged_user(isolating: Runner, tmp_path: Path) -> None:
    assert isolating.run(_spec(tmp_path, "import os; print(os.getuid())")).exit_code == 0
    assert _log(tmp_path).strip() == "65534"
