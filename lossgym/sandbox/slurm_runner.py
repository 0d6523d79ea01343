"""`SlurmRunner`: each run a Slurm batch job, sandboxed on its node as on one host.

The worker becomes a dispatcher: `run()` writes the spec to a job directory on
the shared filesystem, submits a batch script with plain `sbatch` (not
submitit: the script is ten lines an operator can read, and the worker must
not depend on pickling), then follows the job through the shared `SlurmQueue`
(one `squeue` per interval for every job) and the result file the job's
trusted wrapper (`slurm_job.py`) writes. On the node that wrapper runs the
spec with the local runner: bubblewrap (or Apptainer), the run's cgroup, the
same mounts, read-only rules and limits as on a single host.

What a job's end means:
- a result file: the run's own exit code, or its time limit;
- cancelled by this worker (the session's or the worker's stop): cancelled;
- anything else (cancelled from outside, NODE_FAIL, PREEMPTED, BOOT_FAIL, a
  job squeue forgot without a result): `SlurmError`, the infrastructure's
  fault, so the test is retried and the session's budget is unchanged.

A run's pid file holds its Slurm job id. A worker that restarts after a crash
reattaches to that job (`reattachable`, then `run` adopts it) instead of
submitting it again. A worker that stops, or loses a test's lease, detaches
(`cancel.detach`): it stops following the job and leaves it running for
whoever claims the test next.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lossgym.sandbox.runner import (
    RunResult,
    RunSpec,
    check_mounts,
    oom_line,
    prepare_writable,
    read_pid_file,
    write_pid_file,
)
from lossgym.sandbox.slurm_job import (
    HEARTBEAT_S,
    RESULT_FILE,
    SPEC_FILE,
    read_filled,
    reserve,
    result_name,
    spec_to_json,
)
from lossgym.sandbox.slurm_queue import (
    ACTIVE,
    INFRA,
    UNKNOWN,
    VANISHED,
    Slurm,
    SlurmError,
    SlurmQueue,
)

if TYPE_CHECKING:
    from lossgym.config import Settings

CONTAINERS = ("bwrap", "apptainer", "none")
RESULT_CHECK_S = 1.0  # how often a run looks for its result file between polls
CANCEL_WAIT_S = 120.0  # how long a cancelled job may take to leave the queue
TIME_MARGIN_MIN = 2  # --time beyond the run's own limit: start-up and teardown
LOST_AFTER_S = 9 * HEARTBEAT_S  # a running job silent this long was lost by its node
RESULT_GRACE_S = 60.0  # how long a result may take to show after the job ended (NFS caches)
UNSAFE_PATH = re.compile(r"[\s%]")  # sbatch splits #SBATCH lines on spaces and expands %


class SlurmRunner:
    queues = True  # a run may wait in a queue: its time limit counts from its start
    reattaches = True  # a restarted worker adopts the jobs its predecessor submitted

    def __init__(
        self,
        *,
        container: str = "bwrap",
        image: str = "",
        user: str = "65534:65534",
        partition: str = "",
        account: str = "",
        qos: str = "",
        extra: str = "",
        gpus_per_node: int = 8,
        multi_node: bool = False,
        poll_s: float = 5.0,
        shared_dir: Path | None = None,
        hidden: list[Path] | None = None,
        slurm: Slurm | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        lost_after_s: float = LOST_AFTER_S,
    ) -> None:
        if container not in CONTAINERS:
            raise ValueError(f"unknown Slurm container {container!r}: use {', '.join(CONTAINERS)}")
        if container == "apptainer" and not image:
            raise ValueError("the Apptainer container needs an image (LOSSGYM_SLURM_IMAGE)")
        self.container, self.image, self.user = container, image, user
        self.isolated = container != "none"
        # "local" is what marks a test unisolated on the leaderboard.
        self.name = "slurm" if self.isolated else "local"
        named = (("partition", partition), ("account", account), ("qos", qos))
        self.flags = [f"--{key}={value}" for key, value in named if value]
        self.flags += shlex.split(extra)
        self.gpus_per_node, self.multi_node = gpus_per_node, multi_node
        self.shared_dir, self.hidden = shared_dir, hidden or []
        self.heartbeat_s, self.lost_after_s = heartbeat_s, lost_after_s
        self.result_grace_s = RESULT_GRACE_S
        self.slurm = slurm or Slurm()
        self.queue = SlurmQueue(self.slurm, poll_s)

    @classmethod
    def from_settings(cls, settings: Settings, hidden: list[Path] | None = None) -> SlurmRunner:
        if shutil.which("sbatch") is None:
            raise RuntimeError("Slurm's sbatch is not on PATH (install slurm-client)")
        shared = settings.shared_dir
        for name in ("runs_dir", "data_dir"):
            path = Path(getattr(settings, name)).resolve()
            if shared is not None and not path.is_relative_to(shared.resolve()):
                raise ValueError(
                    f"{name} {path} is not under LOSSGYM_SHARED_DIR {shared}: the cluster's "
                    "nodes must see it at the same path"
                )
        return cls(
            container=settings.slurm_container, image=settings.slurm_image,
            user=settings.sandbox_user, partition=settings.slurm_partition,
            account=settings.slurm_account, qos=settings.slurm_qos, extra=settings.slurm_extra,
            gpus_per_node=settings.slurm_gpus_per_node, multi_node=settings.slurm_multi_node,
            poll_s=settings.slurm_poll_s, shared_dir=settings.shared_dir, hidden=hidden,
        )  # fmt: skip

    def describe(self) -> str:
        where = f"shared filesystem {self.shared_dir}" if self.shared_dir else "no shared_dir set"
        flags = " ".join(self.flags) or "default partition"
        return f"slurm (container {self.container}; {flags}; {where})"

    # -- running -------------------------------------------------------------

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        check_mounts(spec, self.hidden)
        self._check_paths(spec)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        prepare_writable(spec, None)  # the node's local runner hands them to the sandbox user
        files = job_files(spec)
        nodes = self.nodes_for(len(spec.gpus))
        job_id = self._adopt(spec, files) or self._submit(spec, files, nodes)
        return self._follow(job_id, spec, files, nodes, cancel)

    def _submit(self, spec: RunSpec, files: Path, nodes: int) -> str:
        shutil.rmtree(files, ignore_errors=True)  # a job that vanished left only stale files
        files.mkdir(parents=True)
        os.chmod(files, 0o700)
        text = spec_to_json(spec, container=self.container, image=self.image, user=self.user,
                            nodes=nodes, heartbeat_s=self.heartbeat_s)  # fmt: skip
        (files / SPEC_FILE).write_text(text)
        for rank in range(nodes):  # full size now: the agent cannot fill the disk first
            reserve(files / result_name(rank))
            reserve(files / f"alive.{rank}")
        script = self.batch_script(spec, files)
        (files / "job.sh").write_text(script)  # for the operator: what was submitted
        job_id = self.slurm.sbatch(script)
        write_pid_file(spec, "slurm", job_id)
        return job_id

    def _adopt(self, spec: RunSpec, files: Path) -> str | None:
        """The job an earlier worker submitted for this very run, if it lives or ended well."""
        if spec.pid_file is None:
            return None
        job_id = self._job_of(spec.pid_file)
        if job_id is None or not (files / SPEC_FILE).exists():
            return None
        return job_id if self._alive_or_done(job_id, files) else None

    def _alive_or_done(self, job_id: str, files: Path) -> bool:
        if read_filled(files / RESULT_FILE) is not None:
            return True
        # Unknown (the controller did not answer): follow it; the poller will tell.
        return self.queue.lookup(job_id) in ACTIVE | {UNKNOWN}

    def _follow(
        self,
        job_id: str,
        spec: RunSpec,
        files: Path,
        nodes: int,
        cancel: threading.Event | None,
    ) -> RunResult:
        start = time.monotonic()
        self.queue.follow(job_id)
        cancelled_at: float | None = None
        pulse: _Pulse | None = None  # once the job started on its node
        try:
            while True:
                view = self.queue.view(job_id)
                if pulse is None and (files / "started.0").exists():
                    pulse = _Pulse(files / "alive.0")
                    if spec.on_start:
                        spec.on_start(_started_at(files))
                done = _results(files, nodes, job_id)
                if cancelled_at is None and done is not None:
                    return done
                if view.state is not None and view.state not in ACTIVE:
                    break
                if cancel is not None and cancel.is_set() and cancelled_at is None:
                    if getattr(cancel, "detach", False):  # leave it to the next worker
                        return RunResult(None, False, True, time.monotonic() - start)
                    self.slurm.scancel(job_id)
                    cancelled_at = time.monotonic()
                if cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_WAIT_S:
                    break
                if cancelled_at is None and pulse and pulse.silent_for() > self.lost_after_s:
                    self.slurm.scancel(job_id)
                    raise SlurmError(
                        f"Slurm job {job_id} went silent for {self.lost_after_s:.0f} s while "
                        f"Slurm said {view.state}: its node lost it"
                    )
                self.queue.wait(RESULT_CHECK_S)
        finally:
            self.queue.unfollow(job_id)
        seconds = time.monotonic() - start
        if cancelled_at is not None:  # ours: whatever it did after that does not count
            return RunResult(None, False, True, seconds)
        if view.state in ("COMPLETED", "FAILED"):  # its wrapper ended: a result is due
            done = self._late_results(files, nodes, job_id)
            if done is not None:
                return done
        return self._ended_without_result(job_id, view.state or VANISHED, spec, seconds)

    def _late_results(self, files: Path, nodes: int, job_id: str) -> RunResult | None:
        """The result of a job Slurm says has ended, which a shared filesystem may show
        late (NFS caches a directory's listing): looked for, freshly, a while."""
        deadline = time.monotonic() + self.result_grace_s
        while True:
            with contextlib.suppress(OSError):
                os.listdir(files)  # a fresh look at the directory
            done = _results(files, nodes, job_id)
            if done is not None or time.monotonic() > deadline:
                return done
            time.sleep(RESULT_CHECK_S)

    def _ended_without_result(
        self, job_id: str, state: str, spec: RunSpec, seconds: float
    ) -> RunResult:
        if state == "TIMEOUT":  # Slurm's --time, a backstop behind the run's own limit
            return RunResult(None, True, False, seconds)
        if state == "OUT_OF_MEMORY":  # the site's cgroup killed the whole job
            with open(spec.log_path, "a") as log:
                log.write(oom_line(spec.limits.memory_text()))
            return RunResult(137, False, False, seconds)
        if state == "CANCELLED":
            raise SlurmError(f"Slurm job {job_id} was cancelled from outside LossGym")
        if state in INFRA:
            raise SlurmError(f"Slurm job {job_id} ended in state {state}")
        if state == VANISHED:
            raise SlurmError(f"Slurm job {job_id} vanished from the queue without a result")
        raise SlurmError(f"Slurm job {job_id} ended in state {state} without a result")

    # -- the batch script ----------------------------------------------------

    def nodes_for(self, gpus: int) -> int:
        nodes = max(1, math.ceil(gpus / self.gpus_per_node))
        if nodes > 1 and not self.multi_node:
            raise SlurmError(
                f"a stage with {gpus} GPUs needs {nodes} nodes of {self.gpus_per_node}: multi-node "
                "stages share the nodes' network, so they need LOSSGYM_SLURM_MULTI_NODE=true"
            )
        if gpus % nodes:
            raise SlurmError(f"{gpus} GPUs do not split evenly over {nodes} nodes")
        return nodes

    def batch_script(self, spec: RunSpec, files: Path) -> str:
        """The script `sbatch` gets: resources as #SBATCH lines, then the trusted wrapper.

        The site's flags come first, so none of them can override the lines that keep
        the run honest (its environment, no requeue in place, its time).
        """
        gpus, nodes = len(spec.gpus), self.nodes_for(len(spec.gpus))
        minutes = math.ceil(spec.timeout_s / 60) + TIME_MARGIN_MIN
        lines = ["#!/bin/bash", *(f"#SBATCH {flag}" for flag in self.flags)]
        lines += [
            f"#SBATCH --job-name={job_name(spec)}",
            f"#SBATCH --output={files}/slurm-%j.out",
            f"#SBATCH --chdir={files}",
            f"#SBATCH --time={minutes}",
            f"#SBATCH --nodes={nodes}",
            "#SBATCH --ntasks-per-node=1",
            f"#SBATCH --cpus-per-task={max(1, math.ceil(spec.limits.cpus or 1))}",
            "#SBATCH --export=NONE",
            # A node failure must reach the worker (an infrastructure retry in a fresh
            # directory), not rerun the job in place under the same id.
            "#SBATCH --no-requeue",
        ]
        if spec.limits.memory_bytes:  # the run's limit, plus the wrapper's own share
            lines.append(f"#SBATCH --mem={math.ceil(spec.limits.memory_bytes / 2**20) + 512}M")
        if gpus:
            lines.append(f"#SBATCH --gres=gpu:{gpus // nodes}")
        python, where = shlex.quote(sys.executable), shlex.quote(str(files))
        wrapper = f"{python} -I -m lossgym.sandbox.slurm_job {where}"
        if nodes == 1:
            return "\n".join([*lines, f"exec {wrapper}", ""])
        first = 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1'
        head = f'export LOSSGYM_HEAD_NODE="$({first})"'
        # No --kill-on-bad-exit: every node writes its own result, so a rank that
        # failed on node 2 is the run's failure, not a job killed without one.
        step = f"srun --nodes={nodes} --ntasks-per-node=1 --export=ALL"
        return "\n".join([*lines, head, f"exec {step} {wrapper}", ""])

    def _check_paths(self, spec: RunSpec) -> None:
        """Every path a job uses must be on the filesystem all nodes share, and safe to
        write into an #SBATCH line."""
        for path in [spec.log_path, spec.cwd, *(m.path for m in spec.mounts)]:
            if UNSAFE_PATH.search(str(path)):
                raise SlurmError(f"{path}: a path with whitespace or % cannot go to sbatch")
            shared = self.shared_dir
            if shared is not None and not path.resolve().is_relative_to(shared.resolve()):
                raise SlurmError(
                    f"{path} is not under the shared filesystem {shared} "
                    "(LOSSGYM_SHARED_DIR): the job's node could not see it"
                )

    # -- after a worker's death ----------------------------------------------

    @staticmethod
    def _job_of(pid_file: Path) -> str | None:
        record = read_pid_file(pid_file)
        return record[1] if record is not None and record[0] == "slurm" else None

    def reattachable(self, pid_file: Path) -> bool:
        """Whether the job this pid file names still runs, or ended with a result."""
        job_id = self._job_of(pid_file)
        if job_id is None:
            return False
        return self._alive_or_done(job_id, pid_file.with_name(f".slurm-{pid_file.name}"))

    def kill_stale(self, pid_file: Path) -> None:
        """Cancel the job a dead worker's run left in the queue."""
        job_id = self._job_of(pid_file)
        if job_id is not None:
            self.slurm.scancel(job_id)


def _results(files: Path, nodes: int, job_id: str) -> RunResult | None:
    """The run's result once every node wrote its own (this job's, not an older one's):
    the first failing node's exit code, the time limit if any node hit it."""
    records = [read_filled(files / result_name(rank)) for rank in range(nodes)]
    if any(r is None or str(r.get("job")) != job_id for r in records):
        return None
    failed = [r for r in records if r and r["exit_code"] != 0]
    first = (failed or records)[0]
    assert first is not None
    timed_out = any(r and r["timed_out"] for r in records)
    seconds = max(float(r["seconds"]) for r in records if r)
    return RunResult(None if timed_out else first["exit_code"], timed_out, False, seconds)


class _Pulse:
    """How long the job's heartbeat file has not changed, by this worker's clock (the
    node's clock may differ, so its mtime is not compared with ours)."""

    def __init__(self, path: Path) -> None:
        self.path, self.last, self.changed = path, "", time.monotonic()

    def silent_for(self) -> float:
        try:
            beat = self.path.read_text()
        except OSError:
            beat = ""
        if beat != self.last:
            self.last, self.changed = beat, time.monotonic()
        return time.monotonic() - self.changed


def job_name(spec: RunSpec) -> str:
    """lossgym:job-42:attempt-1:gpt-124m:train, so an operator (and squeue) can tell
    which test a job belongs to."""
    parts = [*spec.log_path.parent.parts[-3:], spec.log_path.stem]
    return "lossgym:" + ":".join(parts)


def job_files(spec: RunSpec) -> Path:
    """The job's own directory: spec, script, Slurm's output, the result. Never mounted."""
    if spec.pid_file is not None:
        return spec.pid_file.with_name(f".slurm-{spec.pid_file.name}")
    return spec.log_path.with_name(f".slurm-{spec.log_path.name}")


def _started_at(files: Path) -> float:
    try:
        return float(json.loads((files / "started.0").read_text())["started"])
    except (OSError, ValueError, KeyError):
        return time.time()
