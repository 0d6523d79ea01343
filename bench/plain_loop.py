"""A plain nanoGPT-style training loop: the yardstick for the template's throughput.

The same model (`lossgym.trainer.model.GPT`), optimizer groups, batch, dtype
and DDP as the template, with none of LossGym's parts: no launcher, no
regions' namespace, no detached-logits bridge, no monitor loss. Reads the
template's JSON config from $LOSSGYM_CONFIG and prints progress lines in the
template's format, so `bench/train_throughput.py --plain` parses both alike:

    LOSSGYM_CONFIG=config.json torchrun --standalone --nproc_per_node=2 bench/plain_loop.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lossgym.trainer.model import GPT, GPTConfig  # noqa: E402

cfg = json.loads(Path(os.environ["LOSSGYM_CONFIG"]).read_text())
ddp = "RANK" in os.environ
if ddp:
    dist.init_process_group("gloo")
rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world))
cpu_bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text()
use_bf16 = cfg.get("dtype", "float32") == "bfloat16" and cpu_bf16
autocast = torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else nullcontext()

T, B = cfg["block_size"], cfg["batch_size"]
header = np.fromfile(Path(cfg["data_dir"]) / "train_000000.bin", dtype=np.int32, count=256)
tokens = np.memmap(Path(cfg["data_dir"]) / "train_000000.bin", dtype=np.uint16, mode="r",
                   offset=1024, shape=(int(header[2]),))  # fmt: skip
rng = np.random.default_rng(1337)
torch.manual_seed(1337)
model = GPT(GPTConfig(**{k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "block_size",
                                              "vocab_size", "bias")}))  # fmt: skip
params = list(model.parameters())
optimizer = torch.optim.AdamW(
    [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
     {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
    lr=cfg.get("learning_rate", 6e-4), betas=(0.9, 0.95),
)  # fmt: skip
if cfg.get("compile"):
    model = torch.compile(model)
if ddp:
    model = DDP(model)
tokens_per_iter = B * T * cfg["gradient_accumulation_steps"] * world
if rank == 0:
    print(f"world size {world}, device cpu, tokens per iteration {tokens_per_iter:,}", flush=True)
t0 = t_last = time.time()
for it in range(1, cfg["max_iters"] + 1):
    for _ in range(cfg["gradient_accumulation_steps"]):
        starts = rng.integers(0, len(tokens) - T - 1, size=B * world)[rank::world]
        rows = torch.from_numpy(np.stack([tokens[s : s + T + 1] for s in starts]).astype(np.int64))
        with autocast:
            logits = model(rows[:, :-1])
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), rows[:, 1:].reshape(-1))
        (loss / cfg["gradient_accumulation_steps"]).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if rank == 0:
        dt, t_last = time.time() - t_last, time.time()
        print(f"iter {it}: loss {loss.item():.4f}, lr 0.00e+00, {dt * 1000:.0f}ms/iter, "
              f"{tokens_per_iter / dt:.0f} tok/s", flush=True)  # fmt: skip
if rank == 0:
    elapsed = time.time() - t0
    print(
        f"done: {cfg['max_iters']} iters in {elapsed:.1f}s (plain loop), "
        f"{tokens_per_iter * cfg['max_iters'] / elapsed:.0f} tok/s",
        flush=True,
    )
if ddp:
    dist.destroy_process_group()
