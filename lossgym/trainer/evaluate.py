"""Trusted evaluation of a training checkpoint.

    python -m lossgym.trainer.evaluate --checkpoint out/model.safetensors \\
        --model-config model.json --data-dir <data_dir>/<dataset> \\
        --label <label> --val-tokens N --out eval/metrics.json

Builds the pristine ``lossgym.trainer.model.GPT`` from ``model.json`` (from
the task spec, never from the checkpoint), loads the safetensors checkpoint
with exact key and shape checks, and computes the mean plain cross-entropy
over the first N predicted tokens of the val split: inputs
``val[0:N]``, targets ``val[1:N+1]``, cut into consecutive non-overlapping
windows of ``block_size`` (the last one may be shorter). Writes

    {"metrics": {"val_loss_<label>": float}, "val_tokens": N, "seconds": s,
     "checkpoint_sha256": the hash of the file it scored}

A non-finite loss (diverged weights) is written as NaN/Infinity, which
Python's json reads. Exit status, with a one-line reason on stderr:

    0  success
    1  the checkpoint is missing or rejected (the training run's fault)
    2  bad arguments, model config or val data (the operator's fault)
    3  internal error (a bug here; a traceback precedes the reason line)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from lossgym.trainer.hashing import file_sha256
from lossgym.trainer.model import GPT, CheckpointError, GPTConfig, load_checkpoint
from lossgym.trainer.shards import ShardError, list_shards, read_shard
from lossgym.trainer.wait import wait_for_job

EXIT_CHECKPOINT, EXIT_SETUP, EXIT_INTERNAL = 1, 2, 3


class EvalError(Exception):
    """A problem with the arguments, model config or data (exit status 2)."""


def load_val_tokens(data_dir: str | os.PathLike, n_tokens: int) -> np.ndarray:
    """The first ``n_tokens + 1`` tokens of the val split (shards in name order)."""
    paths = list_shards(data_dir, "val")
    if not paths:
        raise EvalError(f"no val_*.bin shards in {data_dir}")
    need, parts = n_tokens + 1, []
    for p in paths:
        toks = read_shard(p)
        parts.append(np.asarray(toks[:need], dtype=np.int64))
        need -= len(parts[-1])
        if need <= 0:
            break
    if need > 0:
        have = n_tokens + 1 - need
        raise EvalError(
            f"val split in {data_dir} has {have} tokens; "
            f"--val-tokens {n_tokens} needs {n_tokens + 1}"
        )
    return np.concatenate(parts)


@torch.no_grad()
def val_loss(
    model: GPT, tokens: np.ndarray, n_tokens: int, device: str = "cpu", batch_size: int = 8
) -> float:
    """Mean cross-entropy of ``model`` predicting ``tokens[1:n+1]`` from ``tokens[:n]``."""
    T = model.config.block_size
    n_full = n_tokens // T
    data = torch.from_numpy(tokens[: n_tokens + 1])
    if int(data.max()) >= model.config.vocab_size:
        raise EvalError(f"val tokens exceed the model's vocab_size {model.config.vocab_size}")
    use_bf16 = device.startswith("cuda")
    total = 0.0  # Python float (double) accumulates the per-batch sums
    model.eval()

    def nll_sum(x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = x.to(device), y.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        v = logits.size(-1)
        return F.cross_entropy(logits.float().view(-1, v), y.reshape(-1), reduction="sum").item()

    for b in range(0, n_full, batch_size):
        rows = range(b, min(b + batch_size, n_full))
        x = torch.stack([data[r * T : (r + 1) * T] for r in rows])
        y = torch.stack([data[r * T + 1 : (r + 1) * T + 1] for r in rows])
        total += nll_sum(x, y)
    rest = n_tokens - n_full * T
    if rest:
        s = n_full * T
        total += nll_sum(data[s : s + rest][None], data[s + 1 : s + rest + 1][None])
    return total / n_tokens


def _read_model_config(path: str) -> GPTConfig:
    try:
        return GPTConfig.from_dict(json.loads(Path(path).read_text()))
    except OSError as e:
        raise EvalError(f"cannot read model config {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise EvalError(f"bad model config {path}: {e}") from e


def _pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"--device {name} requested but CUDA is not available")
    return name


def evaluate(args: argparse.Namespace) -> dict:
    t0 = time.time()
    if args.val_tokens < 1:
        raise EvalError(f"--val-tokens must be positive, got {args.val_tokens}")
    device = _pick_device(args.device)
    if device == "cpu":
        # The evaluator runs alone after training: use every core it may use.
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        torch.set_num_threads(len(cores) if cores else os.cpu_count() or 1)
    config = _read_model_config(args.model_config)
    tokens = load_val_tokens(args.data_dir, args.val_tokens)
    model = load_checkpoint(args.checkpoint, config).to(device)
    loss = val_loss(model, tokens, args.val_tokens, device=device, batch_size=args.batch_size)
    return {
        "metrics": {f"val_loss_{args.label}": loss},
        "val_tokens": args.val_tokens,
        "seconds": round(time.time() - t0, 3),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lossgym.trainer.evaluate",
        description="Trusted validation cross-entropy of a safetensors GPT checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, help="model.safetensors written by training")
    p.add_argument("--model-config", required=True, help="model.json with GPTConfig fields")
    p.add_argument("--data-dir", required=True, help="dataset directory holding val_*.bin")
    p.add_argument("--label", required=True, help="metric key suffix: val_loss_<label>")
    p.add_argument("--val-tokens", type=int, required=True, help="number of tokens predicted")
    p.add_argument("--out", required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument(
        "--wait-inbox",
        help="start warm: import, then wait for job.json in this directory before reading "
        "the checkpoint (lossgym.sandbox.standby)",
    )
    p.add_argument("--idle-s", type=float, default=600.0, help="with --wait-inbox: give up after")
    return p


def run_trusted(
    name: str,
    compute: Callable[[], dict],
    out: str,
    checkpoint: str,
    setup_errors: tuple[type[BaseException], ...] = (EvalError, ShardError),
) -> int:
    """Run an evaluation and write its result atomically; the exit status says whose
    fault a failure is (see the module docstring), the reason is stderr's last line.
    The result records the sha256 of the checkpoint it scored."""
    try:
        torch.manual_seed(0)  # nothing random is used; fixed anyway
        digest = file_sha256(checkpoint) if os.path.isfile(checkpoint) else None
        result = compute()
        result["checkpoint_sha256"] = digest
    except CheckpointError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except setup_errors as e:
        print(f"{name}: {str(e).splitlines()[0] if str(e) else repr(e)}", file=sys.stderr)
        return EXIT_SETUP
    except Exception as e:
        traceback.print_exc()
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"{name}: internal error: {type(e).__name__}: {first}", file=sys.stderr)
        return EXIT_INTERNAL
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result) + "\n")
    os.replace(tmp, path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.wait_inbox:
        wait_for_job(args.wait_inbox, args.idle_s)
    code = run_trusted("evaluate", lambda: evaluate(args), args.out, args.checkpoint)
    if args.wait_inbox:  # the result is written: skip the interpreter's teardown of torch
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
