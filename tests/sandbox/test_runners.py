"""One suite for every runner: local, local inside bubblewrap, and Docker.

The behaviour every runner shares (exit codes, logs, time limits, cancel,
cleanup after a dead worker) runs against all three; what isolation promises
(no network, nothing unmounted visible, read-only mounts, an unprivileged user)
runs against the isolating two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lossgym.sandbox.runner import PYTHON, Limits, Mount, Runner, RunSpec, base_env, read_pid_file
from tests.sandbox.runner_fixtures import (
    ISOLATING_KINDS,
    RUNNER_KINDS,
    Lifeline,
    make_test_runner,
    wait_until,
)


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


@pytest.fixture
def lifeline(tmp_path: Path) -> Iterator[Lifeline]:
    """The FIFO "lifeline" in the run directory; the ticking child holds it (see Lifeline)."""
    fifo = Lifeline(tmp_path / "run")
    yield fifo
    fifo.close()


# A parent that forks a child; the child holds the lifeline and ticks into it every
# 50 ms, forever (a tick into a closed lifeline kills it: nothing outlives the test).
TICKER = """
import os, time
if os.fork() == 0:
    lifeline = os.open("lifeline", os.O_WRONLY)
    while True:
        os.write(lifeline, b".")
        time.sleep(0.05)
time.sleep(300)
"""


def test_time_limit_kills_the_whole_tree(
    runner: Runner, tmp_path: Path, lifeline: Lifeline
) -> None:
    start = time.monotonic()
    result = runner.run(_spec(tmp_path, TICKER, timeout_s=3.0))
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - start < 20
    assert lifeline.started(timeout_s=0), "the child should have run"
    assert lifeline.all_dead(), "the forked child must die with the run"


def test_cancel_stops_the_run(runner: Runner, tmp_path: Path, lifeline: Lifeline) -> None:
    cancel = threading.Event()
    had_started = lifeline.cancel_once_started(cancel)
    result = runner.run(_spec(tmp_path, TICKER), cancel)
    assert had_started(), "the child should have run"
    assert result.cancelled and not result.timed_out and result.exit_code is None
    assert lifeline.all_dead(), "the forked child must die with the run"


def test_kill_stale_ends_a_run_a_dead_worker_left(
    runner: Runner, tmp_path: Path, lifeline: Lifeline
) -> None:
    """A new worker finds the pid file of an orphaned run and kills it."""
    pid_file = tmp_path / "pid"
    spec = _spec(tmp_path, TICKER, pid_file=pid_file)
    results: list[object] = []

    def orphaned_run() -> None:
        try:
            results.append(runner.run(spec).exit_code)
        except OSError as error:  # Slurm: a job cancelled from outside is an infra failure
            results.append(error)

    orphan = threading.Thread(target=orphaned_run)
    orphan.start()
    assert lifeline.started(), "the child should have run"
    wait_until(lambda: read_pid_file(pid_file) is not None, "the run's pid file")
    runner.kill_stale(pid_file)
    orphan.join(timeout=60)
    assert not orphan.is_alive() and results[0] != 0
    assert lifeline.all_dead(), "the forked child must die with the run"


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


# A child that leaves the process group and the session (setsid), then ticks forever.
SETSID_TICKER = """
import os, time
ticking, says_ticking = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # and double-forks, so it is nobody's child
        lifeline = os.open("lifeline", os.O_WRONLY)
        os.write(lifeline, b".")
        os.write(says_ticking, b"!")
        while True:
            time.sleep(0.05)
            os.write(lifeline, b".")
    os._exit(0)
os.read(ticking, 1)  # the escaped child ticks: only now may the run end
"""


@pytest.mark.parametrize("how", ["exits", "times out"])
def test_setsid_children_die_with_the_run(
    runner: Runner, tmp_path: Path, lifeline: Lifeline, how: str
) -> None:
    code = SETSID_TICKER if how == "exits" else SETSID_TICKER + "time.sleep(300)\n"
    result = runner.run(_spec(tmp_path, code, timeout_s=4.0))
    assert result.timed_out == (how == "times out")
    assert lifeline.started(timeout_s=0), "the escaped child should have run"
    assert lifeline.all_dead(), "a child that called setsid must die with the run"


def _limited(runner: Runner) -> None:
    """Skip when this runner cannot enforce limits here (local runners need a cgroup)."""
    problem = getattr(runner, "limits_problem", None)
    if problem:
        pytest.skip(f"limits are not enforced here: {problem}")


ALLOCATE = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))\n"


def test_memory_limit_kills_the_run_and_says_so(runner: Runner, tmp_path: Path) -> None:
    _limited(runner)
    spec = _spec(tmp_path, ALLOCATE, limits=Limits(memory_bytes=256 * 2**20))
    result = runner.run(spec)
    assert result.exit_code not in (0, None)
    assert "[sandbox] killed: out of memory (limit 0.25 GiB)" in _log(tmp_path)


FORKS = """
import os, time
children = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
except OSError as error:
    print("refused after", children, type(error).__name__)
"""


def test_process_limit_stops_a_fork_bomb(runner: Runner, tmp_path: Path) -> None:
    _limited(runner)
    result = runner.run(_spec(tmp_path, FORKS, limits=Limits(pids=32)))
    assert result.exit_code == 0
    refused = _log(tmp_path).split()
    assert refused[:2] == ["refused", "after"] and int(refused[2]) < 32, _log(tmp_path)


# Two threads spin for ~2 s of wall time; the process reports the CPU time it got.
SPIN = """
import threading, time
def spin():
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        pass
threads = [threading.Thread(target=spin) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(time.process_time())
"""


def test_cpu_limit_holds(runner: Runner, tmp_path: Path) -> None:
    _limited(runner)
    assert runner.run(_spec(tmp_path, SPIN, limits=Limits(cpus=0.5))).exit_code == 0
    cpu_seconds = float(_log(tmp_path).split()[-1])
    assert cpu_seconds < 1.5, f"0.5 CPU for ~2 s of wall time, but it used {cpu_seconds:.2f} s"


def test_no_secret_is_visible_inside(isolating: Runner, tmp_path: Path, monkeypatch) -> None:
    """Nothing of the service: its environment, its parent's /proc, a database, a key file."""
    monkeypatch.setenv("LOSSGYM_OPERATOR_KEY", "the-operator-key")
    database = tmp_path / "lossgym.db"
    database.write_text("sqlite")
    code = f"""
import os
found = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if b"the-operator-key" in open(f"/proc/{{pid}}/environ", "rb").read():
                found.append(pid)
        except OSError:
            pass
print("environ", found, "db", os.path.exists({str(database)!r}), "ppid", os.getppid())
"""
    assert isolating.run(_spec(tmp_path, code)).exit_code == 0
    words = _log(tmp_path).split()
    assert words[:4] == ["environ", "[]", "db", "False"], _log(tmp_path)


def test_a_mount_that_holds_the_database_is_refused(isolating: Runner, tmp_path: Path) -> None:
    hidden = tmp_path / "var" / "lossgym.db"
    hidden.parent.mkdir()
    hidden.write_text("sqlite")
    isolating.hidden = [hidden]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="holds"):
        isolating.run(_spec(tmp_path, "print(1)", mounts=[Mount(hidden.parent)]))


def test_writable_mounts_are_not_world_writable(runner: Runner, tmp_path: Path) -> None:
    assert runner.run(_spec(tmp_path, "open('out.txt', 'w').write('ok')")).exit_code == 0
    mode = (tmp_path / "run").stat().st_mode & 0o777
    assert mode == 0o700, oct(mode)
    assert (tmp_path / "run" / "out.txt").read_text() == "ok"


def test_a_root_worker_runs_agent_code_as_the_sandbox_user(isolating: Runner) -> None:
    """Outside the sandbox too, the run's processes and files belong to uid 65534, not root."""
    import os
    import tempfile

    from lossgym.sandbox.local_runner import unreachable_ancestor
    from lossgym.sandbox.runner import python_runtime

    if os.geteuid() != 0:
        pytest.skip("only a root worker drops privileges")
    blocked = [b for m in python_runtime() if (b := unreachable_ancestor(m.path))]
    if blocked and isolating.name == "bwrap":
        pytest.skip(f"uid 65534 cannot reach the Python runtime ({blocked[0]}; .ci/run opens it)")
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        os.chmod(tmp, 0o711)
        code = "import os; open('mine', 'w').write(str(os.getuid()))"
        assert isolating.run(_spec(Path(tmp), code)).exit_code == 0
        owner = (Path(tmp) / "run" / "mine").stat().st_uid
        assert owner == 65534, f"a file the sandbox wrote belongs to uid {owner} on the host"
