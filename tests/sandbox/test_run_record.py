"""The reproducibility record (`run.json`) of a stage run, without real training."""

from __future__ import annotations

import importlib.metadata
import json
import threading
from pathlib import Path

from lossgym.env.workspace import Workspace
from lossgym.sandbox.run_record import complete_record, device_from_log, workspace_hash
from lossgym.sandbox.runner import RunResult, RunSpec
from lossgym.sandbox.stages import StageJob, run_train_stage
from lossgym.sandbox.training import StageDirs, fill
from tests.sandbox.runner_fixtures import await_hand_over

FILES = {"nanoGPT/custom_pretrain.py": "print('hi')\n", "notes.md": "é\n"}


def _job(tmp_path: Path) -> StageJob:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    return StageJob(
        run_dir=tmp_path / "runs" / "job-1" / "attempt-1" / "tiny-cpu",
        files=FILES,
        entrypoint="nanoGPT/custom_pretrain.py",
        dataset_dir=data,
        label="tiny-cpu",
        nproc=2,
        time_limit_s=60.0,
        train_config={"max_iters": 4, "n_layer": 1},
        model_config={"n_layer": 1, "n_head": 2, "n_embd": 32},
        val_tokens=1000,
        seed=7,
        regions=[{"name": "compute_loss", "start": 1, "end": 1}],
    )


class FakeRunner:
    """Writes a training log like the template's and exits with `exit_code`."""

    def __init__(self, log: str, exit_code: int = 1) -> None:
        self.log, self.exit_code = log, exit_code

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        if not await_hand_over(spec, cancel):
            return RunResult(None, False, True, 0.1)
        spec.log_path.write_text(self.log)
        return RunResult(self.exit_code, False, False, 0.1)


def test_record_written_with_the_run_dir(tmp_path):
    job = _job(tmp_path)
    fill(job, StageDirs(job.run_dir).create(job.dataset_dir))
    record = json.loads((job.run_dir / "run.json").read_text())
    resolved = json.loads((job.run_dir / "config.json").read_text())
    assert record["config"] == resolved and resolved["seed"] == 7
    assert record["seed"] == 7 and record["nproc"] == 2 and record["label"] == "tiny-cpu"
    assert record["model_config"] == job.model_config
    assert record["workspace_sha256"] == Workspace(FILES).content_hash()
    versions = record["versions"]
    assert set(versions) == {"python", "torch", "numpy", "tiktoken", "safetensors"}
    assert versions["torch"] == importlib.metadata.version("torch")
    assert record["device"] in ("cpu", "cuda") and record["device_source"] == "host"


def test_workspace_hash_changes_with_content():
    assert workspace_hash(FILES) != workspace_hash({**FILES, "notes.md": "e\n"})
    assert workspace_hash(dict(reversed(list(FILES.items())))) == workspace_hash(FILES)


def test_device_from_the_training_log(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "config: {}\nworld size 2, device cuda:0, tokens per iteration 8,192\nworld size 9, "
        "device fake, x\n"
    )
    assert device_from_log(log) == ("cuda:0", 2)
    assert device_from_log(tmp_path / "missing.log") is None
    assert complete_record(tmp_path, log) == {}  # no run.json: nothing to complete


def test_record_lands_in_stage_info(tmp_path):
    job = _job(tmp_path)
    runner = FakeRunner("world size 2, device cpu, tokens per iteration 256\nboom\n")
    outcome = run_train_stage(job, runner, threading.Event())
    assert outcome.status == "failed"
    run = outcome.info["run"]
    assert run["device"] == "cpu" and run["world_size"] == 2
    assert run["device_source"] == "train.log"
    assert run == json.loads((job.run_dir / "run.json").read_text())
    assert json.loads(json.dumps(outcome.info)) == outcome.info  # JSON column safe


class CrashAtExitRunner:
    """Training writes its checkpoint, then a rank dies (exit -6); evaluation succeeds."""

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        if not await_hand_over(spec, cancel):
            return RunResult(None, False, True, 0.1)
        spec.log_path.write_text("saved out/model.safetensors\nterminate called\n")
        if "lossgym.trainer.torchrun" in spec.argv:
            (spec.cwd.parent / "out" / "model.safetensors").write_bytes(b"weights")
            return RunResult(-6, False, False, 0.1)
        (spec.cwd / "metrics.json").write_text('{"metrics": {"val_loss_tiny-cpu": 5.5}}')
        return RunResult(0, False, False, 0.1)


def test_a_crash_after_the_checkpoint_is_still_evaluated(tmp_path):
    outcome = run_train_stage(_job(tmp_path), CrashAtExitRunner(), threading.Event())
    assert outcome.status == "ok" and outcome.metrics == {"val_loss_tiny-cpu": 5.5}
    assert outcome.info["exit_code_after_checkpoint"] == -6


def test_a_crash_without_a_checkpoint_fails(tmp_path):
    runner = FakeRunner("Traceback ...\nRuntimeError: late failure\n", exit_code=1)
    outcome = run_train_stage(_job(tmp_path), runner, threading.Event())
    assert outcome.status == "failed" and "exited with status 1" in outcome.reason


class CheckpointRunner:
    """Training exits 0 after `make(out_dir)` leaves something at out/model.safetensors."""

    def __init__(self, make) -> None:  # type: ignore[no-untyped-def]
        self.make = make
        self.evaluated = False

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        if not await_hand_over(spec, cancel):
            return RunResult(None, False, True, 0.1)  # the evaluator, never handed a checkpoint
        self.make(spec.cwd.parent / "out" / "model.safetensors")
        return RunResult(0, False, False, 0.1)


def test_what_is_not_a_checkpoint_is_never_handed_over(tmp_path):
    def sparse(path: Path) -> None:  # 1 TB on paper, nothing on disk
        with open(path, "wb") as f:
            f.truncate(2**40)

    def link(path: Path) -> None:
        path.symlink_to("/etc/hostname")

    def fifo(path: Path) -> None:
        import os

        os.mkfifo(path)

    cases = {"sparse": (sparse, "larger than the model"), "link": (link, "wrote no checkpoint"),
             "fifo": (fifo, "wrote no checkpoint")}  # fmt: skip
    for name, (make, reason) in cases.items():
        job = _job(tmp_path / name)
        outcome = run_train_stage(job, CheckpointRunner(make), threading.Event())
        assert outcome.status == "failed" and reason in outcome.reason, (name, outcome)
        assert list((job.run_dir / "eval_in").iterdir()) == [], name


def test_a_second_hand_over_of_the_same_checkpoint_is_a_no_op(tmp_path):
    """A restarted worker reattaching to a cluster job hands the checkpoint over again."""
    from lossgym.sandbox.training import hand_over

    checkpoint, target = tmp_path / "model.safetensors", tmp_path / "in" / "model.safetensors"
    target.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    hand_over(checkpoint, target)
    hand_over(checkpoint, target)
    assert target.read_bytes() == b"weights" and target.stat().st_mode & 0o777 == 0o444
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"new weights")
    hand_over(other, target)  # a different file replaces what a dead attempt left
    assert target.read_bytes() == b"new weights"
