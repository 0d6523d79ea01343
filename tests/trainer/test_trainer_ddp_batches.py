"""DDP ranks draw disjoint training windows, in an order fixed by the seed.

Runs the real template under torchrun (2 gloo processes) through
``lossgym.trainer.batch_dump``, which makes each rank list the (shard, offset)
windows that the template's ``get_train_batch`` drew over the run (a trusted
helper: the agent's file has no debug knob for it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainertest_helpers import TINY_TRAIN, make_workspace, run_training

ITERS = 3


def _run(tmp: Path, data_dir: Path, seed: int) -> list[dict]:
    ws = make_workspace(tmp)
    dump = tmp / "batches"
    cfg = {
        **TINY_TRAIN, "max_iters": ITERS, "eval_interval": ITERS, "seed": seed,
        "data_dir": str(data_dir), "out_dir": str(tmp / "out"),
    }  # fmt: skip
    (tmp / "config.json").write_text(json.dumps(cfg))
    module = ["lossgym.trainer.batch_dump", "--out", str(dump)]
    proc = run_training(ws, tmp / "config.json", nproc=2, module=module)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(Path(f"{dump}.rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory, train_view):
    runs = {}
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        runs[name] = _run(tmp_path_factory.mktemp(f"batches-{name}"), train_view, seed)
    return runs


def _windows(dump: dict) -> list[tuple[int, int]]:
    return [tuple(w) for batch in dump["batches"] for w in batch]


def test_each_rank_dumps_every_micro_batch(dumps):
    for rank, dump in enumerate(dumps["a"]):
        assert (dump["rank"], dump["world_size"], dump["seed"]) == (rank, 2, 11)
        steps = ITERS * TINY_TRAIN["gradient_accumulation_steps"]
        assert len(dump["batches"]) == steps
        assert all(len(b) == TINY_TRAIN["batch_size"] for b in dump["batches"])


def test_ranks_see_disjoint_windows(dumps):
    rank0, rank1 = dumps["a"]
    for b0, b1 in zip(rank0["batches"], rank1["batches"], strict=True):
        assert not {tuple(w) for w in b0} & {tuple(w) for w in b1}
    assert not set(_windows(rank0)) & set(_windows(rank1))  # over the whole run too


def test_same_seed_same_order_other_seed_differs(dumps):
    assert [d["batches"] for d in dumps["a"]] == [d["batches"] for d in dumps["b"]]
    assert [d["batches"] for d in dumps["a"]] != [d["batches"] for d in dumps["c"]]
