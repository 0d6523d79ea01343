"""Training throughput of the template (tokens/s, and MFU on known GPUs).

Runs lossgym/trainer/template/custom_pretrain.py under torchrun with a
profile-like config and reports the steady-state rate: the median over
per-iteration progress lines after a few warm-up iterations (so that
torch.compile and allocator warm-up do not count).

    python bench/train_throughput.py                       # tiny-cpu shape, 2 procs
    python bench/train_throughput.py --n-layer 12 --n-head 12 --n-embd 768 \\
        --block-size 1024 --batch-size 12 --grad-accum 5 --nproc 1 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "lossgym" / "trainer" / "template" / "custom_pretrain.py"
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
ITER_RE = re.compile(r"^iter (\d+): loss \S+, lr \S+, (\d+)ms/iter, (\d+) tok/s$", re.M)


def flops_per_token(args) -> float:
    """6 FLOPs per parameter (without position embeddings) plus attention."""
    import torch

    sys.path.insert(0, str(REPO))
    from lossgym.trainer.model import GPT, GPTConfig

    cfg = GPTConfig(block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head,
                    n_embd=args.n_embd)  # fmt: skip
    with torch.device("meta"):
        model = GPT(cfg)
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * args.n_layer * args.n_embd * args.block_size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4, help="sequences per micro-step per process")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-steps per iteration")
    p.add_argument("--nproc", type=int, default=2, help="DDP processes (torchrun)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="iterations left out of the median")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=os.environ.get("LOSSGYM_DATA_DIR", str(REPO / "data")))
    p.add_argument("--dataset", default="shakespeare")
    args = p.parse_args()
    if args.iters <= args.warmup:
        p.error("--iters must exceed --warmup")

    with tempfile.TemporaryDirectory(prefix="lossgym-bench-") as tmp:
        config = {
            "data_dir": str(Path(args.data_dir) / args.dataset),
            "out_dir": str(Path(tmp) / "out"),
            "n_layer": args.n_layer,
            "n_head": args.n_head,
            "n_embd": args.n_embd,
            "block_size": args.block_size,
            "batch_size": args.batch_size,
            "gradient_accumulation_steps": args.grad_accum,
            "max_iters": args.iters,
            "warmup_iters": 2,
            "eval_interval": args.iters,
            "eval_iters": 1,
            "log_interval": 1,
            "compile": args.compile,
            "device": args.device,
        }
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps(config))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={args.nproc}", str(TEMPLATE)]  # fmt: skip
        env = {**os.environ, "LOSSGYM_CONFIG": str(cfg_path), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
        return proc.returncode

    rates = [(int(m[1]), int(m[3])) for m in ITER_RE.finditer(proc.stdout)]
    steady = [r for it, r in rates if it > args.warmup]
    tok_s = statistics.median(steady)
    summary = next(ln for ln in proc.stdout.splitlines() if ln.startswith("done:"))
    tokens_per_iter = args.batch_size * args.block_size * args.grad_accum * args.nproc
    print(f"config: {args.n_layer}L/{args.n_head}H/{args.n_embd}D block {args.block_size}, "
          f"{args.nproc} proc x batch {args.batch_size} x accum {args.grad_accum} "
          f"= {tokens_per_iter:,} tokens/iter, compile={args.compile}")  # fmt: skip
    print(f"template summary: {summary}")
    line = f"steady state (median of iters {args.warmup + 1}..{args.iters}): {tok_s:,.0f} tok/s"
    line += f", {tokens_per_iter / tok_s * 1000:.0f} ms/iter"
    if "MFU unknown" not in summary:
        import torch

        name = torch.cuda.get_device_name(0)
        peak = next(v for k, v in PEAK_BF16.items() if k in name)
        mfu = flops_per_token(args) * tok_s / args.nproc / peak
        line += f", MFU {100 * mfu:.1f}% of {name} bf16 peak"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
