"""Live events of one test, for `GET /sessions/{id}/tests/{n}/events`.

A test's progress is read, never pushed: its state from the database (a read
snapshot, no lock), its TRAIN_METRICS lines from the running attempt's
training log, as the worker lays the runs out, one `step()` at a time. Only whole lines that match
the TRAIN_METRICS format pass: the same rule the final report applies, so the
stream shows an agent nothing the report would not. A client that goes away
stops the reading and nothing else: the job belongs to the worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossgym.env import episode, reports
from lossgym.env.catalog import TaskCache
from lossgym.errors import NotFound
from lossgym.sandbox.stages import TRAIN_LINE
from lossgym.sandbox.training import TRAIN_LOG
from lossgym.store import queries
from lossgym.store.db import Database

Event = tuple[str, dict[str, Any]]  # (event name, JSON data)


def attempt_dir(runs_dir: Path, job_id: int, attempt: int) -> Path:
    """Where attempt `attempt` of job `job_id` runs (one directory per stage inside)."""
    return runs_dir / f"job-{job_id}" / f"attempt-{attempt}"


def _live_attempt_dir(runs_dir: Path, job_id: int, attempt: int) -> Path:
    """The directory the job's current attempt writes to: its own, or, for a worker
    that reattached to an earlier attempt's cluster jobs, that one (the newest there is)."""
    for n in range(attempt, 0, -1):
        if (found := attempt_dir(runs_dir, job_id, n)).exists():
            return found
    return attempt_dir(runs_dir, job_id, attempt)


@dataclass
class _Snapshot:
    status: str
    job_id: int
    attempt: int
    text: str | None  # the report, once the test has finished


class TestEvents:
    """The event stream of test `n` of a session; `NotFound` at once for an unknown test."""

    __test__ = False  # not a pytest test class

    def __init__(
        self, db: Database, tasks: TaskCache, runs_dir: Path, session_id: str, n: int
    ) -> None:
        self.db, self.tasks, self.runs_dir = db, tasks, runs_dir
        self.session_id, self.n = session_id, n
        with db.read() as rx:
            session = queries.get_session(rx, session_id)
            if session is None:
                raise NotFound(f"Unknown session {session_id!r}.")
            if queries.get_test(rx, session_id, n) is None:
                raise NotFound(f"Session {session_id} has no test #{n}.")
            stages = self.tasks.get(session.task).spec.profiles[session.profile].stages
        self.train_labels = [s.label for s in stages if s.kind == "train"]
        self._last_status: str | None = None
        self._offsets: dict[Path, int] = {}

    def step(self) -> tuple[list[Event], bool]:
        """What happened since the last step, and whether the stream is over (`done` sent).

        A step reads and returns at once; the caller waits between steps, so a
        stream holds no thread while it waits.
        """
        snap = self._snapshot()
        events: list[Event] = []
        if snap.status != self._last_status:
            self._last_status = snap.status
            events.append(
                ("state", {"test": self.n, "status": snap.status, "attempt": snap.attempt})
            )
        if snap.attempt > 0:
            events.extend(self._new_lines(snap))
        if snap.text is not None:
            events.append(("done", {"test": self.n, "status": snap.status, "text": snap.text}))
        return events, snap.text is not None

    def _snapshot(self) -> _Snapshot:
        with self.db.read() as rx:
            session = queries.get_session(rx, self.session_id)
            test = queries.get_test(rx, self.session_id, self.n)
            assert session is not None and test is not None  # rows are never deleted
            job = queries.get_job_for_test(rx, test.id)
            text = None
            if test.status in episode.FINISHED:
                text = reports.test_text(rx, session, test, self.tasks.get(session.task))
            return _Snapshot(test.status, job.id, job.attempts, text)

    def _new_lines(self, snap: _Snapshot) -> Iterator[Event]:
        """TRAIN_METRICS lines the training log gained since the last look, whole lines only."""
        for label in self.train_labels:
            log = _live_attempt_dir(self.runs_dir, snap.job_id, snap.attempt) / label / TRAIN_LOG
            try:
                with log.open("rb") as handle:
                    handle.seek(self._offsets.get(log, 0))
                    data = handle.read()
            except OSError:
                continue  # not started yet
            lines, consumed = train_lines(data)
            self._offsets[log] = self._offsets.get(log, 0) + consumed
            for line in lines:
                yield "train_metrics", {"test": self.n, "stage": label, "line": line}


def train_lines(data: bytes) -> tuple[list[str], int]:
    """The TRAIN_METRICS lines among the whole lines of `data`, and the bytes they span.

    A line still being written (no newline yet) waits for the next look; any
    other output, the agent's `[loss] ` prints included, is not streamed.
    """
    complete = data[: data.rfind(b"\n") + 1]
    text = complete.decode("utf-8", errors="replace")
    return [raw.strip() for raw in text.splitlines() if TRAIN_LINE.match(raw.rstrip())], len(
        complete
    )
