"""`lossgym export hf`: a checkpoint rewritten as a Hugging Face GPT-2 directory.

The exported weights are checked against the pristine model twice: by a GPT-2
forward pass written out here with HF's conventions (Conv1D: ``x @ W + b``,
tied ``lm_head``), which needs no ``transformers``, and, when ``transformers``
is installed, by ``GPT2LMHeadModel.from_pretrained`` itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from typer.testing import CliRunner

from lossgym.cli import app
from lossgym.trainer.export import GPT2_VOCAB, ExportError, export_run, resolve_inputs
from lossgym.trainer.model import GPT, GPTConfig, save_checkpoint

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 24, "vocab_size": 50304}


def _random_model(bias: bool) -> GPT:
    """A pristine GPT with every parameter random (biases and norms included)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, bias=bias))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or "ln_f" in name:
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
    return model.eval()


def _run_dir(tmp_path: Path, model: GPT) -> Path:
    """The layout the worker leaves: out/model.safetensors and eval/model.json."""
    run = tmp_path / "job-1" / "attempt-1" / "tiny-cpu"
    (run / "out").mkdir(parents=True)
    (run / "eval").mkdir()
    save_checkpoint(model, run / "out" / "model.safetensors")
    cfg = {**TINY, "bias": model.config.bias, "dropout": 0.0}
    (run / "eval" / "model.json").write_text(json.dumps(cfg))
    return run


def _hf_reference_logits(sd: dict[str, torch.Tensor], cfg: dict, idx: torch.Tensor):
    """GPT-2 forward as HF defines it, from the exported tensors alone."""
    n_head, eps = cfg["n_head"], cfg["layer_norm_epsilon"]
    assert cfg["activation_function"] == "gelu"

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)

    def conv1d(x, name):
        return x @ sd[f"{name}.weight"] + sd[f"{name}.bias"]

    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}"
        q, k, v = conv1d(ln(x, f"{p}.ln_1"), f"{p}.attn.c_attn").split(cfg["n_embd"], dim=2)
        q, k, v = (t.view(B, T, n_head, -1).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + conv1d(y, f"{p}.attn.c_proj")
        h = F.gelu(conv1d(ln(x, f"{p}.ln_2"), f"{p}.mlp.c_fc"))
        x = x + conv1d(h, f"{p}.mlp.c_proj")
    return ln(x, "transformer.ln_f") @ sd["transformer.wte.weight"].t()


@pytest.fixture(params=[True, False], ids=["bias", "no-bias"])
def exported(request, tmp_path):
    model = _random_model(bias=request.param)
    out = export_run(_run_dir(tmp_path, model), tmp_path / "hf")
    return model, out


def _tokens() -> torch.Tensor:
    torch.manual_seed(1)
    idx = torch.randint(0, GPT2_VOCAB, (2, TINY["block_size"]))
    idx[0, :3] = torch.tensor([0, GPT2_VOCAB - 1, 50256])
    return idx


def test_config_json(exported):
    model, out = exported
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["model_type"] == "gpt2"
    assert cfg["vocab_size"] == 50257 and cfg["lossgym"]["source_vocab_size"] == 50304
    assert (cfg["n_positions"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"]) == (24, 16, 2, 2)
    assert cfg["layer_norm_epsilon"] == 1e-5 and cfg["tie_word_embeddings"] is True
    assert cfg["activation_function"] == "gelu"  # the template's F.gelu is exact GELU


def test_weights_have_hf_names_and_conv1d_layout(exported):
    model, out = exported
    sd = load_file(out / "model.safetensors")
    assert "lm_head.weight" not in sd
    assert sd["transformer.wte.weight"].shape == (GPT2_VOCAB, 16)
    assert sd["transformer.h.1.attn.c_attn.weight"].shape == (16, 48)  # (in, out)
    assert sd["transformer.h.0.mlp.c_proj.weight"].shape == (64, 16)
    ours = model.state_dict()["transformer.h.0.mlp.c_fc.weight"]
    assert torch.equal(sd["transformer.h.0.mlp.c_fc.weight"], ours.t())
    if not model.config.bias:
        assert not sd["transformer.h.0.attn.c_attn.bias"].any()
    expected = 4 + model.config.n_layer * 12
    assert len(sd) == expected


def test_hand_written_hf_forward_matches_pristine_model(exported):
    model, out = exported
    sd = load_file(out / "model.safetensors")
    cfg = json.loads((out / "config.json").read_text())
    idx = _tokens()
    with torch.no_grad():
        want = model(idx)[..., :GPT2_VOCAB]
        got = _hf_reference_logits(sd, cfg, idx)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_transformers_loads_export(exported):
    transformers = pytest.importorskip("transformers")
    model, out = exported
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out)).eval()
    idx = _tokens()
    with torch.no_grad():
        want = model(idx)[..., :GPT2_VOCAB]
        got = hf(idx).logits
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_checkpoint_path_with_model_config(tmp_path):
    run = _run_dir(tmp_path, _random_model(bias=True))
    ckpt = run / "out" / "model.safetensors"
    assert resolve_inputs(ckpt) == (ckpt, run / "eval" / "model.json")
    loose = tmp_path / "loose.safetensors"
    loose.write_bytes(ckpt.read_bytes())
    with pytest.raises(ExportError, match="--model-config"):
        resolve_inputs(loose)
    assert resolve_inputs(loose, run / "eval" / "model.json")[0] == loose
    with pytest.raises(ExportError, match="no checkpoint"):
        resolve_inputs(tmp_path / "nowhere")


def test_cli_export(tmp_path):
    run = _run_dir(tmp_path, _random_model(bias=True))
    result = CliRunner().invoke(app, ["export", "hf", str(run), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "config.json").is_file()
    assert (tmp_path / "o" / "model.safetensors").is_file()
    bad = CliRunner().invoke(app, ["export", "hf", str(tmp_path / "x"), "--out", "o2"])
    assert bad.exit_code == 1 and "no checkpoint" in bad.output
