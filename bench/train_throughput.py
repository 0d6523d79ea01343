"""Training throughput of the template (tokens/s, and MFU on known GPUs).

Runs lossgym/trainer/template/custom_pretrain.py under torchrun with a
profile's config (from the task's task.yaml) or a custom size and reports the
steady-state rate: the median over per-iteration progress lines after a few
warm-up iterations (so that torch.compile and allocator warm-up do not count).
Any size flag given overrides the profile's value.

    python bench/train_throughput.py                       # tiny-cpu shape, batch 4, 2 procs
    python bench/train_throughput.py --profile gpt2-124m   # the profile's model, batch, compile
    python bench/train_throughput.py --profile gpt2-124m --iters 3 --batch-size 1 --grad-accum 1
    python bench/train_throughput.py --profile tiny-cpu --plain   # plain nanoGPT-style loop
    python bench/train_throughput.py --n-layer 12 --n-head 12 --n-embd 768 \\
        --block-size 1024 --batch-size 12 --grad-accum 5 --nproc 1 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "lossgym" / "trainer" / "template" / "custom_pretrain.py"
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
ITER_RE = re.compile(r"^iter (\d+): loss \S+, lr \S+, (\d+)ms/iter, (\d+) tok/s$", re.M)
DEVICE_RE = re.compile(r"^world size \d+, device (\S+),", re.M)
# Without --profile: the tiny-cpu model with batch 4 (the figures in bench/RESULTS.md).
DEFAULTS = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 256, "vocab_size": 50304,
            "bias": True, "batch_size": 4, "grad_accum": 1, "nproc": 2, "compile": False,
            "dtype": "bfloat16", "dataset": "shakespeare"}  # fmt: skip


def flops_per_token(run: dict) -> float:
    """6 FLOPs per parameter (without position embeddings) plus attention."""
    import torch

    sys.path.insert(0, str(REPO))
    from lossgym.trainer.model import GPT, GPTConfig

    cfg = GPTConfig(block_size=run["block_size"], vocab_size=run["vocab_size"],
                    n_layer=run["n_layer"], n_head=run["n_head"], n_embd=run["n_embd"])  # fmt: skip
    with torch.device("meta"):
        model = GPT(cfg)
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * run["n_layer"] * run["n_embd"] * run["block_size"]


def profile_values(tasks_dir: Path, task: str, profile: str) -> dict:
    """Model shape, batch, compile, dtype, nproc and dataset of a profile's train stage."""
    sys.path.insert(0, str(REPO))
    from lossgym.env.task import load_task

    stage = load_task(tasks_dir, task).profile(profile).train_stage
    config = stage.config or {}
    values = {**stage.model.model_dump(), "nproc": stage.nproc, "dataset": stage.dataset}
    for key, name in (("batch_size", "batch_size"), ("gradient_accumulation_steps", "grad_accum"),
                      ("compile", "compile"), ("dtype", "dtype")):  # fmt: skip
        if key in config:
            values[name] = config[key]
    return {k: v for k, v in values.items() if k in DEFAULTS}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", help="take shape, batch, compile and nproc from this profile")
    p.add_argument("--task", default="llm-pretrain-loss")
    p.add_argument("--tasks-dir", type=Path, default=REPO / "tasks")
    for name in ("n-layer", "n-head", "n-embd", "block-size"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--batch-size", type=int, help="sequences per micro-step per process")
    p.add_argument("--grad-accum", type=int, help="micro-steps per iteration")
    p.add_argument("--nproc", type=int, help="DDP processes (torchrun)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, help="iterations left out of the median [min(3, iters-1)]")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--dtype", choices=("bfloat16", "float32"), help="autocast dtype on CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=os.environ.get("LOSSGYM_DATA_DIR", str(REPO / "data")))
    p.add_argument("--dataset", help="[the profile's if prepared, else shakespeare]")
    p.add_argument("--plain", action="store_true",
                   help="run bench/plain_loop.py instead: the same model, batch and DDP in a "
                        "plain nanoGPT-style loop, the yardstick for the template")  # fmt: skip
    p.add_argument("--direct", action="store_true",
                   help="run the template file itself, not through lossgym.trainer.launch "
                        "(the regions' own namespace and the detached-logits bridge)")  # fmt: skip
    args = p.parse_args()
    args.warmup = min(3, args.iters - 1) if args.warmup is None else args.warmup
    if args.iters <= args.warmup or args.iters < 2:
        p.error("--iters must exceed --warmup (and be at least 2)")
    return args


def template_regions(args: argparse.Namespace) -> list:
    sys.path.insert(0, str(REPO))
    from lossgym.env.task import load_task

    task = load_task(args.tasks_dir, args.task)
    return task.regions()[task.spec.workspace[0].path]


def resolve(args: argparse.Namespace) -> dict:
    """The run's settings: flags given, else the profile's values, else DEFAULTS."""
    run = dict(DEFAULTS)
    if args.profile:
        run.update(profile_values(args.tasks_dir, args.task, args.profile))
    run.update({k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None})
    if args.dataset is None and not (Path(args.data_dir) / run["dataset"]).is_dir():
        print(f"note: {run['dataset']} is not prepared under {args.data_dir}; measuring on "
              "shakespeare (the rate does not depend on the text)")  # fmt: skip
        run["dataset"] = "shakespeare"
    return run


def run_template(run: dict, args: argparse.Namespace) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="lossgym-bench-") as tmp:
        config = {
            "data_dir": str(Path(args.data_dir) / run["dataset"]),
            "out_dir": str(Path(tmp) / "out"),
            **{
                k: run[k]
                for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")
            },
            "batch_size": run["batch_size"],
            "gradient_accumulation_steps": run["grad_accum"],
            "max_iters": args.iters,
            "warmup_iters": min(2, args.iters - 1),
            "eval_interval": args.iters,
            "eval_iters": 1,
            "log_interval": 1,
            "compile": run["compile"],
            "dtype": run["dtype"],
            "device": args.device,
        }
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps(config))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={run['nproc']}"]  # fmt: skip
        if args.plain:
            cmd.append(str(REPO / "bench" / "plain_loop.py"))
        elif args.direct:
            cmd.append(str(TEMPLATE))
        else:  # as the worker runs it
            regions = [r.to_dict() for r in template_regions(args)]
            cmd += ["--no-python", sys.executable, "-I", "-u", "-m", "lossgym.trainer.launch",
                    "--script", str(TEMPLATE), "--regions", json.dumps(regions)]  # fmt: skip
        env = {**os.environ, "LOSSGYM_CONFIG": str(cfg_path), "OMP_NUM_THREADS": "1"}
        return subprocess.run(cmd, env=env, capture_output=True, text=True)


def mfu_text(run: dict, tok_s: float, device: str) -> str:
    if not device.startswith("cuda"):
        return f"MFU: unknown device ({device})"
    import torch

    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    if peak is None:
        return f"MFU: unknown device ({name}: no bf16 peak known)"
    mfu = flops_per_token(run) * tok_s / run["nproc"] / peak
    return f"MFU {100 * mfu:.1f}% of {name} bf16 peak"


def main() -> int:
    args = parse_args()
    run = resolve(args)
    proc = run_template(run, args)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
        return proc.returncode

    rates = [(int(m[1]), int(m[3])) for m in ITER_RE.finditer(proc.stdout)]
    tok_s = statistics.median([r for it, r in rates if it > args.warmup])
    summary = next(ln for ln in proc.stdout.splitlines() if ln.startswith("done:"))
    device = DEVICE_RE.search(proc.stdout)[1]
    tokens_per_iter = run["batch_size"] * run["block_size"] * run["grad_accum"] * run["nproc"]
    print(f"config: {args.profile or 'custom'}: {run['n_layer']}L/{run['n_head']}H/"
          f"{run['n_embd']}D block {run['block_size']}, {run['nproc']} proc x batch "
          f"{run['batch_size']} x accum {run['grad_accum']} = {tokens_per_iter:,} tokens/iter, "
          f"compile={run['compile']}, device {device}, data {run['dataset']}")  # fmt: skip
    how = "plain loop" if args.plain else "direct" if args.direct else "through the launcher"
    print(f"template summary ({how}): {summary}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"peak RSS of the largest process (a rank): {peak:.2f} GiB")
    ms_iter = tokens_per_iter / tok_s * 1000
    print(f"steady state (median of iters {args.warmup + 1}..{args.iters}): {tok_s:,.0f} tok/s, "
          f"{ms_iter:.0f} ms/iter, {mfu_text(run, tok_s, device)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
