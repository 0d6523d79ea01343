"""Helpers shared by the trainer tests (imported by name: tests/trainer has no __init__)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "lossgym" / "trainer" / "template" / "custom_pretrain.py"

# A model small enough that a 2-process run takes a few seconds on 2 cores.
TINY_MODEL = {
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "vocab_size": 50304,
    "bias": True,
    "dropout": 0.0,
}
TINY_TRAIN = {
    **TINY_MODEL,
    "batch_size": 4,
    "gradient_accumulation_steps": 2,
    "max_iters": 4,
    "eval_interval": 2,
    "eval_iters": 2,
    "log_interval": 1,
    "warmup_iters": 1,
    "learning_rate": 3e-3,
    "min_lr": 3e-4,
}


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def make_workspace(root: Path, template_text: str | None = None) -> Path:
    """A workspace dir holding nanoGPT/custom_pretrain.py (the template or a variant)."""
    ws = root / "workspace"
    (ws / "nanoGPT").mkdir(parents=True)
    script = ws / "nanoGPT" / "custom_pretrain.py"
    if template_text is None:
        shutil.copyfile(TEMPLATE, script)
    else:
        script.write_text(template_text)
    return ws


TEARDOWN_ABORT = "terminate called without an active exception"


def run_training(
    ws: Path,
    config_path: Path,
    nproc: int | None,
    timeout: float = 120,
    module: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """Run the workspace script like the worker does (torchrun) or, with nproc None,
    as a plain single process; `module` ([name, *args]) runs the script through
    that module (`python -m name *args script`)."""
    script = "nanoGPT/custom_pretrain.py"
    target = ["-m", *module, script] if module else [script]
    if nproc is None:
        cmd = [sys.executable, *target]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc_per_node={nproc}", *target]
    env = subprocess_env(LOSSGYM_CONFIG=str(config_path))
    for _ in range(2):
        proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=timeout)
        # Rarely, torch's gloo teardown aborts a rank after all the work is done
        # ("terminate called without an active exception", exit -6); the worker
        # evaluates the checkpoint anyway (sandbox/stages.py). Here: run again.
        if not (proc.returncode and TEARDOWN_ABORT in proc.stdout + proc.stderr):
            break
    return proc


def run_evaluator(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lossgym.trainer.evaluate", *args],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


METRICS_RE = r"^TRAIN_METRICS: step=(\d+), train_loss=(\S+), val_loss=(\S+)$"


def train_metrics(stdout: str) -> list[tuple[int, float, float]]:
    """The (step, train_loss, val_loss) of every TRAIN_METRICS line."""
    import re

    return [(int(m[1]), float(m[2]), float(m[3])) for m in re.finditer(METRICS_RE, stdout, re.M)]


def reference_val_loss(model, tokens, n_tokens: int) -> float:
    """Mean next-token cross-entropy over the first n_tokens predictions, computed
    independently of the evaluator: explicit log-softmax and gather, one window at a time."""
    import numpy as np
    import torch

    T = model.config.block_size
    data = torch.from_numpy(np.asarray(tokens[: n_tokens + 1], dtype=np.int64))
    nll = []
    with torch.no_grad():
        for s in range(0, n_tokens, T):
            e = min(s + T, n_tokens)
            logits = model(data[s:e][None])[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            nll.append(-logp.gather(1, data[s + 1 : e + 1][:, None]).squeeze(1))
    return torch.cat(nll).mean().item()
