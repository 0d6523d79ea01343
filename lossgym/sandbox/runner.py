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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lossgym.config import Settings

PYTHON = "{python}"  # argv placeholder: each runner substitutes its own interpreter


@dataclass(frozen=True)
class Limits:
    """What one run may use; None: no limit of that kind (SPEC §6.2, `limits:` in task.yaml)."""

    memory_bytes: int | None = None  # RAM (and swap) of the whole process tree
    cpus: float | None = None  # CPU time, in cores
    pids: int | None = None  # processes and threads at once

    @classmethod
    def of(cls, spec: object) -> Limits:
        """From a task's `limits:` (env.task.LimitsSpec: memory, cpus, pids)."""
        return cls(spec.memory, spec.cpus, spec.pids)  # type: ignore[attr-defined]

    def memory_text(self) -> str:
        return f"{self.memory_bytes / 2**30:g} GiB" if self.memory_bytes else "none"

    def describe(self) -> str:
        parts = []
        if self.memory_bytes:
            parts.append(f"memory {self.memory_text()}")
        if self.cpus:
            parts.append(f"{self.cpus:g} CPUs")
        if self.pids:
            parts.append(f"{self.pids} processes")
        return ", ".join(parts) or "none"


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
    limits: Limits = field(default_factory=Limits)
    # A runner whose runs may wait in a queue (`queues = True`) calls this with the
    # wall-clock time the command started, so a time limit can count from then.
    on_start: Callable[[float], None] | None = None


@dataclass
class RunResult:
    exit_code: int | None  # None when killed for a timeout or cancel
    timed_out: bool
    cancelled: bool
    seconds: float


class Runner(Protocol):
    name: str  # "bwrap", "docker", "slurm", or "local" (no isolation: an explicit opt-in)
    isolated: bool  # False only for the local runner without bubblewrap

    def describe(self) -> str:
        """One line for the start-up banner: the sandbox and how limits are enforced."""
        ...

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        """Run to completion, the time limit, or `cancel`; output goes to spec.log_path."""
        ...

    def kill_stale(self, pid_file: Path) -> None:
        """Kill what a run that wrote `pid_file` (under a dead worker) left running."""
        ...


def is_queuing(runner: object) -> bool:
    """A runner whose runs may wait in a scheduler's queue (`queues = True`: Slurm):
    nothing is started ahead for it, and a run's time limit counts from its start."""
    return bool(getattr(runner, "queues", False))


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


def substitute_python(argv: list[str], python: str) -> list[str]:
    """`argv` with every PYTHON placeholder replaced by the runner's interpreter."""
    return [python if arg == PYTHON else arg for arg in argv]


def check_mounts(spec: RunSpec, hidden: list[Path]) -> None:
    """Refuse a run that would see a hidden path (the database): ValueError."""
    for mount in spec.mounts:
        for path in hidden:
            if path == mount.path or path.is_relative_to(mount.path):
                raise ValueError(f"refusing to mount {mount.path}: it holds {path}")


def oom_line(limit: str) -> str:
    """The line a runner appends to a run's log when the kernel killed it for memory."""
    return f"\n[sandbox] killed: out of memory (limit {limit})\n"


def prepare_writable(spec: RunSpec, owner: tuple[int, int] | None) -> None:
    """Writable mounts exist, belong to the user the run writes as, and only to it.

    `owner` is that user (uid, gid) when it differs from this process's; only
    root can hand a directory over, and a root worker always does.
    """
    for mount in spec.mounts:
        if mount.writable:
            mount.path.mkdir(parents=True, exist_ok=True)
            if owner is not None and os.geteuid() == 0:
                os.chown(mount.path, *owner)
            os.chmod(mount.path, 0o700)


def parse_user(text: str) -> tuple[int, int]:
    uid, _, gid = text.partition(":")
    return int(uid), int(gid or uid)


def make_runner(settings: Settings) -> Runner:
    """The runner the settings name (`LOSSGYM_RUNNER`, `LOSSGYM_ISOLATION`).

    The local runner isolates with bubblewrap unless `isolation` is "none", an
    explicit opt-in; "auto" (the default) fails with the reason where
    bubblewrap cannot work, rather than run agent code unisolated.
    """
    hidden = [settings.database]
    if settings.runner == "docker":
        from lossgym.sandbox.docker_runner import DockerRunner

        return DockerRunner.from_settings(settings, hidden=hidden)
    if settings.runner == "slurm":
        from lossgym.sandbox.slurm_runner import SlurmRunner

        return SlurmRunner.from_settings(settings, hidden=hidden)
    from lossgym.sandbox.local_runner import LocalRunner

    isolation = "none" if settings.isolation == "none" else "bwrap"
    try:
        return LocalRunner(isolation=isolation, user=settings.sandbox_user, hidden=hidden)
    except RuntimeError as error:  # bubblewrap cannot work here: say what can
        raise RuntimeError(f"{error}. {NO_SANDBOX_HINT}") from error


NO_SANDBOX_HINT = (
    "Agent code runs only in a sandbox: install bubblewrap (apt-get install bubblewrap, "
    "dnf install bubblewrap, ...), or use Docker (LOSSGYM_RUNNER=docker), or opt in to "
    "running it unisolated with LOSSGYM_ISOLATION=none (not for untrusted agents)"
)
UNISOLATED_WARNING = (
    "WARNING: agent code runs WITHOUT a sandbox (LOSSGYM_ISOLATION=none): it can read this "
    "machine's files and reach its network. Use this only for agents you trust; every test "
    "run this way is marked 'unisolated' on the leaderboard."
)


def redact_host_paths(text: str, more: dict[Path, str] | None = None) -> str:
    """`text` with this host's install paths replaced by tags (<venv>, <python>, ...).

    Texts an agent reads (log tails, pre-flight errors) name no host facts:
    where Python, the venv or LossGym live, or where runs are kept.
    """
    import sys

    import lossgym

    tags = {
        Path(lossgym.__file__).resolve().parent: "<lossgym>",
        Path(sys.prefix).resolve(): "<venv>",
        Path(sys.base_prefix).resolve(): "<python>",
        **(more or {}),
    }
    for path, tag in sorted(tags.items(), key=lambda kv: -len(str(kv[0]))):
        if str(path) not in ("/", "/usr", "/usr/local"):
            text = text.replace(str(path), tag)
    return text


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
