"""The training windows each rank of a run draws: a test and debugging aid, kept out of the
agent's file.

    torchrun --standalone --nproc_per_node=2 -m lossgym.trainer.batch_dump \\
        --out PREFIX nanoGPT/custom_pretrain.py

Runs the training script as `__main__` through the launcher (without regions
unless `--regions` names them), then replays its data order with the script's
own `get_train_batch`: a fresh generator seeded with the run's `seed`, and
`make_batch` swapped for one that returns each window's (shard, offset) instead
of tensors. Each rank writes `PREFIX.rank<N>.json`: its rank, the world size,
the seed and one list of [shard, offset] windows per micro-step.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lossgym.trainer.launch import run_script


def replay(namespace: dict[str, Any]) -> dict[str, Any]:
    """The windows `get_train_batch` drew over the run whose globals are `namespace`."""
    import numpy as np

    namespace["data_rng"] = np.random.default_rng(namespace["seed"])
    namespace["make_batch"] = lambda shards, starts: [[int(s), int(i)] for s, i in starts]
    steps = namespace["max_iters"] * namespace["gradient_accumulation_steps"]
    batches = [namespace["get_train_batch"]() for _ in range(steps)]
    keys = ("rank", "world_size", "seed")
    return {**{k: namespace[k] for k in keys}, "batches": batches}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="write PREFIX.rank<N>.json")
    parser.add_argument("--regions", default="[]", help="JSON list of {name, start, end}")
    parser.add_argument("script", help="the training script")
    args = parser.parse_args(argv)
    dump = replay(run_script(args.script, json.loads(args.regions)))
    with open(f"{args.out}.rank{dump['rank']}.json", "w", encoding="utf-8") as f:
        json.dump(dump, f)


if __name__ == "__main__":
    main()
