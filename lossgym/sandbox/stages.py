"""Running one stage of a test: untrusted training, then trusted evaluation.

The training process sees a copy of the agent's workspace, the train and
monitor shards, and one writable `out/` directory. The evaluator runs after the
training process group is gone, reads the checkpoint as plain tensors, and
writes its metrics where only the worker reads them. Nothing the training
process prints can become a final metric: metrics come from `eval/metrics.json`.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossgym.env.task import StageSpec, Task
from lossgym.sandbox.run_record import build_record, complete_record, write_record
from lossgym.sandbox.runner import (
    PYTHON,
    Limits,
    Mount,
    Runner,
    RunResult,
    RunSpec,
    base_env,
    redact_host_paths,
)

TRAIN_LINE = re.compile(
    r"^TRAIN_METRICS: step=(\d+), train_loss=([-+0-9.eEnaif]+), val_loss=([-+0-9.eEnaif]+)$"
)
LOG_TAIL_BYTES = 8_000
TRAIN_LOG = "train.log"  # in each stage's run directory: the training process's output
LOG_READ_BYTES = 1_000_000
EVAL_TIME_LIMIT_S = 1800.0
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


def run_train_stage(job: StageJob, runner: Runner, cancel: threading.Event) -> StageOutcome:
    try:
        layout = _prepare_run_dir(job)
        result = runner.run(_train_spec(job, layout), cancel)
    except OSError as error:  # no disk, no torchrun: nothing the agent did
        return StageOutcome(status="error", infra=True, reason=f"could not start training: {error}")
    outcome = _read_training(layout["log"], result)
    outcome.info["run"] = complete_record(job.run_dir, layout["log"])
    checkpoint = layout["out"] / "model.safetensors"
    if outcome.status == "failed" and result.exit_code and checkpoint.is_file():
        # A rank that dies after rank 0 wrote the checkpoint (torch's gloo
        # teardown occasionally aborts a rank at exit) changes nothing that
        # counts: the checkpoint is complete (written, then renamed) and the
        # trusted evaluator judges it. Failing the test would charge the agent
        # for a crash of the library, so evaluate and keep the exit code.
        outcome.status, outcome.reason = "ok", ""
        outcome.info["exit_code_after_checkpoint"] = result.exit_code
    if outcome.status != "ok":
        return outcome
    if not checkpoint.is_file():
        outcome.status, outcome.reason = "failed", "The training run wrote no checkpoint."
        return outcome
    try:
        evaluation = runner.run(_eval_spec(job, layout, checkpoint), cancel)
    except OSError as error:
        return StageOutcome(
            status="error", infra=True, reason=f"could not start evaluation: {error}"
        )
    outcome.eval_s = evaluation.seconds
    return _read_evaluation(outcome, layout, evaluation)


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
    return _read_evaluation(outcome, layout, evaluation)


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
        argv, eval_dir, job.run_dir / "eval.log", job.time_limit_s, env,
        mounts=[m for m in mounts if m.path.exists()], gpus=job.gpus, limits=job.limits,
    )  # fmt: skip


def _prepare_run_dir(job: StageJob) -> dict[str, Path]:
    layout = {
        name: job.run_dir / name for name in ("workspace", "train_data", "out", "eval", "log")
    }
    for name in ("workspace", "train_data", "out", "eval"):
        layout[name].mkdir(parents=True, exist_ok=True)
    layout["log"] = job.run_dir / TRAIN_LOG
    for rel, text in job.files.items():
        path = layout["workspace"] / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    # Only the train and monitor splits are visible to the training process.
    for shard in visible_shards(job.dataset_dir):
        link = layout["train_data"] / shard.name
        if not link.exists():
            link.symlink_to(shard)
    config = dict(job.train_config)
    config.update(seed=job.seed, data_dir=str(layout["train_data"]), out_dir=str(layout["out"]))
    (job.run_dir / "config.json").write_text(json.dumps(config, indent=2))
    write_record(job.run_dir, build_record(job, config))
    (layout["eval"] / "model.json").write_text(json.dumps(job.model_config, indent=2))
    return layout


def visible_shards(dataset_dir: Path) -> list[Path]:
    """The shards training may read: train and monitor splits, never val."""
    shards = sorted(dataset_dir.glob("*.bin"))
    return [s.resolve() for s in shards if s.name.startswith(("train_", "monitor_"))]


def _train_spec(job: StageJob, layout: dict[str, Path]) -> RunSpec:
    # -I everywhere: no workspace directory on sys.path, no PYTHON* variables.
    argv = [
        PYTHON, "-I", "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={job.nproc}", "--no-python",
        PYTHON, "-I", "-u", "-m", "lossgym.trainer.launch",
        "--script", job.entrypoint, "--regions", json.dumps(job.regions),
    ]  # fmt: skip
    env = base_env(
        {
            "LOSSGYM_CONFIG": str(job.run_dir / "config.json"),
            "OMP_NUM_THREADS": "1",
            "HOME": str(layout["out"]),
            "TMPDIR": str(layout["out"]),
        }
    )
    # Training sees its workspace, its config, the train and monitor shards
    # (through the symlinks in train_data/) and writes only to out/.
    mounts = [Mount(layout["workspace"]), Mount(job.run_dir / "config.json")]
    mounts += [Mount(layout["train_data"])] + [Mount(s) for s in visible_shards(job.dataset_dir)]
    mounts.append(Mount(layout["out"], writable=True))
    pid_file = job.run_dir / "pid"
    return RunSpec(
        argv, layout["workspace"], layout["log"], job.time_limit_s, env, pid_file,
        mounts=mounts, gpus=job.gpus, limits=job.limits,
    )  # fmt: skip


def _eval_spec(job: StageJob, layout: dict[str, Path], checkpoint: Path) -> RunSpec:
    argv = [
        PYTHON, "-I", "-m", "lossgym.trainer.evaluate",
        "--checkpoint", str(checkpoint),
        "--model-config", str(layout["eval"] / "model.json"),
        "--data-dir", str(job.dataset_dir.resolve()),
        "--label", job.label,
        "--val-tokens", str(job.val_tokens),
        "--out", str(layout["eval"] / "metrics.json"),
    ]  # fmt: skip
    env = base_env({"HOME": str(layout["eval"])})
    # The evaluator sees the checkpoint, the model config and the val shards only.
    val = sorted(s.resolve() for s in job.dataset_dir.glob("val_*.bin"))
    mounts = [Mount(checkpoint), *map(Mount, val), Mount(layout["eval"], writable=True)]
    return RunSpec(
        argv, layout["eval"], job.run_dir / "eval.log", EVAL_TIME_LIMIT_S, env,
        mounts=mounts, gpus=job.gpus, limits=job.limits,
    )  # fmt: skip


def _read_training(log_path: Path, result: RunResult) -> StageOutcome:
    text = _read_text(log_path)
    curve, lines = parse_train_metrics(text)
    outcome = StageOutcome(
        status="ok",
        exit_code=result.exit_code,
        curve=curve,
        train_lines=lines,
        # Paths as the agent knows them: relative to its workspace; no host paths.
        log_tail=agent_text(agent_log(text), log_path.parent)[-LOG_TAIL_BYTES:],
        log_path=str(log_path),
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


def _read_evaluation(
    outcome: StageOutcome, layout: dict[str, Path], evaluation: RunResult
) -> StageOutcome:
    metrics_file = layout["eval"] / "metrics.json"
    if evaluation.exit_code != 0 or not metrics_file.is_file():
        eval_log = _read_text(layout["eval"].parent / "eval.log").strip().splitlines()
        why = agent_text(eval_log[-1], layout["eval"].parent) if eval_log else "no output"
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
    """`text` without this host's paths: the workspace's become relative, others tags."""
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
    if not path.is_file():
        return ""
    data = path.read_bytes()
    if len(data) > LOG_READ_BYTES:
        data = data[-LOG_READ_BYTES:]
        data = data[data.find(b"\n") + 1 :]  # a cut line is no line: it may lack its start
    return data.decode("utf-8", errors="replace")
