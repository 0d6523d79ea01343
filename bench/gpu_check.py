"""GPU validation in one prepared command (issue 10): bf16, compile, NCCL, MFU, the evaluator.

    python bench/gpu_check.py             # one H100/H200: about 6 minutes
    python bench/gpu_check.py --dry-run   # the same code paths on CPU, tiny model (a test)

Every run goes the way the worker runs a test: `torchrun ... -m lossgym.trainer.launch`
on the unmodified template (the cross-entropy baseline), its regions in their own
namespace, then `python -m lossgym.trainer.evaluate` on the checkpoint. It needs
nothing the GPU machine lacks: torch, numpy, safetensors and pyyaml, and the
checkout on `sys.path` (run it from the repository root). FineWeb is used when
`data/fineweb10b` is prepared; otherwise synthetic GPT-2 token shards are written.

Phases, each with a table row: the 124M train stage with bf16 and compile
(tokens/s, ms/iteration, MFU against the dense bf16 peak, compile time, peak
memory; NCCL with one process), the same with compile off and in fp32, NCCL with
two processes when two GPUs are present, determinism (one seed twice, the trusted
val_loss of each), the trusted evaluator on CUDA (val_loss and its time as a share
of the profile's training time), and the projected wall time of every GPU profile
against its `time_limit_s`. Prints the table and writes `gpu_check.json` under
`$OUT` (or `--out`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TEMPLATE = REPO / "lossgym" / "trainer" / "template" / "custom_pretrain.py"
TASK = REPO / "tasks" / "llm-pretrain-loss" / "task.yaml"
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense FLOP/s per GPU
ITER_RE = re.compile(r"^iter (\d+): loss \S+, lr \S+, (\d+)ms/iter, (\d+) tok/s$", re.M)
DONE_RE = re.compile(r"^done: .*?, (\d+) tok/s, (.*)$", re.M)
MEMORY_RE = re.compile(r"peak GPU memory ([\d.]+) GiB")
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "vocab_size": 50304,
        "bias": True}  # fmt: skip


@dataclass
class Run:
    """One training run and what its log says."""

    name: str
    ok: bool = False
    seconds: float = 0.0
    tok_s: float | None = None  # steady state: median after the warm-up iterations
    ms_iter: float | None = None
    first_iter_ms: float | None = None  # includes torch.compile's compilation
    mfu: float | None = None
    peak_memory_gib: float | None = None
    val_loss: float | None = None
    eval_seconds: float | None = None
    note: str = ""
    log_tail: str = field(default="", repr=False)


def task_stage(profile: str) -> dict:
    spec = yaml.safe_load(TASK.read_text())
    return spec["profiles"][profile]["stages"][0]


def template_regions() -> list[dict]:
    """The template's editable regions, from its marker lines (as the task loads them)."""
    from lossgym.env.markers import marked_regions

    return [r.to_dict() for r in marked_regions(TEMPLATE.name, TEMPLATE.read_text())]


def flops_per_token(model: dict) -> float:
    """6 per parameter (position embeddings excluded, tied head once) plus attention."""
    d, layers, vocab, block = (
        model["n_embd"],
        model["n_layer"],
        model["vocab_size"],
        model["block_size"],
    )
    params = vocab * d + layers * (12 * d * d + 13 * d) + 2 * d
    return 6 * params + 12 * layers * d * block


def write_data(root: Path, tokens: int, seed: int = 0) -> Path:
    """Synthetic GPT-2 token shards (train, monitor, val) in the llm.c format."""
    import numpy as np

    from lossgym.trainer.shards import write_shard

    data = root / "synthetic"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", tokens), ("monitor", tokens // 8), ("val", tokens // 4)):
        write_shard(data / f"{split}_000000.bin", rng.integers(0, 50257, n, dtype=np.uint16))
    return data


def train(name: str, config: dict, nproc: int, work: Path, timeout: float) -> tuple[Run, Path]:
    """One training run through the launcher; returns its Run and checkpoint path."""
    run_dir = work / name.replace(" ", "_")
    out = run_dir / "out"
    out.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({**config, "out_dir": str(out)}))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "--no-python", sys.executable, "-u", "-m",
            "lossgym.trainer.launch", "--script", str(TEMPLATE),
            "--regions", json.dumps(template_regions())]  # fmt: skip
    env = {**os.environ, "LOSSGYM_CONFIG": str(run_dir / "config.json"), "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    try:
        done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        log, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as error:
        log, code = f"{error.stdout or ''}{error.stderr or ''}\ntimed out after {timeout:.0f} s", -1
    run = Run(name, ok=code == 0, seconds=round(time.monotonic() - start, 1), log_tail=log[-3000:])
    read_log(run, log, config, nproc)
    if not run.ok:
        run.note = f"exit {code}: " + " | ".join(log.strip().splitlines()[-3:])
    return run, out / "model.safetensors"


def read_log(run: Run, log: str, config: dict, nproc: int) -> None:
    iters = [(int(m[1]), int(m[2]), int(m[3])) for m in ITER_RE.finditer(log)]
    steady = [r for r in iters if r[0] > min(5, len(iters) - 1)] or iters
    if steady:
        run.tok_s = statistics.median(r[2] for r in steady)
        run.ms_iter = statistics.median(r[1] for r in steady)
        run.first_iter_ms = iters[0][1]
    if memory := MEMORY_RE.search(log):
        run.peak_memory_gib = float(memory[1])
    if run.tok_s and (peak := device_peak()):
        model = {k: config[k] for k in ("n_layer", "n_embd", "vocab_size", "block_size")}
        run.mfu = round(flops_per_token(model) * run.tok_s / nproc / peak, 4)


def evaluate(
    checkpoint: Path, model: dict, data: Path, val_tokens: int, work: Path
) -> tuple[float | None, float, str]:
    """The trusted evaluator on the checkpoint: (val_loss, seconds, error)."""
    (work / "model.json").write_text(json.dumps(model))
    out = work / "metrics.json"
    argv = [sys.executable, "-m", "lossgym.trainer.evaluate", "--checkpoint", str(checkpoint),
            "--model-config", str(work / "model.json"), "--data-dir", str(data), "--label", "check",
            "--val-tokens", str(val_tokens), "--out", str(out)]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    seconds = round(time.monotonic() - start, 1)
    if done.returncode != 0:
        return None, seconds, " | ".join(done.stderr.strip().splitlines()[-2:])
    return json.loads(out.read_text())["metrics"]["val_loss_check"], seconds, ""


@functools.cache
def device_peak() -> float | None:
    """The dense bf16 FLOP/s of GPU 0, where known; None on CPU."""
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def base_config(args: argparse.Namespace, data: Path, iters: int) -> dict:
    """The 124M stage's config (tiny on --dry-run), shortened to `iters` iterations."""
    stage = task_stage("gpt2-124m")
    model = TINY if args.dry_run else stage["model"]
    config = {**model, **stage["config"], "data_dir": str(data), "max_iters": iters,
              "warmup_iters": min(10, iters // 3), "eval_interval": iters, "eval_iters": 2,
              "log_interval": 1, "seed": 1337}  # fmt: skip
    if args.dry_run:
        config.update(batch_size=2, gradient_accumulation_steps=1, device="cpu")
    return config


def phases(args: argparse.Namespace, data: Path, work: Path) -> dict:
    """Every phase in order; each is skipped (with the reason) once the time budget is spent."""
    import torch

    gpus = torch.cuda.device_count()
    deadline = time.monotonic() + args.budget_s
    iters = {"compile": 4, "eager": 4, "fp32": 3, "det": 3} if args.dry_run else {
        "compile": 60, "eager": 40, "fp32": 20, "det": 30}  # fmt: skip
    runs: list[Run] = []

    def go(name: str, nproc: int = 1, **over: object) -> tuple[Run, Path]:
        left = deadline - time.monotonic()
        if left < 30:
            return Run(name, note="skipped: the time budget is spent"), Path("/nonexistent")
        config = {**base_config(args, data, int(over.pop("iters"))), **over}
        run, ckpt = train(name, config, nproc, work, left)
        runs.append(run)
        return run, ckpt

    compiled, checkpoint = go("124m bf16 compile", iters=iters["compile"], compile=True)
    go("124m bf16 eager", iters=iters["eager"], compile=False)
    go("124m fp32 eager", iters=iters["fp32"], compile=False, dtype="float32")
    if gpus >= 2:
        go("124m bf16 eager, NCCL x2", nproc=2, iters=iters["eager"], compile=False)
    model = {k: base_config(args, data, 1)[k] for k in TINY}
    for k in ("a", "b"):  # one seed twice, each scored by the trusted evaluator
        run, ckpt = go(f"determinism {k}", iters=iters["det"], compile=False)
        run.val_loss, run.eval_seconds, _ = evaluate(ckpt, model, data, args.val_tokens, work)
    val, eval_s, error = evaluate(checkpoint, model, data, args.val_tokens, work)
    compiled.val_loss, compiled.eval_seconds = val, eval_s
    compiled.note = compiled.note or error
    return {"gpus": gpus, "runs": runs}


def summary(result: dict, args: argparse.Namespace) -> dict:
    """Derived numbers: compile and bf16 gains, determinism, evaluator share, projections."""
    runs = {r.name: r for r in result["runs"]}
    rate = lambda name: runs[name].tok_s if name in runs else None  # noqa: E731
    out: dict = {}
    if rate("124m bf16 compile") and rate("124m bf16 eager"):
        out["compile_gain"] = round(rate("124m bf16 compile") / rate("124m bf16 eager"), 3)
    if rate("124m bf16 eager") and rate("124m fp32 eager"):
        out["bf16_gain"] = round(rate("124m bf16 eager") / rate("124m fp32 eager"), 3)
    a, b = runs.get("determinism a"), runs.get("determinism b")
    if a and b and a.val_loss is not None and b.val_loss is not None:
        out["determinism"] = {"val_loss_a": a.val_loss, "val_loss_b": b.val_loss,
                              "difference": abs(a.val_loss - b.val_loss)}  # fmt: skip
    best = rate("124m bf16 compile") or rate("124m bf16 eager")
    if best:
        stage = task_stage("gpt2-124m")
        model = TINY if args.dry_run else stage["model"]
        achieved = flops_per_token(model) * best  # FLOP/s of one GPU on the 124M stage
        out["projections"] = projections(achieved)
        compiled = runs.get("124m bf16 compile")
        if compiled and compiled.eval_seconds and not args.dry_run:
            train_s = out["projections"]["gpt2-124m"]["projected_s"]
            share = compiled.eval_seconds * (10_485_760 / args.val_tokens) / train_s
            out["evaluator_share_of_124m_training"] = round(share, 4)
    return out


def projections(achieved_flops: float) -> dict:
    """Each GPU profile's train stage at the measured FLOP/s per GPU, against its limit."""
    spec = yaml.safe_load(TASK.read_text())
    found = {}
    for name, profile in spec["profiles"].items():
        if profile["devices"] != "cuda":
            continue
        stage, config = profile["stages"][0], profile["stages"][0]["config"]
        tokens = (config["max_iters"] * config["batch_size"] * stage["model"]["block_size"]
                  * config["gradient_accumulation_steps"] * stage["nproc"])  # fmt: skip
        seconds = tokens * flops_per_token(stage["model"]) / (achieved_flops * stage["nproc"])
        found[name] = {"tokens": tokens, "projected_s": round(seconds),
                       "time_limit_s": stage["time_limit_s"],
                       "fits": seconds < stage["time_limit_s"]}  # fmt: skip
    return found


def print_table(result: dict, derived: dict) -> None:
    print(f"\n{'run':<28} {'ok':<4} {'tok/s':>10} {'ms/it':>8} {'1st it ms':>10} {'MFU':>7} "
          f"{'mem GiB':>8} {'val_loss':>9} {'eval s':>7}  note")  # fmt: skip
    for r in result["runs"]:
        cells = [r.tok_s, r.ms_iter, r.first_iter_ms]
        nums = " ".join(f"{c:>10,.0f}" if c is not None else f"{'-':>10}" for c in cells)
        mfu = f"{100 * r.mfu:6.1f}%" if r.mfu is not None else f"{'-':>7}"
        mem = f"{r.peak_memory_gib:8.1f}" if r.peak_memory_gib is not None else f"{'-':>8}"
        val = f"{r.val_loss:9.4f}" if r.val_loss is not None else f"{'-':>9}"
        ev = f"{r.eval_seconds:7.1f}" if r.eval_seconds is not None else f"{'-':>7}"
        print(f"{r.name:<28} {'yes' if r.ok else 'NO':<4} {nums} {mfu} {mem} {val} {ev}  {r.note}")
    for key, value in derived.items():
        print(f"{key}: {json.dumps(value)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny model on CPU: a test")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting phases after")
    parser.add_argument("--val-tokens", type=int, help="evaluator tokens [1,048,576; dry 4,096]")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    args.val_tokens = args.val_tokens or (4096 if args.dry_run else 1_048_576)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: use --dry-run on CPU", file=sys.stderr)
        return 2
    device = (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.dry_run else "cpu"
    )
    print(f"torch {torch.__version__}, device {device}, dry run {args.dry_run}", flush=True)
    with tempfile.TemporaryDirectory(prefix="lossgym-gpucheck-") as tmp:
        fineweb = REPO / "data" / "fineweb10b"
        data = fineweb if fineweb.is_dir() and not args.dry_run else write_data(
            Path(tmp), 200_000 if args.dry_run else 20_000_000)  # fmt: skip
        result = phases(args, data, Path(tmp))
    derived = summary(result, args)
    print_table(result, derived)
    report = {
        "device": device, "torch": torch.__version__, "dry_run": args.dry_run,
        "data": "fineweb10b" if data == fineweb else "synthetic", "gpus": result["gpus"],
        "runs": [asdict(r) for r in result["runs"]], **derived,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'gpu_check.json'}")
    return 0 if all(r.ok for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
