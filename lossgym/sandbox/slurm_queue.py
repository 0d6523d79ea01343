"""Slurm's commands, and one poller that follows every job a worker has in flight.

No accounting database is assumed (`sacct` often does not work): a job's state
comes from `squeue`, which lists a job while it is pending or running and for
`MinJobAge` seconds after it ended, and its outcome from the result file its
own trusted wrapper writes (`slurm_job.py`). A job `squeue` no longer lists,
and that wrote no result, has *vanished*.

However many jobs are in flight, the poller makes one `squeue` call per
interval for all of them (the jobs of this user, filtered here), so hundreds of
queued stages cost the scheduler what one does.
"""

from __future__ import annotations

import getpass
import logging
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass

log = logging.getLogger("lossgym.slurm")

ACTIVE = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
    "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD",
}  # fmt: skip
# States where the node or the scheduler, not the job, ended it: retried, never charged.
INFRA = {"NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "REVOKED", "DEADLINE"}
VANISHED = "VANISHED"  # our name: squeue forgot the job (two polls in a row)
UNKNOWN = "UNKNOWN"  # our name: squeue did not answer, so nothing is known
MISSES_TO_VANISH = 2
COMMAND_TIMEOUT_S = 60.0


class SlurmError(OSError):
    """A Slurm command failed: the infrastructure's fault, never the agent's."""


class Slurm:
    """`sbatch`, `squeue` and `scancel`, each call counted (the bench reads `calls`)."""

    def __init__(self, user: str | None = None) -> None:
        self.user = user or getpass.getuser()
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _call(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        with self._lock:
            self.calls[argv[0]] += 1
        try:
            return subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SlurmError(f"{argv[0]} failed: {error}") from error

    def sbatch(self, script: str) -> str:
        """Submit a batch script (given as text, on stdin); its job id."""
        done = self._call(["sbatch", "--parsable"], script)
        job_id = done.stdout.strip().split(";")[0]
        if done.returncode != 0 or not job_id.isdigit():
            raise SlurmError(f"sbatch refused the job: {done.stderr.strip() or done.stdout}")
        return job_id

    def squeue(self, job_ids: list[str] | None = None) -> dict[str, tuple[str, str]] | None:
        """{job id: (state, reason)} of this user's jobs (or of `job_ids`); None when
        squeue itself failed (the controller is down: nothing is known this round)."""
        argv = ["squeue", "--noheader", "--states=all", "--format=%i|%T|%r"]
        argv += [f"--jobs={','.join(job_ids)}"] if job_ids else [f"--user={self.user}"]
        done = self._call(argv)
        if done.returncode != 0:
            if job_ids and "Invalid job id" in done.stderr:
                return {}
            log.warning("squeue failed: %s", done.stderr.strip())
            return None
        found = {}
        for line in done.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3:
                found[parts[0]] = (parts[1], parts[2])
        return found

    def scancel(self, job_id: str) -> None:
        done = self._call(["scancel", job_id])
        if done.returncode != 0:
            log.warning("scancel %s: %s", job_id, done.stderr.strip())


@dataclass
class JobView:
    state: str | None = None  # None until the first poll that lists it
    reason: str = ""
    misses: int = 0


class SlurmQueue:
    """Follows jobs: one squeue per `poll_s` for all of them, from one thread."""

    def __init__(self, slurm: Slurm, poll_s: float) -> None:
        self.slurm, self.poll_s = slurm, poll_s
        self._jobs: dict[str, JobView] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def follow(self, job_id: str) -> None:
        with self._changed:
            self._jobs.setdefault(job_id, JobView())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="squeue", daemon=True)
                self._thread.start()

    def unfollow(self, job_id: str) -> None:
        with self._changed:
            self._jobs.pop(job_id, None)

    def view(self, job_id: str) -> JobView:
        with self._changed:
            return JobView(**vars(self._jobs.get(job_id, JobView())))

    def wait(self, timeout_s: float) -> None:
        """Until the next poll's news, or `timeout_s`."""
        with self._changed:
            self._changed.wait(timeout_s)

    def _loop(self) -> None:
        while True:
            with self._changed:
                if not self._jobs:
                    self._thread = None
                    return
            try:
                listed = self.slurm.squeue()
            except SlurmError as error:  # a slow controller: try again next interval
                log.warning("%s", error)
                listed = None
            with self._changed:
                if listed is not None:
                    self._update(listed)
                self._changed.notify_all()
            threading.Event().wait(self.poll_s)

    def _update(self, listed: dict[str, tuple[str, str]]) -> None:
        for job_id, view in self._jobs.items():
            if job_id in listed:
                view.state, view.reason = listed[job_id]
                view.misses = 0
            elif view.state != VANISHED:
                view.misses += 1
                if view.misses >= MISSES_TO_VANISH:
                    view.state = VANISHED

    def lookup(self, job_id: str) -> str | None:
        """The state squeue gives one job now (for a worker that reattaches): None when
        it lists no such job, UNKNOWN when it could not say."""
        try:
            listed = self.slurm.squeue([job_id])
        except SlurmError:
            return UNKNOWN
        if listed is None:
            return UNKNOWN
        return listed[job_id][0] if job_id in listed else None
