"""Where tiny-cpu's seed spread comes from: one in-process training run per call.

The tiny-cpu model (`lossgym.trainer.model.GPT`, 4L/4H/128D, vocab 50304) on
the embedded corpus, in one process on `--threads` cores (run two at once on a
2-core machine): AdamW (wd 0.1, betas 0.9/0.95), grad clip 1.0, linear warm-up
then cosine decay to `--min-lr-frac` x LR, as the template trains. Separate
seeds for the initial weights (`--init-seed`) and the data order
(`--data-seed`, random windows with replacement as the template draws them).
Prints one JSON line: the settings, seconds, the plain cross-entropy on the
first `--eval-tokens` val tokens (windows of the block size, as the trusted
evaluator cuts them) and a monitor curve on 4,096 val tokens every 25 steps.

    .venv/bin/python bench/profile_sweep.py --lr 8e-3 --batch 16 --block 64 \\
        --iters 250 --init-seed 1337 --data-seed 1338 [--ls 0.1]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lossgym.trainer.model import GPT, GPTConfig  # noqa: E402


def shard(path: Path) -> np.ndarray:
    n = int(np.fromfile(path, dtype=np.int32, count=256)[2])
    return np.memmap(path, dtype=np.uint16, mode="r", offset=1024, shape=(n,))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init-seed", type=int, default=1337)
    p.add_argument("--data-seed", type=int, default=1337)
    p.add_argument("--lr", type=float, default=8e-3)
    p.add_argument("--min-lr-frac", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=4, help="sequences per iteration")
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--iters", type=int, default=250)
    p.add_argument("--ls", type=float, default=0.0, help="label smoothing in training")
    p.add_argument(
        "--loss",
        choices=["ce", "softcap", "zloss"],
        default="ce",
        help="the SPEC baselines' losses: softcap 30*tanh(x/30), z-loss 1e-4*logZ^2",
    )
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-tokens", type=int, default=65536)
    p.add_argument(
        "--sampler",
        choices=["random", "stratified", "shuffled"],
        default="random",
        help="random windows; one window from each of --batch equal strata; or the "
        "windows of data seed 0 (the same tokens in every run), shuffled by the seed",
    )
    p.add_argument(
        "--ema",
        type=float,
        nargs="*",
        default=[],
        help="also score an exponential moving average of the weights at each decay",
    )
    p.add_argument("--data-dir", type=Path, default=REPO / "data" / "shakespeare")
    return p.parse_args()


def lr_at(a: argparse.Namespace, it: int) -> float:
    if it < a.warmup:
        return a.lr * (it + 1) / a.warmup
    ratio = min(1.0, (it - a.warmup) / max(1, a.iters - 1 - a.warmup))
    low = a.lr * a.min_lr_frac
    return low + 0.5 * (1 + math.cos(math.pi * ratio)) * (a.lr - low)


@torch.inference_mode()
def val_loss(model: GPT, val: np.ndarray, block: int, tokens: int) -> float:
    windows = [val[i : i + block + 1] for i in range(0, tokens - block + 1, block)]
    total, count = 0.0, 0
    for b in range(0, len(windows), 4):
        rows = torch.from_numpy(np.stack(windows[b : b + 4]).astype(np.int64))
        logits = model(rows[:, :-1])
        y = rows[:, 1:].reshape(-1)
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y, reduction="sum").item()
        count += y.numel()
    return total / count


def window_starts(a: argparse.Namespace, rng: np.random.Generator, n: int) -> np.ndarray:
    span = n - a.block - 1
    if a.sampler == "random":
        return rng.integers(0, span, size=a.batch)
    # Stratified: the corpus in --batch equal strata, one random window in each, so
    # every batch covers every part of the corpus and only the offsets depend on the seed.
    edges = np.arange(a.batch) * span / a.batch
    return (edges + rng.random(a.batch) * span / a.batch).astype(np.int64)


def training_loss(a: argparse.Namespace, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if a.loss == "softcap":
        logits = 30.0 * torch.tanh(logits / 30.0)
    loss = F.cross_entropy(logits, y, label_smoothing=a.ls)
    if a.loss == "zloss":
        loss = loss + 1e-4 * (torch.logsumexp(logits, dim=-1) ** 2).mean()
    return loss


def fixed_windows(a: argparse.Namespace, n: int) -> np.ndarray:
    """Every window a run trains on, drawn once with seed 0, in an order the data seed picks."""
    starts = np.random.default_rng(0).integers(0, n - a.block - 1, size=a.iters * a.batch)
    return np.random.default_rng(a.data_seed).permutation(starts).reshape(a.iters, a.batch)


def main() -> None:
    a = parse()
    torch.set_num_threads(a.threads)
    train, val = shard(a.data_dir / "train_000000.bin"), shard(a.data_dir / "val_000000.bin")
    torch.manual_seed(a.init_seed)
    model = GPT(
        GPTConfig(
            n_layer=a.n_layer,
            n_head=a.n_head,
            n_embd=a.n_embd,
            block_size=a.block,
            vocab_size=50304,
        )
    )
    params = list(model.parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.95),
    )  # fmt: skip
    rng = np.random.default_rng(a.data_seed)
    shuffled = fixed_windows(a, len(train)) if a.sampler == "shuffled" else None
    emas = {d: [p.detach().clone() for p in params] for d in a.ema}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16)
    start, curve = time.time(), []
    for it in range(a.iters):
        starts = shuffled[it] if shuffled is not None else window_starts(a, rng, len(train))
        windows = np.stack([train[i : i + a.block + 1] for i in starts]).astype(np.int64)
        rows = torch.from_numpy(windows)
        for group in opt.param_groups:
            group["lr"] = lr_at(a, it)
        with autocast:
            logits = model(rows[:, :-1])
        loss = training_loss(
            a, logits.reshape(-1, logits.size(-1)).float(), rows[:, 1:].reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for d, shadow in emas.items():
                torch._foreach_lerp_(shadow, [p.detach() for p in params], 1 - d)
        if (it + 1) % 25 == 0:
            curve.append(round(val_loss(model, val, a.block, 4096), 3))
    train_s = time.time() - start
    out = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
           "train_s": round(train_s, 1), "val_loss": round(val_loss(model, val, a.block,
           a.eval_tokens), 4), "curve": curve}  # fmt: skip
    for d, shadow in emas.items():
        with torch.no_grad():
            for p, s in zip(params, shadow, strict=True):
                p.copy_(s)
        out[f"val_loss_ema{d}"] = round(val_loss(model, val, a.block, a.eval_tokens), 4)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
