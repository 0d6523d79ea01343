"""Custom GPT-2 pretraining script (nanoGPT style) for LossGym.

Run:  torchrun --standalone --nproc_per_node=N nanoGPT/custom_pretrain.py
      (plain `python nanoGPT/custom_pretrain.py` runs on one process)

Top to bottom, as nanoGPT's train.py: configuration, the model, the loss,
devices, data, then the training loop, which calls compute_loss(logits, targets)
on the model's output for every micro-batch. Settings are the module-level
globals below; a JSON file named by the environment variable LOSSGYM_CONFIG
overrides them. Data: llm.c token shards (train_*.bin, monitor_*.bin) in
data_dir. Output: out_dir/model.safetensors. A separate, trusted evaluator
computes the official validation loss from it afterwards, with plain
cross-entropy.

Only the lines between a "BEGIN EDITABLE REGION <name>" comment line and its
"END EDITABLE REGION <name>" line can be edited; the marker lines themselves
and every other line are read-only.
"""

import glob
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors.torch import save_file
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

# ── Configuration ──────────────────────────────────────────────────────────────
# I/O
out_dir = "out"  # where model.safetensors goes; the only directory the sandbox may write
data_dir = "data/shakespeare"  # holds train_*.bin and monitor_*.bin (llm.c shards)
eval_interval = 250  # iterations between TRAIN_METRICS lines (also printed at the last step)
eval_iters = 20  # fixed monitor batches per TRAIN_METRICS line: more = less noisy, slower
log_interval = 10  # iterations between progress lines
seed = 1337  # seeds data order, dropout and (unless init_seed is set) init: same seed, same run
init_seed = -1  # seeds the initial weights; -1: seed. A profile that fixes it starts all
                # runs from the same weights: they differ in data order only (less noise)
# model (GPT-2 small by default)
n_layer = 12  # transformer blocks
n_head = 12  # attention heads per block; must divide n_embd
n_embd = 768  # residual stream width
block_size = 1024  # context length in tokens
vocab_size = 50304  # GPT-2's 50257 padded to a multiple of 64: faster matmuls
bias = True  # biases in Linear and LayerNorm layers, as GPT-2
dropout = 0.0  # 0 for pretraining: with single-pass data there is little to regularise
# batch: tokens per iteration = batch_size * block_size * gradient_accumulation_steps * world
batch_size = 12  # sequences per micro-step on each process
gradient_accumulation_steps = 5  # micro-steps per iteration on each process
# AdamW and learning-rate schedule
max_iters = 5000  # optimizer steps in the whole run
learning_rate = 6e-4  # peak learning rate, reached at the end of warmup
min_lr = 6e-5  # learning rate at the last iteration (cosine decay ends there)
warmup_iters = 200  # linear warmup: early steps with large LR are unstable
weight_decay = 0.1  # applied to matrices only, not to biases, norms
beta1 = 0.9  # AdamW first-moment decay
beta2 = 0.95  # AdamW second-moment decay; 0.95 is steadier than 0.999 for LMs
grad_clip = 1.0  # clip the global gradient norm to this; 0 disables
# system
device = "auto"  # "auto" (cuda when available), "cuda" or "cpu"
dtype = "bfloat16"  # autocast dtype ("bfloat16" or "float32"); CPUs without bf16 units run fp32
compile = False  # torch.compile the model: faster on GPU after a slow first step

# ── Config overrides (JSON file named by $LOSSGYM_CONFIG) ──────────────────────
# Only the globals above may be set, with their own type, so that a typo in a
# config fails loudly instead of silently training the default.
config_keys = [k for k, v in globals().items()
               if not k.startswith("_") and isinstance(v, (bool, int, float, str))]
_config_path = os.environ.get("LOSSGYM_CONFIG")
if _config_path:
    with open(_config_path) as f:
        _overrides = json.load(f)
    if not isinstance(_overrides, dict):
        sys.exit(f"config error: {_config_path} must hold a JSON object")
    for _key, _value in _overrides.items():
        if _key not in config_keys:
            sys.exit(f"config error: unknown key {_key!r} in {_config_path}; "
                     f"known keys: {', '.join(config_keys)}")
        _want = type(globals()[_key])
        if _want is float and type(_value) is int:
            _value = float(_value)  # JSON writes 1.0 as 1 sometimes; accept it
        if type(_value) is not _want:
            sys.exit(f"config error: {_key} must be {_want.__name__}, "
                     f"got {type(_value).__name__} {_value!r} in {_config_path}")
        globals()[_key] = _value
config = {k: globals()[k] for k in config_keys}

# ── Model ──────────────────────────────────────────────────────────────────────
class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # Fused attention (flash attention on GPU); is_causal masks the future.
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output projection reuses the token embedding.
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2 scales residual projections by 1/sqrt(2 * n_layer) so the
        # residual stream does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        """Parameters excluding position embeddings (counted as in GPT-2 papers)."""
        return sum(p.numel() for p in self.parameters()) - self.transformer.wpe.weight.numel()

    def forward(self, idx):
        """Logits (B, T, V) for token indices idx (B, T). The training loop turns
        them into the training loss with compute_loss; evaluation uses plain
        cross-entropy on them."""
        pos = torch.arange(idx.size(1), dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # Decay matrices (weights of Linear, embeddings); not biases or norm gains.
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        # The fused CUDA kernel updates all parameters in one launch.
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas,
                                 fused=(device_type == "cuda"))


# ── Loss ───────────────────────────────────────────────────────────────────────
# Loss state: module-level names that compute_loss may read. The loss-state
# hook in the training loop sets them once per iteration.
loss_progress = 0.0  # fraction of training done, set by the loss-state hook


# compute_loss is the training objective: the training loop calls it on the
# model's logits for every micro-batch and follows its gradient. The run is
# judged by plain cross-entropy on held-out data, whatever this returns.
# ── BEGIN EDITABLE REGION compute_loss ──
def compute_loss(logits, targets):
    """Standard cross-entropy. logits: (B, T, V); targets: (B, T), -1 = ignore."""
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
# ── END EDITABLE REGION compute_loss ──


# ── Devices and processes ──────────────────────────────────────────────────────
ddp = int(os.environ.get("RANK", -1)) != -1  # set by torchrun
if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
device_type = "cuda" if device.startswith("cuda") else "cpu"
if ddp:
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    if device_type == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
else:
    rank, local_rank, world_size = 0, 0, 1
master = rank == 0  # only rank 0 prints and writes the checkpoint
if device_type == "cpu":  # share the cores between the processes on this machine
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, _cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
else:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
if dtype not in ("bfloat16", "float32"):
    sys.exit(f"config error: dtype must be 'bfloat16' or 'float32', got {dtype!r}")


def cpu_has_bf16():
    """bf16 matmuls pay off on a CPU only with bf16 instructions (AVX512-BF16 or AMX);
    elsewhere they are emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


use_bf16 = dtype == "bfloat16" and (device_type == "cuda" or cpu_has_bf16())
autocast = torch.autocast(device_type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
tokens_per_iter = batch_size * block_size * gradient_accumulation_steps * world_size
if master:
    os.makedirs(out_dir, exist_ok=True)
    print(f"config: {json.dumps(config)}")
    print(f"world size {world_size}, device {device}, tokens per iteration {tokens_per_iter:,}, "
          f"autocast {'bfloat16' if use_bf16 else 'off (float32)'}")

# ── Data ───────────────────────────────────────────────────────────────────────
# Only the train and monitor splits are read here; the validation split is
# reserved for the trusted evaluator.
def load_shard(path):
    """Memory-map an llm.c shard: 256 int32 header (magic, version, n_tokens), uint16 tokens."""
    header = np.fromfile(path, dtype=np.int32, count=256)
    if len(header) < 256 or header[0] != 20240520 or header[1] != 1:
        sys.exit(f"data error: {path} is not an llm.c token shard (bad header)")
    n_tokens = int(header[2])
    if os.path.getsize(path) != 256 * 4 + 2 * n_tokens:
        sys.exit(f"data error: {path} is truncated (header says {n_tokens} tokens)")
    return np.memmap(path, dtype=np.uint16, mode="r", offset=256 * 4, shape=(n_tokens,))


def load_split(split):
    paths = sorted(glob.glob(os.path.join(data_dir, f"{split}_*.bin")))
    if not paths:
        sys.exit(f"data error: no {split}_*.bin shards in {data_dir}")
    return [load_shard(p) for p in paths]


train_shards, monitor_shards = load_split("train"), load_split("monitor")
# A training window is block_size + 1 consecutive tokens of one shard; windows
# are numbered across shards, shard s holding numbers train_offsets[s] onwards.
_sizes = np.array([max(0, len(s) - block_size) for s in train_shards])  # valid starts
train_offsets = np.concatenate([[0], np.cumsum(_sizes)[:-1]])
train_windows = int(_sizes.sum())
# The monitor loss reads the same eval_iters batches every time, so that its
# numbers are comparable across steps and runs.
_monitor = [(s, i) for s, m in enumerate(monitor_shards)
            for i in range(0, len(m) - block_size, block_size)]  # non-overlapping windows
if len(_monitor) < eval_iters * batch_size or train_windows == 0:
    sys.exit(f"data error: too few tokens in {data_dir} for block_size {block_size}")
monitor_starts = [_monitor[b * batch_size:(b + 1) * batch_size] for b in range(eval_iters)]
data_rng = np.random.default_rng(seed)  # the training data order: same seed, same order


def make_batch(shards, starts):
    """Stack windows of block_size + 1 tokens into inputs x and next-token targets y."""
    rows = np.stack([shards[s][i:i + block_size + 1] for s, i in starts]).astype(np.int64)
    x, y = (torch.from_numpy(np.ascontiguousarray(r)) for r in (rows[:, :-1], rows[:, 1:]))
    if device_type == "cuda":  # pinned memory makes the copy asynchronous
        x, y = x.pin_memory(), y.pin_memory()
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def get_train_batch():
    """A random training batch. Every rank draws the same global sample from a
    generator seeded with `seed`, then keeps its own strided share, so ranks
    never see the same windows in a step and a run is repeatable."""
    n = data_rng.integers(0, train_windows, size=batch_size * world_size)[rank::world_size]
    shard = np.searchsorted(train_offsets, n, side="right") - 1
    return make_batch(train_shards, list(zip(shard, n - train_offsets[shard])))


# ── Model and optimizer ────────────────────────────────────────────────────────
torch.manual_seed(seed if init_seed < 0 else init_seed)  # identical initial weights on every rank
model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer,
                      n_head=n_head, n_embd=n_embd, dropout=dropout, bias=bias)).to(device)
torch.manual_seed(seed + rank)  # per-rank dropout masks
raw_model = model  # the plain module: evaluation and the checkpoint use it
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
if compile:
    # Only the model is compiled; compute_loss runs eagerly after it, so the
    # loss-state names it reads may change every iteration without a recompile.
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None)
if master:
    print(f"model: {raw_model.num_params() / 1e6:.2f}M parameters")

# ── Monitor loss and learning-rate schedule ────────────────────────────────────
@torch.no_grad()
def monitor_loss():
    """Mean plain cross-entropy on eval_iters fixed monitor batches (split across ranks).
    Deliberately not compute_loss: this number must not depend on the loss being studied."""
    raw_model.eval()
    total = torch.zeros(2, device=device, dtype=torch.float64)
    for b in range(rank, eval_iters, world_size):
        x, y = make_batch(monitor_shards, monitor_starts[b])
        with autocast:
            logits = raw_model(x)
        total[0] += F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                    reduction="sum")
        total[1] += y.numel()
    if ddp:
        dist.all_reduce(total)
    raw_model.train()
    return (total[0] / total[1]).item()


def get_lr(it):
    """Linear warmup, then cosine decay reaching min_lr exactly at the last iteration."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / warmup_iters
    ratio = min(1.0, (it - warmup_iters) / max(1, max_iters - 1 - warmup_iters))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


# ── Training loop ──────────────────────────────────────────────────────────────
train_loss_sum, train_loss_count = torch.zeros((), device=device), 0
t_start = t_log = time.time()
log_step, eval_seconds = 0, 0.0
for iter_num in range(max_iters):
    # The loss-state hook: runs once per iteration, before the forward pass, and
    # may only set module-level loss_* names that compute_loss reads.
    # ── BEGIN EDITABLE REGION loss_state_hook ──
    loss_progress = iter_num / max_iters
    # Set other module-level names read by compute_loss here, e.g.
    # loss_temperature = 1.0 - 0.5 * loss_progress
    # ── END EDITABLE REGION loss_state_hook ──
    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group["lr"] = lr

    for micro_step in range(gradient_accumulation_steps):
        x, y = get_train_batch()
        # Gradients are all-reduced only on the last micro-step (no_sync before).
        last = micro_step == gradient_accumulation_steps - 1
        with model.no_sync() if ddp and not last else nullcontext():
            with autocast:
                logits = model(x)  # (B, T, V)
                loss = compute_loss(logits, y)  # the objective: training follows its gradient
            (loss / gradient_accumulation_steps).backward()
        train_loss_sum += loss.detach() / gradient_accumulation_steps
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    train_loss_count += 1

    step = iter_num + 1
    if master and (step % log_interval == 0 or step == max_iters):
        lossf = loss.item()  # the .item() syncs with the GPU: keep it off the hot path
        dt = (time.time() - t_log) / (step - log_step)
        t_log, log_step = time.time(), step
        print(f"iter {step}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000:.0f}ms/iter, "
              f"{tokens_per_iter / dt:.0f} tok/s", flush=True)
    if step % eval_interval == 0 or step == max_iters:
        t_eval = time.time()
        val_loss = monitor_loss()  # every rank takes part
        train_loss = (train_loss_sum / train_loss_count).item()
        train_loss_sum.zero_()
        train_loss_count = 0
        if master:
            print(f"TRAIN_METRICS: step={step}, train_loss={train_loss:.4f}, "
                  f"val_loss={val_loss:.4f}", flush=True)
        t_log, log_step = time.time(), step  # keep evaluation time out of ms/iter
        eval_seconds += t_log - t_eval

# ── Summary and checkpoint ─────────────────────────────────────────────────────
elapsed = time.time() - t_start
if master:
    tok_s = tokens_per_iter * max_iters / (elapsed - eval_seconds)  # training only
    memory = ""
    if device_type == "cuda":
        memory = f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
    print(f"done: {max_iters} iters in {elapsed:.1f}s ({eval_seconds:.1f}s monitor eval), "
          f"{tok_s:.0f} tok/s{memory}")
    # The checkpoint contract: fp32 state dict without the tied lm_head.weight,
    # written under a temporary name and renamed so it is never seen half-written.
    state = {k: v.detach().to("cpu", torch.float32).contiguous()
             for k, v in raw_model.state_dict().items() if k != "lm_head.weight"}
    ckpt = os.path.join(out_dir, "model.safetensors")
    save_file(state, ckpt + ".tmp")
    os.replace(ckpt + ".tmp", ckpt)
    print(f"saved {ckpt}")
if ddp:
    dist.barrier()
    dist.destroy_process_group()
