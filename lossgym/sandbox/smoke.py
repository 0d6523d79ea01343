"""Smoke run of the agent's compute_loss on random logits (pre-flight, SPEC §6.1).

Run as `python -m lossgym.sandbox.smoke` with a JSON request on stdin:
`{"path", "regions": [{"name", "start", "source"}]}`. It executes only the
editable regions (already checked by the static policy) in a namespace holding
torch, F, nn and math, then checks that compute_loss returns a finite scalar
with a finite gradient, with and without grad enabled. It prints one JSON
line: `{"ok": true}` or `{"ok": false, "error": "..."}`. The caller runs it in
a subprocess with a time limit, so a loop that never ends costs nothing.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from typing import Any

BATCH, TIME, VOCAB = 2, 16, 96


def _namespace() -> dict[str, Any]:
    import torch
    import torch.nn as nn
    from torch.nn import functional as F

    return {"torch": torch, "F": F, "nn": nn, "math": math, "loss_progress": 0.5}


def _run_regions(path: str, regions: list[dict[str, Any]], ns: dict[str, Any]) -> None:
    """Region code compiled at its real line numbers, so tracebacks name file lines."""
    for name in ("compute_loss", "loss_state_hook"):
        for region in regions:
            if region["name"] != name:
                continue
            source = region["source"]
            if name == "loss_state_hook":
                import textwrap

                source = textwrap.dedent(source)
                ns.update(iter_num=1, max_iters=2)
            padded = "\n" * (region["start"] - 1) + source
            exec(compile(padded, path, "exec"), ns)  # noqa: S102 - policy-checked region code


def _check_loss(ns: dict[str, Any]) -> str | None:
    import torch

    torch.manual_seed(0)
    logits = torch.randn(BATCH, TIME, VOCAB, requires_grad=True)
    # Like the training batches: every position has a real target (the loader
    # never emits -1), so a loss that gathers on targets directly still passes.
    targets = torch.randint(0, VOCAB, (BATCH, TIME))
    loss = ns["compute_loss"](logits, targets)
    if not isinstance(loss, torch.Tensor):
        return f"compute_loss returned {type(loss).__name__}; it must return a scalar tensor"
    if loss.dim() != 0:
        return f"compute_loss returned shape {tuple(loss.shape)}; it must return a scalar (0-dim)"
    if not torch.isfinite(loss):
        return f"compute_loss returned {loss.item()} on random logits; it must be finite"
    if not loss.requires_grad:
        return "compute_loss returned a value with no gradient with respect to the logits"
    loss.backward()
    if logits.grad is None or not torch.isfinite(logits.grad).all():
        return "the gradient of compute_loss with respect to the logits is not finite"
    with torch.no_grad():
        quiet = ns["compute_loss"](logits.detach(), targets)
    if not isinstance(quiet, torch.Tensor) or quiet.dim() != 0:
        return "with gradients disabled, compute_loss must still return a scalar tensor"
    return None


def _where(path: str, error: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
    at = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{at}"


def main() -> None:
    request = json.loads(sys.stdin.read())
    ns = _namespace()
    try:
        _run_regions(request["path"], request["regions"], ns)
        problem = _check_loss(ns)
    except Exception as error:  # noqa: BLE001 - any failure is the agent's to see
        problem = f"compute_loss raised {_where(request['path'], error)}"
    print(json.dumps({"ok": problem is None, "error": problem}))


if __name__ == "__main__":
    main()
