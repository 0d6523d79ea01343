"""Runners start one command in isolation, stream its output to a log, and stop it.

`Runner` is the small interface the worker uses. Two implementations pass one
shared test suite (tests/sandbox/test_runners.py):

- `LocalRunner` (local_runner.py): a subprocess in its own process group,
  optionally inside bubblewrap (no network, read-only binds);
- `DockerRunner` (docker_runner.py): a container with no network, a read-only
  root, a non-root user and resource limits.

A `RunSpec` says what the command may see: `mounts` lists every host path it
needs, each at the same path inside the sandbox, read-only unless marked
writable. An isolating runner shows it nothing else (besides the Python runtime
it needs to start), which is how training never sees the validation shards.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lossgym.config import Settings

PYTHON = "python"  # argv[0] placeholder: each runner substitutes its own interpreter


@dataclass(frozen=True)
class Mount:
    path: Path  # visible at the same path inside the sandbox
    writable: bool = False


@dataclass
class RunSpec:
    argv: list[str]
    cwd: Path
    log_path: Path
    timeout_s: float
    env: dict[str, str] = field(default_factory=dict)
    pid_file: Path | None = None  # records how a later worker can find and kill this run
    mounts: list[Mount] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)  # whole GPUs (ids) given to this run


@dataclass
class RunResult:
    exit_code: int | None  # None when killed for a timeout or cancel
    timed_out: bool
    cancelled: bool
    seconds: float


class Runner(Protocol):
    name: str

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        """Run to completion, the time limit, or `cancel`; output goes to spec.log_path."""
        ...

    def kill_stale(self, pid_file: Path) -> None:
        """Kill what a run that wrote `pid_file` (under a dead worker) left running."""
        ...


def base_env(extra: dict[str, str]) -> dict[str, str]:
    """A clean environment: nothing from the service (keys, settings) leaks to agent code."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra)
    return env


def write_pid_file(spec: RunSpec, owner: str, handle: object) -> None:
    """Record `<owner> <handle> <cwd>` so a later worker can find and kill this run."""
    if spec.pid_file is not None:
        spec.pid_file.write_text(f"{owner} {handle} {spec.cwd}\n")


def read_pid_file(pid_file: Path) -> tuple[str, str] | None:
    """(owner, handle) from a pid file, or None when it is missing or garbled."""
    try:
        owner, handle, _cwd = pid_file.read_text().split(maxsplit=2)
    except (OSError, ValueError):
        return None
    return owner, handle


def prepare_writable(spec: RunSpec) -> None:
    """Writable mounts must exist and accept the sandbox's unprivileged user."""
    for mount in spec.mounts:
        if mount.writable:
            mount.path.mkdir(parents=True, exist_ok=True)
            os.chmod(mount.path, 0o777)


def make_runner(settings: Settings) -> Runner:
    """The runner the settings name (`LOSSGYM_RUNNER`, `LOSSGYM_ISOLATION`)."""
    if settings.runner == "docker":
        from lossgym.sandbox.docker_runner import DockerRunner

        return DockerRunner.from_settings(settings)
    from lossgym.sandbox.local_runner import LocalRunner

    return LocalRunner(isolation=settings.isolation, user=settings.sandbox_user)


def python_runtime() -> list[Mount]:
    """What a sandbox needs, read-only, to run this very interpreter and `lossgym`.

    The virtual environment, the Python installation it links to, and the
    `lossgym` package directory (not the repository: `data/` may live there).
    """
    import sys

    import lossgym

    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(lossgym.__file__).parent]
    unique: list[Mount] = []
    for path in paths:
        real = path.resolve()
        if str(real) in ("/usr", "/usr/local", "/"):  # the system's own: the sandbox has one
            continue
        if not any(real == m.path or real.is_relative_to(m.path) for m in unique):
            unique.append(Mount(real))
    return unique
