"""Defence in depth: arbitrary code in the training process, run for real.

The policy and the regions' own namespace stop everything here before it can
run; this suite assumes both broken. It puts escape attempts into the
training script's own module-level code (where no region is) and runs it
straight through `run_train_stage`, to show what the runner itself holds.
Under an isolating runner the escape attempts all fail; under every runner
the recorded metric is the trusted evaluator's, never the one the training
process forged.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from lossgym.env.task import load_task
from lossgym.sandbox.runner import Runner
from lossgym.sandbox.stages import StageJob, run_train_stage, train_job
from tests.conftest import REPO
from tests.sandbox.runner_fixtures import make_test_runner

pytestmark = pytest.mark.slow  # real training runs

ANCHOR = "config = {k: globals()[k] for k in config_keys}\n"
# Each attempt is recorded in out/escape.json (out/ is the one writable place).
ESCAPE = """import socket
_tried = {}
def _attempt(name, action):
    try:
        action()
        _tried[name] = "done"
    except Exception as error:
        _tried[name] = type(error).__name__
_attempt("read val shard", lambda: open(VAL_SHARD, "rb").read(16))
_attempt("read a host file", lambda: open(SECRET).read())
_attempt("list the runs", lambda: _tried.update(listing=sorted(os.listdir(RUNS))))
_attempt("network", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))
_attempt("forge metrics", lambda: open("../eval/metrics.json", "w").write(
    '{"metrics": {"val_loss_gpt-tiny": 0.0001}}'))
_attempt("write workspace", lambda: open("nanoGPT/custom_pretrain.py", "a").write("#"))
_tried["uid"] = os.getuid()
if int(os.environ.get("RANK", "0")) == 0:
    os.makedirs(out_dir, exist_ok=True)
    json.dump(_tried, open(os.path.join(out_dir, "escape.json"), "w"))
    print("Final metrics (gpt-tiny): val_loss_gpt-tiny=0.0001")
"""


def _job(tmp_path: Path, data_dir: Path) -> StageJob:
    task = load_task(REPO / "tasks", "llm-pretrain-loss")
    stage = task.spec.profiles["tiny-cpu"].stages[0]
    ws = task.new_workspace()
    path = task.spec.workspace[0].path
    secret = tmp_path / "operator-secret.txt"
    secret.write_text("the operator key")
    val_shard = sorted((data_dir / "shakespeare").glob("val_*.bin"))[0].resolve()
    escaping = ESCAPE.replace("VAL_SHARD", repr(str(val_shard)))
    escaping = escaping.replace("SECRET", repr(str(secret))).replace("RUNS", repr(str(tmp_path)))
    text = ws.files[path].replace(ANCHOR, ANCHOR + escaping)
    shift = escaping.count("\n")
    regions = [
        {**r.to_dict(), "start": r.start + shift, "end": r.end + shift} for r in ws.regions_of(path)
    ]
    job = train_job(
        task, stage, tmp_path / "job-1" / "attempt-1" / stage.label, data_dir,
        {path: text}, {path: regions}, seed=1,
    )  # fmt: skip
    job.train_config.update(max_iters=6, eval_interval=3, eval_iters=1, log_interval=3)
    job.time_limit_s, job.val_tokens = 120.0, 2048
    return job


def _run(runner: Runner, tmp_path: Path, data_dir: Path) -> tuple[dict, dict, str]:
    job = _job(tmp_path, data_dir)
    outcome = run_train_stage(job, runner, threading.Event())
    assert outcome.status == "ok", (outcome.reason, outcome.log_tail[-3000:])
    escape = json.loads((job.run_dir / "out" / "escape.json").read_text())
    return escape, outcome.metrics, outcome.log_tail


@pytest.mark.parametrize("kind", ["bwrap", "docker"])
def test_isolating_runner_holds_when_the_policy_is_bypassed(
    kind: str, tmp_path: Path, data_dir: Path
) -> None:
    escape, metrics, _ = _run(make_test_runner(kind), tmp_path, data_dir)
    assert escape["read val shard"] == "FileNotFoundError"
    assert escape["read a host file"] == "FileNotFoundError"
    assert escape.get("listing") in (None, ["job-1"])  # at most the way to its own mounts
    assert escape["network"] == "OSError"
    assert escape["forge metrics"] in ("FileNotFoundError", "PermissionError")
    assert escape["write workspace"] in ("OSError", "PermissionError")
    assert escape["uid"] == 65534
    assert 0.5 < metrics["val_loss_gpt-tiny"] < 20, metrics


def test_local_runner_still_reports_only_the_evaluators_metric(
    tmp_path: Path, data_dir: Path
) -> None:
    """Without isolation the escape can read files, but the metric still is the evaluator's."""
    escape, metrics, log = _run(make_test_runner("local"), tmp_path, data_dir)
    assert escape["forge metrics"] == "done"  # overwritten: the evaluator writes after training
    assert "val_loss_gpt-tiny=0.0001" in log
    assert 0.5 < metrics["val_loss_gpt-tiny"] < 20, metrics
