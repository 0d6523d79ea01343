"""The trusted evaluator, run as `python -m lossgym.trainer.evaluate`, against a
hand-computed reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from trainertest_helpers import TINY_MODEL, reference_val_loss, run_evaluator

from lossgym.trainer.hashing import file_sha256
from lossgym.trainer.model import GPT, CheckpointError, GPTConfig, load_checkpoint
from lossgym.trainer.shards import write_shard

CFG = {**TINY_MODEL, "n_layer": 2, "block_size": 64}
VAL_TOKENS = 1000  # 15 full windows of 64 and one of 40


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    with torch.no_grad():  # bigger weights than the init, so the loss is far from log(V)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    del state["lm_head.weight"]
    ckpt = tmp_path / "out" / "model.safetensors"
    ckpt.parent.mkdir()
    save_file(state, ckpt)
    (tmp_path / "model.json").write_text(json.dumps(CFG))
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50257, size=3000)
    write_shard(data / "val_000000.bin", tokens)
    return tmp_path, model, tokens


def _args(tmp_path, ckpt=None, **over):
    args = {
        "--checkpoint": str(ckpt or tmp_path / "out" / "model.safetensors"),
        "--model-config": str(tmp_path / "model.json"),
        "--data-dir": str(tmp_path / "data"),
        "--label": "tiny",
        "--val-tokens": str(VAL_TOKENS),
        "--out": str(tmp_path / "eval" / "metrics.json"),
        "--device": "cpu",
    }
    args.update(over)
    return [x for kv in args.items() for x in kv]


def test_matches_hand_computed_reference(setup):
    tmp_path, model, tokens = setup
    proc = run_evaluator(*_args(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(out) == {"metrics", "val_tokens", "seconds", "checkpoint_sha256"}
    assert out["checkpoint_sha256"] == file_sha256(tmp_path / "out" / "model.safetensors")
    assert out["val_tokens"] == VAL_TOKENS
    got = out["metrics"]["val_loss_tiny"]
    model.eval()
    want = reference_val_loss(model, tokens, VAL_TOKENS)
    assert got == pytest.approx(want, abs=1e-4)
    assert abs(want - math.log(50304)) > 0.05  # a real model, not a uniform one
    # deterministic: a second run gives the same number
    proc = run_evaluator(*_args(tmp_path))
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"] == {
        "val_loss_tiny": got
    }


def _bad_checkpoint(tmp_path, state) -> str:
    path = tmp_path / "bad.safetensors"
    save_file(state, path)
    return str(path)


def test_missing_key_is_rejected(setup):
    tmp_path, model, _ = setup
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    del state["transformer.ln_f.weight"]
    proc = run_evaluator(*_args(tmp_path, ckpt=_bad_checkpoint(tmp_path, state)))
    assert proc.returncode == 1
    assert "missing keys: transformer.ln_f.weight" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_wrong_shape_is_rejected(setup):
    tmp_path, model, _ = setup
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    state["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(100, 32)
    proc = run_evaluator(*_args(tmp_path, ckpt=_bad_checkpoint(tmp_path, state)))
    assert proc.returncode == 1
    assert "transformer.h.0.mlp.c_fc.weight has shape (100, 32), expected (128, 32)" in proc.stderr


def test_pickle_or_garbage_is_rejected(setup):
    tmp_path, model, _ = setup
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)  # a pickle: must never be loaded
    proc = run_evaluator(*_args(tmp_path, ckpt=path))
    assert proc.returncode == 1
    assert "not a valid safetensors file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_data_and_config(setup):
    tmp_path, _, _ = setup
    proc = run_evaluator(*_args(tmp_path, **{"--val-tokens": "5000"}))
    assert proc.returncode == 2
    assert "has 3000 tokens" in proc.stderr
    (tmp_path / "model.json").write_text(json.dumps({**CFG, "n_layers": 2}))
    proc = run_evaluator(*_args(tmp_path))
    assert proc.returncode == 2
    assert "unknown model config field(s) ['n_layers']" in proc.stderr


def test_load_checkpoint_in_process(setup):
    tmp_path, model, _ = setup
    loaded = load_checkpoint(tmp_path / "out" / "model.safetensors", GPTConfig(**CFG))
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected keys: extra.weight"):
        load_checkpoint(_bad_checkpoint(tmp_path, state), GPTConfig(**CFG))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors", GPTConfig(**CFG))
