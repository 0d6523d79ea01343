"""The training and evaluation runs of a stage: its directory, sandboxes, warm starts.

A training run is torchrun (`lossgym.trainer.torchrun`: the real one, without
its interpreter's teardown) with `nproc` ranks of `lossgym.trainer.launch`,
started as a `Standby`: torchrun and the ranks import torch, then wait for the
job (the script and its regions' spans) to be handed over. The evaluator waits
beside it for the checkpoint. A cold start hands the job over at once. A warm
start (`WarmTraining`, CPU stages) uses sandboxes the worker started ahead, in
a directory of its own under `runs/warm/`; the stage's run directory is then a
symlink to it.

The layout of a stage's run directory:

    workspace/    the agent's files (read-only to training)
    train_data/   symlinks to the train and monitor shards, never val
    out/          the only directory training may write (the checkpoint)
    config.json   the training config: the profile's knobs, seed, paths
    job/          the hand-over inbox of the training run
    eval/         the evaluator's model.json and metrics.json
    eval_in/      the evaluator's inbox: the checkpoint, once training is done
    train.log, eval.log, pid, eval.pid, run.json
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lossgym.sandbox.run_record import build_record, write_record
from lossgym.sandbox.runner import PYTHON, Mount, Runner, RunSpec, base_env, is_queuing
from lossgym.sandbox.standby import IDLE_S, Standby

if TYPE_CHECKING:
    from lossgym.sandbox.stages import StageJob

TRAIN_LOG = "train.log"  # in each stage's run directory: the training process's output
EVAL_TIME_LIMIT_S = 1800.0
EVAL_STANDBY_S = 7 * 24 * 3600.0  # how long a waiting evaluator waits: not its to decide
CHECKPOINT = "model.safetensors"  # what training writes to out/ and the evaluator reads


@dataclass(frozen=True)
class StageDirs:
    root: Path  # the real directory (a warm slot's, when the run directory links to it)

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def train_data(self) -> Path:
        return self.root / "train_data"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def job(self) -> Path:
        return self.root / "job"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def eval_in(self) -> Path:
        return self.root / "eval_in"

    @property
    def log(self) -> Path:
        return self.root / TRAIN_LOG

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    def create(self, dataset_dir: Path) -> StageDirs:
        for path in (self.workspace, self.train_data, self.out, self.job, self.eval, self.eval_in):
            path.mkdir(parents=True, exist_ok=True)
        # Only the train and monitor splits are visible to the training process.
        for shard in visible_shards(dataset_dir):
            link = self.train_data / shard.name
            if not link.exists():
                link.symlink_to(shard)
        if not self.config.exists():  # a file mount needs the file; filled in place later
            self.config.write_text("{}\n")
        return self


def visible_shards(dataset_dir: Path) -> list[Path]:
    """The shards training may read: train and monitor splits, never val."""
    shards = sorted(dataset_dir.glob("*.bin"))
    return [s.resolve() for s in shards if s.name.startswith(("train_", "monitor_"))]


def fill(job: StageJob, dirs: StageDirs) -> None:
    """Write the job's workspace, config, run record and model config into `dirs`."""
    for rel, text in job.files.items():
        _write_if_changed(dirs.workspace / rel, text)
    config = dict(job.train_config)
    config.update(seed=job.seed, data_dir=str(dirs.train_data), out_dir=str(dirs.out))
    # In place (same inode): the sandbox's file mount of it was made at start. Left
    # alone when it already says this (a restarted worker reattaching to its run).
    text = json.dumps(config, indent=2)
    if dirs.config.read_text() != text:
        with open(dirs.config, "r+") as file:
            file.truncate(0)
            file.write(text)
    write_record(dirs.root, build_record(job, config))
    _write_if_changed(dirs.eval / "model.json", json.dumps(job.model_config, indent=2))


def _write_if_changed(path: Path, text: str) -> None:
    """Write `path` unless it already holds `text`: a restarted worker reattaching to a
    cluster job must not truncate files that job may be reading."""
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


class TrainingRun(Standby):
    """torchrun and its ranks in the runner's sandbox, waiting for their job; when
    started ahead, with the stage's evaluator waiting beside them."""

    def __init__(
        self, runner: Runner, job: StageJob, dirs: StageDirs, with_evaluator: bool = False
    ) -> None:
        self.dirs = dirs
        self.evaluator = (
            Standby(runner, eval_spec(job, dirs), dirs.eval_in) if with_evaluator else None
        )
        # A queuing runner's job gets its job file before it can start: no idle wait
        # to allow for (and a --time no longer than the run needs).
        idle_s = 60.0 if is_queuing(runner) else IDLE_S
        super().__init__(runner, _train_spec(job, dirs, idle_s), dirs.job)

    def start_job(self, job: StageJob) -> None:
        self.go({"script": job.entrypoint, "regions": job.regions}, job.time_limit_s)


def start_training(runner: Runner, job: StageJob, warm: WarmTraining | None) -> TrainingRun:
    """The stage's training run, ready for start_job: a warm one when there is one."""
    run = warm.take(job) if warm is not None else None
    if run is None:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        dirs = StageDirs(job.run_dir).create(job.dataset_dir)
        fill(job, dirs)
        return TrainingRun(runner, job, dirs)
    try:
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        job.run_dir.symlink_to(run.dirs.root, target_is_directory=True)
        fill(job, run.dirs)
    except OSError:
        _discard(run)
        raise
    return run


class WarmTraining:
    """At most one training sandbox started ahead per kind of CPU stage.

    A kind is what the sandboxes are started with: dataset, ranks, limits, time
    limit, and the evaluator's label and val tokens. GPU stages always start
    cold: their GPUs are chosen per job.
    """

    def __init__(self, runner: Runner, slots_dir: Path) -> None:
        self.runner, self.slots_dir = runner, slots_dir
        self._slots: dict[Hashable, TrainingRun] = {}
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def _kind(job: StageJob) -> Hashable | None:
        if job.gpus:
            return None
        return (str(job.dataset_dir.resolve()), job.nproc, job.limits, job.time_limit_s,
                job.label, job.val_tokens)  # fmt: skip

    def take(self, job: StageJob) -> TrainingRun | None:
        with self._lock:
            run = self._slots.pop(self._kind(job), None)
        if run is not None and not run.usable:
            _discard(run)
            run = None
        return run

    def prepare(self, job: StageJob) -> None:
        """Start a sandbox for the next stage of `job`'s kind, unless one is waiting."""
        kind = self._kind(job)
        with self._lock:
            if kind is None or self._closed:
                return
            waiting = self._slots.pop(kind, None)
            if waiting is not None and waiting.usable:
                self._slots[kind] = waiting
                return
            if waiting is not None:
                _discard(waiting)
            root = self.slots_dir / f"slot-{secrets.token_hex(8)}"
            try:
                dirs = StageDirs(root).create(job.dataset_dir)
                self._slots[kind] = TrainingRun(self.runner, job, dirs, with_evaluator=True)
            except OSError:  # the next stage starts cold, and says why if it cannot
                shutil.rmtree(root, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            runs, self._slots = list(self._slots.values()), {}
        for run in runs:
            _discard(run)


def _discard(run: TrainingRun) -> None:
    if run.evaluator is not None:
        run.evaluator.discard()
    run.discard(run.dirs.root)


def regular_file(path: Path) -> bool:
    """A plain file, not a link: training's output dir is the agent's to fill."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def hand_over(checkpoint: Path, target: Path) -> None:
    """Give the evaluator the checkpoint: a hard link (instant at any size), else a copy.

    Training's processes are gone by now, so the file can no longer change;
    as root it also stops being theirs (owner root, read-only).
    """
    # Handed over already when a restarted worker carries on with a cluster job.
    if not (target.exists() and os.path.samefile(checkpoint, target)):
        target.unlink(missing_ok=True)
        try:
            os.link(checkpoint, target, follow_symlinks=False)
        except OSError:
            shutil.copyfile(checkpoint, target, follow_symlinks=False)
    if os.geteuid() == 0:
        os.chown(target, 0, 0, follow_symlinks=False)
    os.chmod(target, 0o444)


def checkpoint_cap(job: StageJob) -> int:
    """An upper bound on the bytes of a valid checkpoint of the job's model (fp32
    tensors plus a safetensors header): a larger file is refused unread, so a
    sparse or padded file cannot make the hand-over fill the disk."""
    m = {"n_embd": 768, "n_layer": 12, "vocab_size": 50304, "block_size": 1024, **job.model_config}
    c, layers = int(m["n_embd"]), int(m["n_layer"])  # defaults: lossgym.trainer.model.GPTConfig
    params = (int(m["vocab_size"]) + int(m["block_size"])) * c + layers * (12 * c * c + 13 * c)
    return 4 * (params + 2 * c) + 2**20


def eval_spec(job: StageJob, dirs: StageDirs, standby_s: float = EVAL_STANDBY_S) -> RunSpec:
    """The trusted evaluator's run; it waits up to `standby_s` for the checkpoint."""
    inbox = dirs.eval_in
    argv = [
        PYTHON, "-I", "-m", "lossgym.trainer.evaluate",
        "--checkpoint", str(inbox / CHECKPOINT),
        "--model-config", str(dirs.eval / "model.json"),
        "--data-dir", str(job.dataset_dir.resolve()),
        "--label", job.label,
        "--val-tokens", str(job.val_tokens),
        "--out", str(dirs.eval / "metrics.json"),
        "--wait-inbox", str(inbox),
        "--idle-s", str(max(standby_s, 60.0)),
    ]  # fmt: skip
    env = base_env({"HOME": str(dirs.eval)})
    # The evaluator sees its inbox (the checkpoint, once handed over), the model
    # config and the val shards only.
    val = sorted(s.resolve() for s in job.dataset_dir.glob("val_*.bin"))
    mounts = [Mount(inbox), *map(Mount, val), Mount(dirs.eval, writable=True)]
    # Its own limit (EVAL_TIME_LIMIT_S) counts from the hand-over (Standby.go);
    # it waits for that as long as training may take (the stage always stops it).
    limit = standby_s + EVAL_TIME_LIMIT_S
    return RunSpec(
        argv, dirs.eval, dirs.root / "eval.log", limit, env,
        dirs.root / "eval.pid", mounts=mounts, gpus=job.gpus, limits=job.limits,
    )  # fmt: skip


def _train_spec(job: StageJob, dirs: StageDirs, idle_s: float = IDLE_S) -> RunSpec:
    # -I everywhere: no workspace directory on sys.path, no PYTHON* variables.
    argv = [
        PYTHON, "-I", "-m", "lossgym.trainer.torchrun", "--standalone",
        f"--nproc_per_node={job.nproc}", "--no-python",
        PYTHON, "-I", "-u", "-m", "lossgym.trainer.launch",
        "--wait-inbox", str(dirs.job), "--idle-s", str(idle_s),
    ]  # fmt: skip
    env = base_env(
        {
            "LOSSGYM_CONFIG": str(dirs.config),
            "OMP_NUM_THREADS": "1",
            "HOME": str(dirs.out),
            "TMPDIR": str(dirs.out),
        }
    )
    # Training sees its workspace, its config and job, the train and monitor
    # shards (through the symlinks in train_data/) and writes only to out/.
    mounts = [Mount(dirs.workspace), Mount(dirs.config), Mount(dirs.job)]
    mounts += [Mount(dirs.train_data)] + [Mount(s) for s in visible_shards(job.dataset_dir)]
    mounts.append(Mount(dirs.out, writable=True))
    # The job's own time limit counts from the hand-over (Standby.go).
    return RunSpec(
        argv, dirs.workspace, dirs.log, idle_s + job.time_limit_s + 60, env, dirs.root / "pid",
        mounts=mounts, gpus=job.gpus, limits=job.limits,
    )  # fmt: skip
