"""Smoke run of the agent's compute_loss on random logits (pre-flight, SPEC §6.1).

    python -I -m lossgym.trainer.smoke REQUEST.json
    python -I -m lossgym.trainer.smoke --wait-inbox DIR   (warm: the request is DIR/job.json)

Runs inside the configured sandbox, never in the API process. The request is
`{"path", "script", "regions": [{"name", "start", "end"}], "nonce"}`. The
regions are loaded exactly as the training launcher loads them (a namespace
of their own, `agent_code.py`); the hook runs once, then compute_loss must
return a finite scalar with a finite gradient, and a scalar with gradients
disabled too. The verdict is the last line, `LOSSGYM_SMOKE <nonce> {"ok",
"error"}`: the nonce is not in the agent's namespace, so the agent's code
cannot print a verdict of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from lossgym.trainer.agent_code import (
    AgentCodeError,
    AgentLoss,
    LossContractError,
    load_regions,
    regions_in,
)
from lossgym.trainer.wait import wait_for_job

BATCH, TIME, VOCAB = 2, 16, 96
VERDICT = "LOSSGYM_SMOKE"


def _check_loss(loss: AgentLoss) -> str | None:
    import torch

    torch.manual_seed(0)
    logits = torch.randn(BATCH, TIME, VOCAB, requires_grad=True)
    # Like the training batches: every position has a real target (the loader
    # never emits -1), so a loss that gathers on targets directly still passes.
    targets = torch.randint(0, VOCAB, (BATCH, TIME))
    value = loss(logits, targets)
    if not torch.isfinite(value):
        return f"compute_loss returned {value.item()} on random logits; it must be finite"
    value.backward()
    if logits.grad is None:
        return "compute_loss returned a value with no gradient with respect to the logits"
    if not torch.isfinite(logits.grad).all():
        return "the gradient of compute_loss with respect to the logits is not finite"
    with torch.no_grad():
        loss(logits.detach(), targets)
    return None


def check(request: dict[str, Any]) -> str | None:
    """The problem with the request's regions, or None when compute_loss is sound."""
    path, script = request["path"], request["script"]
    try:  # region code raises AgentCodeError, a broken contract LossContractError
        loss, hook, _ = load_regions(path, script, regions_in(script, request["regions"]))
        hook(iter_num=1, max_iters=2)
        return "there is no compute_loss region" if loss is None else _check_loss(loss)
    except (AgentCodeError, LossContractError) as error:
        return str(error)
    except Exception as error:  # noqa: BLE001 - anything else the agent's code set off
        return f"compute_loss failed: {type(error).__name__}: {error}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lossgym.trainer.smoke")
    parser.add_argument("request", nargs="?", help="the request's JSON file")
    parser.add_argument("--wait-inbox", help="start warm: wait for job.json (the request) here")
    parser.add_argument("--idle-s", type=float, default=600.0, help="with --wait-inbox: give up")
    args = parser.parse_args(argv)
    if args.wait_inbox:
        import torch  # noqa: F401 - imported before the request arrives: that is the point

        request = wait_for_job(args.wait_inbox, args.idle_s)
    elif args.request:
        request = json.loads(Path(args.request).read_text(encoding="utf-8"))
    else:
        parser.error("give a request file or --wait-inbox")
    problem = check(request)
    print(f"{VERDICT} {request['nonce']} {json.dumps({'ok': problem is None, 'error': problem})}")
    if args.wait_inbox:  # the verdict is out: skip the interpreter's teardown of torch
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
