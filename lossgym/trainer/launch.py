"""Run the agent's training script with its regions in a namespace of their own.

    torchrun ... --no-python python -I -u -m lossgym.trainer.launch \\
        --script nanoGPT/custom_pretrain.py \\
        --regions '[{"name": "compute_loss", "start": 230, "end": 232}, ...]'
    torchrun ... --no-python python -I -u -m lossgym.trainer.launch --wait-inbox DIR

The second form starts warm (lossgym.sandbox.standby): each rank imports
torch, then waits for DIR/job.json, `{"script": ..., "regions": [...]}`.

The worker passes the regions' spans from the session's stored state (trusted),
not from the file. The script runs as `__main__` from its read-only lines only:
every region line is blank, the hook's first line becomes a call to the hook,
and `compute_loss` is the trusted `AgentLoss` (`agent_code.py`), which the
training loop calls on the model's logits, so line numbers in tracebacks are
the file's own. `python -I` keeps the workspace directory off `sys.path`: a
file the agent created there cannot stand in for a module the script imports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

from lossgym.trainer.agent_code import HOOK_CALL, blank_regions, load_regions, regions_in
from lossgym.trainer.wait import wait_for_job


def run_script(script_path: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the script at `script_path` as `__main__`, its regions `spans` loaded apart;
    returns the script's globals once it is done (`batch_dump.py` replays from them)."""
    path = str(Path(script_path).resolve())
    script = Path(path).read_text(encoding="utf-8")
    regions = regions_in(script, spans)
    loss, hook, _ = load_regions(script_path, script, regions)
    code = compile(blank_regions(script, regions), script_path, "exec", dont_inherit=True)
    main_module = types.ModuleType("__main__")
    main_module.__dict__.update(__file__=path, __builtins__=__builtins__)
    main_module.__dict__[HOOK_CALL] = hook
    if loss is not None:
        main_module.__dict__["compute_loss"] = loss
    sys.modules["__main__"] = main_module
    sys.argv = [path]
    exec(code, main_module.__dict__)  # noqa: S102 - the task's own read-only lines
    return main_module.__dict__


def warm_up() -> None:
    """Import what the training script imports, before its job is known.

    Also what torch imports lazily on first use: building the first optimizer
    imports torch._dynamo (over a second on 2 cores).
    """
    import numpy  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch
    import torch.distributed  # noqa: F401
    import torch.nn.functional  # noqa: F401
    import torch.nn.parallel  # noqa: F401

    weight = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    weight.sum().backward()
    optimizer.step()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", help="the workspace's training script")
    parser.add_argument("--regions", help="JSON list of {name, start, end}")
    parser.add_argument(
        "--wait-inbox",
        help="start warm: import torch, then wait for job.json ({script, regions}) here",
    )
    parser.add_argument("--idle-s", type=float, default=600.0, help="with --wait-inbox: give up")
    args = parser.parse_args(argv)
    if args.wait_inbox:
        warm_up()
        job = wait_for_job(args.wait_inbox, args.idle_s)
        run_script(job["script"], job["regions"])
        # Done: skip the interpreter's teardown of torch (over a second per rank);
        # the script has closed its files, the checkpoint is renamed into place.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    elif args.script and args.regions:
        run_script(args.script, json.loads(args.regions))
    else:
        parser.error("give --script and --regions, or --wait-inbox")


if __name__ == "__main__":
    main()
