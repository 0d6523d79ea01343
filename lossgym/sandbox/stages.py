"""Running one stage of a test: untrusted training, then trusted evaluation.

The training process sees a copy of the agent's workspace, the train and
monitor shards, and one writable `out/` directory. The evaluator runs after the
training process group is gone, reads the checkpoint as plain tensors, and
writes its metrics where only the worker reads them. Nothing the training
process prints can become a final metric: metrics come from `eval/metrics.json`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossgym.env.task import StageSpec, Task
from lossgym.sandbox.run_record import complete_record
from lossgym.sandbox.runner import (
    PYTHON,
    Limits,
    Mount,
    Runner,
    RunResult,
    RunSpec,
    base_env,
    is_queuing,
    redact_host_paths,
)
from lossgym.sandbox.standby import Standby
from lossgym.sandbox.training import (
    CHECKPOINT,
    EVAL_TIME_LIMIT_S,
    StageDirs,
    TrainingRun,
    WarmTraining,
    checkpoint_cap,
    eval_spec,
    hand_over,
    regular_file,
    start_training,
)

TRAIN_LINE = re.compile(
    r"^TRAIN_METRICS: step=(\d+), train_loss=([-+0-9.eEnaif]+), val_loss=([-+0-9.eEnaif]+)$"
)
LOG_TAIL_BYTES = 8_000
LOG_READ_BYTES = 1_000_000
EVAL_EXIT_BAD_CHECKPOINT = 1  # lossgym.trainer.evaluate: the checkpoint is missing or rejected


@dataclass
class StageOutcome:
    status: str  # ok | failed | timeout | invalid (the agent's) | error (the infrastructure's)
    exit_code: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[list[float]] = field(default_factory=list)
    train_lines: list[str] = field(default_factory=list)
    log_tail: str = ""
    log_path: str = ""
    train_s: float = 0.0
    eval_s: float = 0.0
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    infra: bool = False  # the failure is the infrastructure's: retried, never charged


@dataclass
class StageJob:
    """Everything a stage needs, resolved by the worker from the test's rows."""

    run_dir: Path
    files: dict[str, str]
    entrypoint: str  # the workspace file torchrun starts
    dataset_dir: Path
    label: str
    nproc: int
    time_limit_s: float
    train_config: dict[str, Any]
    model_config: dict[str, Any]
    val_tokens: int
    seed: int
    # The editable regions' spans in the entrypoint ([{name, start, end}]), from the
    # session's stored state: the launcher runs them in a namespace of their own.
    regions: list[dict[str, Any]]
    gpus: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)


def train_job(
    task: Task,
    stage: StageSpec,
    run_dir: Path,
    data_dir: Path,
    files: dict[str, str],
    regions: dict[str, list[dict[str, Any]]],
    seed: int,
    gpus: list[str] | None = None,
) -> StageJob:
    """The StageJob of a train `stage` of `task` on a workspace (its files and regions)."""
    assert stage.dataset is not None and stage.model is not None and stage.val_tokens
    entrypoint = task.spec.workspace[0].path
    return StageJob(
        run_dir=run_dir,
        files=files,
        entrypoint=entrypoint,
        dataset_dir=data_dir / stage.dataset,
        label=stage.label,
        nproc=stage.nproc,
        time_limit_s=stage.time_limit_s,
        train_config=stage.train_config(),
        model_config=stage.model.model_dump(),
        val_tokens=stage.val_tokens,
        seed=seed,
        regions=regions.get(entrypoint, []),
        gpus=list(gpus or [])[: stage.gpus],
        limits=Limits.of(stage.limits),
    )


def run_train_stage(
    job: StageJob, runner: Runner, cancel: threading.Event, warm: WarmTraining | None = None
) -> StageOutcome:
    """Train, then evaluate: both sandboxes start at once and import while the other works.

    The evaluator imports torch and waits while training runs; it gets the
    checkpoint once training's processes are gone. `warm` may hold a training
    sandbox started ahead for this kind of stage.
    """
    try:
        training = start_training(runner, job, warm)
    except OSError as error:  # no disk: nothing the agent did
        return StageOutcome(status="error", infra=True, reason=f"could not start training: {error}")
    # A queuing runner (Slurm) would hold the evaluator's allocation idle all through
    # training: there it is submitted once the checkpoint exists.
    queued = is_queuing(runner)
    evaluator: Standby | None = training.evaluator
    try:
        if evaluator is None and not queued:
            evaluator = Standby(runner, eval_spec(job, training.dirs), training.dirs.eval_in)
    except OSError as error:
        training.cancel()
        reason = f"could not start evaluation: {error}"
        return StageOutcome(status="error", infra=True, reason=reason)
    training.follow(cancel)
    if evaluator is not None:
        evaluator.follow(cancel)
    try:
        outcome = _train(job, training)
        if outcome.status == "ok":
            if evaluator is None:
                spec = eval_spec(job, training.dirs, standby_s=0.0)
                evaluator = Standby(runner, spec, training.dirs.eval_in)
                evaluator.follow(cancel)
            evaluator.go({}, EVAL_TIME_LIMIT_S)
            return _evaluate(outcome, training.dirs, evaluator)
    finally:
        training.cancel()  # no-ops once they ended: this stops what did not end well
        if evaluator is not None:
            evaluator.cancel()
    if evaluator is not None:
        with contextlib.suppress(OSError):
            evaluator.wait()
    return outcome


def _train(job: StageJob, training: TrainingRun) -> StageOutcome:
    """The training run, then its checkpoint handed to the evaluator's inbox."""
    dirs = training.dirs
    try:
        training.start_job(job)
        result = training.wait()
    except OSError as error:  # no torchrun, no sandbox: nothing the agent did
        return StageOutcome(status="error", infra=True, reason=f"could not start training: {error}")
    outcome = _read_training(dirs, result)
    outcome.info["run"] = complete_record(dirs.root, dirs.log)
    checkpoint = dirs.out / CHECKPOINT
    written = regular_file(checkpoint)
    if outcome.status == "failed" and result.exit_code and written:
        # A rank that dies after rank 0 wrote the checkpoint (torch's gloo
        # teardown occasionally aborts a rank at exit) changes nothing that
        # counts: the checkpoint is complete (written, then renamed) and the
        # trusted evaluator judges it. Failing the test would charge the agent
        # for a crash of the library, so evaluate and keep the exit code.
        outcome.status, outcome.reason = "ok", ""
        outcome.info["exit_code_after_checkpoint"] = result.exit_code
    if outcome.status == "ok" and not written:
        outcome.status, outcome.reason = "failed", "The training run wrote no checkpoint."
    if outcome.status == "ok" and os.lstat(checkpoint).st_size > checkpoint_cap(job):
        outcome.status = "failed"
        outcome.reason = "The checkpoint is larger than the model's weights can be."
    if outcome.status == "ok":
        try:
            hand_over(checkpoint, dirs.eval_in / CHECKPOINT)
        except OSError as error:
            return StageOutcome(
                status="error", infra=True, reason=f"could not hand over the checkpoint: {error}"
            )
    return outcome


def _evaluate(outcome: StageOutcome, dirs: StageDirs, evaluator: Standby) -> StageOutcome:
    try:
        evaluation = evaluator.wait()
    except OSError as error:
        return StageOutcome(
            status="error", infra=True, reason=f"could not start evaluation: {error}"
        )
    outcome.eval_s = evaluation.seconds
    return _read_evaluation(outcome, dirs.eval, evaluation)


@dataclass
class LmEvalJob:
    """An lm-eval stage: trusted downstream evaluation of a train stage's checkpoint."""

    run_dir: Path
    checkpoint: Path
    evals_dir: Path  # <data_dir>/evals; its parent holds tokenizer/
    label: str
    model_config: dict[str, Any]  # the train stage's model, from the task spec
    time_limit_s: float
    evals: list[str] | None = None  # None: every set present
    limit: int | None = None
    gpus: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)


def run_lm_eval_stage(job: LmEvalJob, runner: Runner, cancel: threading.Event) -> StageOutcome:
    """Run ``lossgym.trainer.lm_eval``; its exit 1 is the agent's, 2 and 3 the host's."""
    layout = {"eval": job.run_dir / "eval"}
    try:
        layout["eval"].mkdir(parents=True, exist_ok=True)
        (layout["eval"] / "model.json").write_text(json.dumps(job.model_config, indent=2))
        evaluation = runner.run(_lm_eval_spec(job, layout["eval"]), cancel)
    except OSError as error:
        return StageOutcome(status="error", infra=True, reason=f"could not start lm-eval: {error}")
    outcome = StageOutcome(status="ok", exit_code=evaluation.exit_code, eval_s=evaluation.seconds)
    return _read_evaluation(outcome, layout["eval"], evaluation)


def _lm_eval_spec(job: LmEvalJob, eval_dir: Path) -> RunSpec:
    argv = [
        PYTHON, "-I", "-m", "lossgym.trainer.lm_eval",
        "--checkpoint", str(job.checkpoint),
        "--model-config", str(eval_dir / "model.json"),
        "--evals-dir", str(job.evals_dir),
        "--label", job.label,
        "--out", str(eval_dir / "metrics.json"),
    ]  # fmt: skip
    if job.evals:
        argv += ["--sets", ",".join(job.evals)]
    if job.limit:
        argv += ["--limit", str(job.limit)]
    env = base_env({"HOME": str(eval_dir)})
    mounts = [
        Mount(job.checkpoint),
        Mount(job.evals_dir),
        Mount(job.evals_dir.parent / "tokenizer"),
        Mount(eval_dir, writable=True),
    ]
    return RunSpec(
        argv, eval_dir, job.run_dir / "eval.log", job.time_limit_s, env, job.run_dir / "eval.pid",
        mounts=[m for m in mounts if m.path.exists()], gpus=job.gpus, limits=job.limits,
    )  # fmt: skip


def _read_training(dirs: StageDirs, result: RunResult) -> StageOutcome:
    text = _read_text(dirs.log)
    curve, lines = parse_train_metrics(text)
    outcome = StageOutcome(
        status="ok",
        exit_code=result.exit_code,
        curve=curve,
        train_lines=lines,
        # Paths as the agent knows them: relative to its workspace; no host paths.
        log_tail=agent_text(agent_log(text), dirs.root)[-LOG_TAIL_BYTES:],
        log_path=str(dirs.log),
        train_s=result.seconds,
    )
    if result.timed_out:
        outcome.status = "timeout"
    elif result.cancelled:
        outcome.status, outcome.reason = "failed", "The run was cancelled."
    elif result.exit_code != 0:
        outcome.status = "failed"
        outcome.reason = f"The training run exited with status {result.exit_code}."
    return outcome


def _read_evaluation(outcome: StageOutcome, eval_dir: Path, evaluation: RunResult) -> StageOutcome:
    metrics_file = eval_dir / "metrics.json"
    if evaluation.exit_code != 0 or not metrics_file.is_file():
        eval_log = _read_text(eval_dir.parent / "eval.log").strip().splitlines()
        why = agent_text(eval_log[-1], eval_dir.parent) if eval_log else "no output"
        outcome.exit_code = evaluation.exit_code
        # Exit 1: the checkpoint was missing or rejected, which the training run
        # (the agent's code) caused. Anything else is the evaluator's problem.
        if evaluation.exit_code == EVAL_EXIT_BAD_CHECKPOINT:
            outcome.status, outcome.reason = "failed", f"The checkpoint was rejected: {why}"
        else:
            outcome.status, outcome.infra = "error", True
            outcome.reason = f"the trusted evaluator failed: {why}"
        return outcome
    report = json.loads(metrics_file.read_text())
    outcome.metrics = {k: float(v) for k, v in report["metrics"].items()}
    outcome.info["eval"] = {k: v for k, v in report.items() if k != "metrics"}
    if not all(math.isfinite(v) for v in outcome.metrics.values()):
        outcome.status, outcome.reason = "invalid", "An evaluated metric is not finite"
    return outcome


def agent_text(text: str, run_dir: Path) -> str:
    """`text` without this host's paths: the workspace's become relative, others tags.

    `run_dir` is a stage's real directory, `<runs>/job-N/attempt-K/<label>` or a
    warm slot's `<runs>/warm/training/slot-X`: both sit three levels down.
    """
    text = text.replace(f"{run_dir / 'workspace'}/", "")
    return redact_host_paths(text, {run_dir.parent.parent.parent: "<runs>"})


def agent_log(text: str) -> str:
    """The run's output without torchrun's own failure report and warnings.

    When a rank fails, torchrun appends a traceback of its own and a summary
    box; in a short tail those would hide the agent's actual error.
    """
    marker = text.rfind("torch.distributed.elastic.multiprocessing.errors.ChildFailedError")
    if marker != -1:
        start = text.rfind("Traceback (most recent call last):", 0, marker)
        text = text[:start] if start != -1 else text
    lines = [line for line in text.splitlines() if "torch/distributed/elastic" not in line]
    return "\n".join(lines) + ("\n" if lines else "")


def parse_train_metrics(text: str) -> tuple[list[list[float]], list[str]]:
    """TRAIN_METRICS lines → curve points and the lines themselves (progress only).

    Only whole lines that start with the marker count: the script prints them
    so, and region code cannot (its prints start with `[loss] `).
    """
    curve, lines = [], []
    for line in text.splitlines():
        match = TRAIN_LINE.match(line.rstrip())
        if match:
            step, train, val = match.groups()
            try:
                curve.append([int(step), float(train), float(val)])
            except ValueError:
                continue
            lines.append(line.strip())
    return curve, lines


def _read_text(path: Path) -> str:
    """The last megabyte of a log, from its first whole line on."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - LOG_READ_BYTES))
            data = log.read(LOG_READ_BYTES)
    except OSError:
        return ""
    if size > LOG_READ_BYTES:
        data = data[data.find(b"\n") + 1 :]  # a cut line is no line: it may lack its start
    return data.decode("utf-8", errors="replace")
