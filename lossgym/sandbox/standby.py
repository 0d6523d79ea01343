"""Warm runs: a sandboxed process started before its job is known.

Most of a short test's overhead is Python importing torch: in torchrun, in
each rank, in the evaluator and in the pre-flight smoke run. A `Standby` pays
that ahead of time. It starts a run whose process imports what it needs, then
waits for a job file (`lossgym.trainer.wait`) to appear in a directory the
sandbox can read; `go()` writes the file and starts the run's own time limit.

Each standby serves exactly one job and then exits: no process that ran one
agent's code ever sees another's job. Until `go()`, no agent code is in it.
The sandbox, mounts and limits are the runner's, as for any other run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from lossgym.sandbox.runner import Runner, RunResult, RunSpec, is_queuing
from lossgym.trainer.wait import JOB_FILE

IDLE_S = 600.0  # a standby nobody used exits by itself after this long
USABLE_S = IDLE_S - 60.0  # ...so it is only handed out while well short of that
LATE_S = 30.0  # a cluster job may end this long after its limit before it counts as over


class Standby:
    """One run started ahead of its job: `go(job, time_limit_s)`, then `wait()`."""

    def __init__(self, runner: Runner, spec: RunSpec, inbox: Path) -> None:
        self.inbox, self.started = inbox, time.monotonic()
        self._stop = threading.Event()  # what the runner watches: cancel or time limit
        self._limit_hit = False
        self._cancelled = False
        self._deadline: threading.Timer | None = None
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._go_at: float | None = None
        self._ended: float | None = None
        # A queuing runner (Slurm) may start the run long after go(): its time
        # limit counts from the start the runner reports (spec.on_start).
        self._queued = is_queuing(runner)
        self._started_wall: float | None = None
        self._limit_s = 0.0
        self._arm_lock = threading.Lock()
        if self._queued:
            spec.on_start = self._on_start
        self._thread = threading.Thread(target=self._run, args=(runner, spec), daemon=True)
        self._thread.start()

    def _run(self, runner: Runner, spec: RunSpec) -> None:
        try:
            self._result = runner.run(spec, self._stop)
        except BaseException as error:  # noqa: BLE001 - re-raised by wait() in the caller
            self._error = error
        self._ended = time.monotonic()

    @property
    def usable(self) -> bool:
        """Still waiting for a job, and far enough from its idle exit to take one."""
        fresh = time.monotonic() - self.started < USABLE_S
        return self._go_at is None and fresh and self._thread.is_alive()

    def go(self, job: dict[str, Any], time_limit_s: float) -> None:
        """Hand the job over; the run's time limit counts from now."""
        tmp = self.inbox / f".{JOB_FILE}.tmp"
        tmp.write_text(json.dumps(job), encoding="utf-8")
        os.replace(tmp, self.inbox / JOB_FILE)  # whole or absent, never half-written
        self._go_at, self._limit_s = time.monotonic(), time_limit_s
        self._arm()

    def _on_start(self, wall_time: float) -> None:
        self._started_wall = wall_time
        self._arm()

    def _arm(self) -> None:
        """Start the time limit once the job is handed over and (queued) running."""
        with self._arm_lock:
            if self._deadline is not None or self._go_at is None:
                return
            remaining = self._limit_s
            if self._queued:
                if self._started_wall is None:
                    return
                remaining -= max(0.0, time.time() - self._started_wall)
            self._deadline = threading.Timer(max(0.0, remaining), self._time_limit)
            self._deadline.daemon = True
            self._deadline.start()

    def _time_limit(self) -> None:
        self._limit_hit = True
        self._stop.set()

    def cancel(self) -> None:
        """Stop the run (used or not); wait() then reports it cancelled."""
        self._cancelled = True
        self._stop.set()

    def discard(self, remove: Path | None = None) -> None:
        """Cancel it and, once its process is gone, delete `remove` (its directory);
        the caller does not wait for either."""

        def cleanup() -> None:
            with contextlib.suppress(Exception):  # it is being thrown away either way
                self.wait()
            if remove is not None:
                shutil.rmtree(remove, ignore_errors=True)

        self.cancel()
        threading.Thread(target=cleanup, daemon=True).start()

    def follow(self, cancel: threading.Event | None) -> None:
        """Cancel this run as soon as `cancel` is set (the worker's stop or the session's)."""
        if cancel is None:
            return

        def watch() -> None:
            while self._thread.is_alive():
                if cancel.wait(0.2):
                    # A worker that stops or loses the test detaches from a cluster
                    # job (`detach`): it goes on running for the next worker.
                    self._stop.detach = getattr(cancel, "detach", False)  # type: ignore[attr-defined]
                    self.cancel()
                    return

        threading.Thread(target=watch, daemon=True).start()

    def wait(self) -> RunResult:
        """The run's result; `seconds` counts from go() (the job's own time).

        OSError when the run ended before its job was handed over: whatever
        stopped it (a crash at start-up, a kill from outside) was not the job's.
        """
        self._thread.join()
        with self._arm_lock:
            if self._deadline is not None:
                self._deadline.cancel()
        if self._error is not None:
            raise self._error
        assert self._result is not None and self._ended is not None
        result = self._result
        # A cluster job a restarted worker adopted may have ended before this go().
        adopted = self._queued and self._started_wall is not None and self._go_at is not None
        if not adopted and (self._go_at is None or self._ended < self._go_at):
            if result.cancelled:
                return RunResult(None, False, True, 0.0)
            raise OSError(f"the sandbox ended before its job was handed over ({result})")
        # The runner stopped it (cancelled): at our time limit, or on a cancel.
        timed_out = result.timed_out or (
            result.cancelled and self._limit_hit and not self._cancelled
        )
        if self._queued and not result.cancelled and result.seconds > self._limit_s + LATE_S:
            timed_out = True  # it ran past its limit while no worker was watching
        return RunResult(
            exit_code=None if timed_out or result.cancelled else result.exit_code,
            timed_out=timed_out,
            cancelled=result.cancelled and not timed_out,
            seconds=result.seconds if self._queued else self._ended - self._go_at,
        )
