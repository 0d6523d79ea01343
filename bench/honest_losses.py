"""val_loss of the honest losses at one seed: the four baselines and the seed transcript's two.

Each workspace is built through the edit engine (baseline edit files, and the
`examples/edit_*.json` edits of the walk-through) and trained with the task's
profile exactly as the worker does (`train_job`, the trusted launcher, the
trusted evaluator), one after another:

    .venv/bin/python bench/honest_losses.py [--profile tiny-cpu] [--seed 1337]
                                            [--runner bwrap|docker|local]

Prints one JSON line per loss (val_loss, status, seconds). Used to check that
a change to how agent code runs leaves honest losses' numbers unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lossgym.env.baselines import apply_baseline, load_baseline  # noqa: E402
from lossgym.env.task import Task, load_task  # noqa: E402
from lossgym.env.workspace import Workspace  # noqa: E402
from lossgym.sandbox.stages import run_train_stage, train_job  # noqa: E402
from tests.sandbox.runner_fixtures import make_test_runner  # noqa: E402


def workspaces(task: Task) -> list[tuple[str, Workspace]]:
    found = []
    path = task.spec.workspace[0].path
    for name in task.spec.baselines:
        ws = task.new_workspace()
        apply_baseline(ws, load_baseline(task, name))
        found.append((name, ws))
    for example in ("edit_polyloss", "edit_softcap"):
        ws = task.new_workspace()
        edit = json.loads((REPO / "examples" / f"{example}.json").read_text())
        region = next(r for r in ws.regions_of(path) if r.name == "compute_loss")
        ws.replace(path, region.start, region.end, edit["content"])
        found.append((example, ws))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny-cpu")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--runner", choices=("bwrap", "docker", "local"), default="bwrap")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data")
    args = parser.parse_args()
    task = load_task(REPO / "tasks", "llm-pretrain-loss")
    stage = task.profile(args.profile).train_stage
    runner = make_test_runner(args.runner)
    for name, ws in workspaces(task):
        regions = {p: [r.to_dict() for r in ws.regions_of(p)] for p in ws.files}
        with tempfile.TemporaryDirectory() as tmp:
            job = train_job(task, stage, Path(tmp) / stage.label, args.data_dir.resolve(),
                            dict(ws.files), regions, args.seed)  # fmt: skip
            start = time.monotonic()
            outcome = run_train_stage(job, runner, threading.Event())
        line = {"loss": name, "status": outcome.status, "metrics": outcome.metrics,
                "seconds": round(time.monotonic() - start, 1), "runner": runner.name}  # fmt: skip
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
