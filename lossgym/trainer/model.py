"""The pristine GPT-2 model used by the trusted evaluator.

Parameter names and shapes match the model in the training template
(``template/custom_pretrain.py``), so a checkpoint the agent's script writes
loads here with exact checks. The agent cannot change this file: whatever the
agent's script does during training, evaluation runs this forward pass and
plain cross-entropy.

Checkpoints are safetensors files (never pickles) holding the state dict
without ``lm_head.weight``, which is tied to ``transformer.wte.weight``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

TIED_KEY = "lm_head.weight"


class CheckpointError(ValueError):
    """A checkpoint does not fit the model (one-line, human-readable message)."""


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        """Build from a dict, rejecting unknown fields and wrong types."""
        if not isinstance(d, dict):
            raise ValueError(f"model config must be a JSON object, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"unknown model config field(s) {unknown}; known: {sorted(fields)}")
        kwargs = {}
        for k, v in d.items():
            want = type(getattr(cls(), k))
            ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v, ok = float(v), True
            if not ok:
                raise ValueError(f"model config field {k!r} must be {want.__name__}, got {v!r}")
            kwargs[k] = v
        cfg = cls(**kwargs)
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head})")
        return cfg


class LayerNorm(nn.Module):
    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2 (eval-only use here: no dropout, no loss; returns logits)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        # Same initialisation as the template, so tests can build random models.
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids ``idx`` (B, T)."""
        seq_len = idx.size(1)
        if seq_len > self.config.block_size:
            raise ValueError(
                f"sequence length {seq_len} exceeds block_size {self.config.block_size}"
            )
        pos = torch.arange(seq_len, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def checkpoint_keys(model: GPT) -> dict[str, tuple[int, ...]]:
    """The keys and shapes a checkpoint for ``model`` must hold."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k != TIED_KEY}


def save_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` per the training-stage contract (what the template does)."""
    from safetensors.torch import save_file

    sd = {
        k: v.detach().to("cpu", torch.float32).contiguous()
        for k, v in model.state_dict().items()
        if k != TIED_KEY
    }
    save_file(sd, str(path))


def _fmt_keys(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:4])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")


def load_checkpoint(path: str | os.PathLike, config: GPTConfig) -> GPT:
    """Build the pristine GPT for ``config`` and load a safetensors checkpoint.

    The key set must be exactly the model's state-dict keys minus
    ``lm_head.weight``, every shape must match, and every tensor must be
    floating point. Non-finite values are loaded as they are (evaluation
    then reports a non-finite loss). Raises ``CheckpointError``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        sd = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is not a valid safetensors file: {msg}") from e

    model = GPT(config)
    expected = checkpoint_keys(model)
    missing, unexpected = set(expected) - set(sd), set(sd) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt_keys(unexpected)}")
        raise CheckpointError(f"checkpoint {path} does not match the model: " + "; ".join(parts))
    for k, shape in expected.items():
        t = sd[k]
        if tuple(t.shape) != shape:
            raise CheckpointError(
                f"checkpoint {path}: {k} has shape {tuple(t.shape)}, expected {shape}"
            )
        if not t.is_floating_point():
            raise CheckpointError(f"checkpoint {path}: {k} has dtype {t.dtype}, expected float")
        sd[k] = t.to(torch.float32)
    model.load_state_dict(sd, strict=False)  # lm_head.weight is tied, not stored
    model.lm_head.weight = model.transformer.wte.weight  # re-tie explicitly
    model.eval()
    return model
