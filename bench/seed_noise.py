"""Seed noise of a profile: each baseline (and a known-bad loss) over several seeds.

Trains every (loss, seed) exactly as the worker does (`train_job`, the trusted
launcher and evaluator), then summarises: cross-entropy's spread over seeds,
each loss's unpaired delta to cross-entropy with its standard error, the
paired delta (same seed: same init and data order) with its standard error,
and where the known-bad loss lands in cross-entropy's σ:

    .venv/bin/python bench/seed_noise.py [--profile tiny-cpu] [--seeds 1337,...,1341]
        [--runner bwrap|docker|local] [--out runs.jsonl] [--summarize runs.jsonl]

One JSON line per run as it finishes (kept in --out, so `--summarize` can redo
the summary without training). val_loss values are deterministic per seed,
so they do not depend on machine load; the seconds do.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
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

REFERENCE = "cross_entropy"
KNOWN_BAD = "label_smoothing_0.3"  # six times the baseline's epsilon: hurts val loss at any length
KNOWN_BAD_LOSS = '''def compute_loss(logits, targets):
    """Cross-entropy with label smoothing 0.3 in training (known to hurt val loss)."""
    flat_logits = logits.reshape(-1, logits.size(-1))
    flat_targets = targets.reshape(-1)
    if not torch.is_grad_enabled():
        return F.cross_entropy(flat_logits, flat_targets, ignore_index=-1)
    return F.cross_entropy(flat_logits, flat_targets, ignore_index=-1, label_smoothing=0.3)
'''


def workspaces(task: Task) -> dict[str, Workspace]:
    found = {}
    for name in task.spec.baselines:
        ws = task.new_workspace()
        apply_baseline(ws, load_baseline(task, name))
        found[name] = ws
    ws = task.new_workspace()
    path = task.spec.workspace[0].path
    region = next(r for r in ws.regions_of(path) if r.name == "compute_loss")
    ws.replace(path, region.start, region.end, KNOWN_BAD_LOSS)
    found[KNOWN_BAD] = ws
    return found


def train(task: Task, args: argparse.Namespace, name: str, ws: Workspace, seed: int) -> dict:
    stage = task.profile(args.profile).train_stage
    regions = {p: [r.to_dict() for r in ws.regions_of(p)] for p in ws.files}
    with tempfile.TemporaryDirectory() as tmp:
        job = train_job(task, stage, Path(tmp) / stage.label, args.data_dir.resolve(),
                        dict(ws.files), regions, seed)  # fmt: skip
        job.train_config.update(args.overrides)
        start = time.monotonic()
        outcome = run_train_stage(job, make_test_runner(args.runner), threading.Event())
    key = f"val_loss_{stage.label}"
    done = re.search(r"^done: \d+ iters in ([0-9.]+)s .*?(\d+) tok/s", outcome.log_tail, re.M)
    return {"loss": name, "seed": seed, "status": outcome.status,
            "val_loss": outcome.metrics.get(key), "seconds": round(time.monotonic() - start, 1),
            "train_process_s": round(outcome.train_s, 1),
            "eval_process_s": round(outcome.eval_s, 1),
            "train_loop_s": float(done[1]) if done else None,
            "tok_s": int(done[2]) if done else None,
            "profile": args.profile, "runner": args.runner,
            **({"overrides": args.overrides} if args.overrides else {})}  # fmt: skip


def summarize(runs: list[dict]) -> dict:
    values: dict[str, dict[int, float]] = {}
    for run in runs:
        if run["val_loss"] is not None:
            values.setdefault(run["loss"], {})[run["seed"]] = run["val_loss"]
    ce = values.get(REFERENCE, {})
    ce_vals = list(ce.values())
    ce_sd = statistics.stdev(ce_vals) if len(ce_vals) > 1 else math.nan
    spread = max(ce_vals) - min(ce_vals)
    mean = statistics.fmean(ce_vals)
    out: dict = {"cross_entropy": {"n": len(ce_vals), "mean": _r(mean), "sd": _r(ce_sd),
                                   "range": _r(spread)}}  # fmt: skip
    for name, by_seed in values.items():
        if name == REFERENCE:
            continue
        vals = list(by_seed.values())
        sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
        delta = statistics.fmean(vals) - statistics.fmean(ce_vals)
        se = math.sqrt(sd**2 / len(vals) + ce_sd**2 / len(ce_vals))
        pairs = [v - ce[s] for s, v in by_seed.items() if s in ce]
        p_sd = statistics.stdev(pairs) if len(pairs) > 1 else math.nan
        p_se = p_sd / math.sqrt(len(pairs)) if pairs else math.nan
        out[name] = {
            "n": len(vals), "mean": _r(statistics.fmean(vals)), "sd": _r(sd),
            "delta": _r(delta), "delta_se": _r(se),
            "paired_n": len(pairs), "paired_delta": _r(statistics.fmean(pairs)) if pairs else None,
            "paired_sd": _r(p_sd), "paired_se": _r(p_se),
            "paired_z": _r(statistics.fmean(pairs) / p_se) if pairs and p_se > 0 else None,
            "sigmas_of_ce": _r(delta / ce_sd) if ce_sd > 0 else None,
        }  # fmt: skip
    seconds = [r["seconds"] for r in runs]
    out["seconds_per_test"] = {"median": statistics.median(seconds), "max": max(seconds)}
    return out


def _knob(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--set wants KNOB=VALUE, not {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _r(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny-cpu")
    parser.add_argument("--seeds", default="1337,1338,1339,1340,1341")
    parser.add_argument("--losses", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--runner", choices=("bwrap", "docker", "local"), default="bwrap")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data")
    parser.add_argument("--out", type=Path, default=None, help="append each run here (JSONL)")
    parser.add_argument("--summarize", type=Path, default=None, help="only summarise this JSONL")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="override a training knob of the profile, e.g. dtype=float32",
    )
    args = parser.parse_args()
    args.overrides = dict(_knob(text) for text in args.set)
    if args.summarize:
        runs = [json.loads(line) for line in args.summarize.read_text().splitlines() if line]
        print(json.dumps(summarize(runs), indent=2))
        return
    task = load_task(REPO / "tasks", "llm-pretrain-loss")
    chosen = workspaces(task)
    if args.losses:
        chosen = {k: v for k, v in chosen.items() if k in args.losses.split(",")}
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, ws in chosen.items():
            run = train(task, args, name, ws, seed)
            runs.append(run)
            print(json.dumps(run), flush=True)
            if args.out:
                with args.out.open("a") as out:
                    out.write(json.dumps(run) + "\n")
    print(json.dumps(summarize(runs), indent=2))


if __name__ == "__main__":
    main()
