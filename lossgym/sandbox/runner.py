"""Runners start one command in isolation, stream its output to a log, and stop it.

`Runner` is the small interface the worker uses; `LocalRunner` runs the command
as a subprocess in its own process group, so a timeout or cancel kills the
whole tree (torchrun and every rank), not just the parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

KILL_GRACE_S = 5.0


@dataclass
class RunSpec:
    argv: list[str]
    cwd: Path
    log_path: Path
    timeout_s: float
    env: dict[str, str] = field(default_factory=dict)
    pid_file: Path | None = None  # gets "<host> <pgid> <cwd>" so a later worker can clean up


@dataclass
class RunResult:
    exit_code: int | None  # None when killed for a timeout or cancel
    timed_out: bool
    cancelled: bool
    seconds: float


class Runner(Protocol):
    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        """Run to completion, the time limit, or `cancel`; output goes to spec.log_path."""
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


class LocalRunner:
    """A subprocess in a new session (process group) on this machine."""

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with open(spec.log_path, "ab") as log:
            proc = subprocess.Popen(
                spec.argv,
                cwd=spec.cwd,
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if spec.pid_file is not None:
                spec.pid_file.write_text(f"{socket.gethostname()} {proc.pid} {spec.cwd}\n")
            timed_out = cancelled = False
            while True:
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() - start > spec.timeout_s:
                    timed_out = True
                elif cancel is not None and cancel.is_set():
                    cancelled = True
                if timed_out or cancelled:
                    _kill_group(proc)
                    break
            _kill_leftovers(proc.pid)
        exit_code = None if (timed_out or cancelled) else proc.returncode
        return RunResult(exit_code, timed_out, cancelled, time.monotonic() - start)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after a grace period."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _kill_leftovers(pgid: int) -> None:
    """Whatever the command left running in its group (a forked child) dies with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
