"""Export a LossGym checkpoint as a Hugging Face GPT-2 directory.

The checkpoint is loaded through the pristine model (``load_checkpoint``, with
every key and shape checked), then rewritten with ``transformers``' GPT-2
names: ``config.json`` and ``model.safetensors``. ``transformers`` itself is
not needed to export; it is needed to load the result
(``GPT2LMHeadModel.from_pretrained(DIR)``), e.g. for lm-evaluation-harness.

Differences handled here:

* HF GPT-2 uses ``Conv1D`` (``y = x @ W + b``, ``W`` of shape in × out) where
  our model uses ``nn.Linear`` (``W`` of shape out × in): matrices are
  transposed.
* Our vocabulary is GPT-2's 50257 tokens padded to 50304 rows for speed; the
  padding rows (50257..50303) are never a target and are dropped, so the
  exported ``vocab_size`` is 50257 and matches the GPT-2 tokenizer.
* A model trained with ``bias=False`` gets zero biases (HF GPT-2 always has
  them), which computes the same function.
* The template uses exact GELU (``F.gelu``), so ``activation_function`` is
  ``"gelu"``, not GPT-2's tanh approximation ``"gelu_new"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lossgym.trainer.model import GPT, GPTConfig, load_checkpoint

GPT2_VOCAB = 50257
CHECKPOINT_NAME = "model.safetensors"
_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_NORMS = ("ln_1", "ln_2")


class ExportError(ValueError):
    """The checkpoint or model config to export cannot be found or used."""


def resolve_inputs(
    source: str | os.PathLike, model_config: str | os.PathLike | None = None
) -> tuple[Path, Path]:
    """(checkpoint, model.json) for a run directory or a checkpoint file.

    A run directory is a stage directory the worker wrote
    (``runs/job-N/attempt-K/<label>/`` with ``out/model.safetensors`` and
    ``eval/model.json``); a checkpoint file needs ``model_config`` unless an
    ``eval/model.json`` sits beside its ``out/`` directory.
    """
    source = Path(source)
    if source.is_dir():
        checkpoint = source / "out" / CHECKPOINT_NAME
        if not checkpoint.is_file():
            checkpoint = source / CHECKPOINT_NAME
        guess = source / "eval" / "model.json"
    else:
        checkpoint, guess = source, source.parent.parent / "eval" / "model.json"
    if not checkpoint.is_file():
        raise ExportError(f"no checkpoint at {checkpoint}")
    config = Path(model_config) if model_config is not None else guess
    if not config.is_file():
        raise ExportError(f"no model config at {config}; pass --model-config model.json")
    return checkpoint, config


def hf_config(config: GPTConfig) -> dict:
    """The ``config.json`` of the exported model (GPT2Config fields)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": min(config.vocab_size, GPT2_VOCAB),
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu",  # exact GELU, as the template's F.gelu
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "lossgym": {
            "source_vocab_size": config.vocab_size,
            "note": "padding rows of wte beyond GPT-2's 50257 tokens were dropped; "
            "bias=false models were written with zero biases",
            "trained_bias": config.bias,
        },
    }


def _bias(model_sd: dict[str, torch.Tensor], key: str, size: int) -> torch.Tensor:
    bias = model_sd.get(key)
    return bias.clone() if bias is not None else torch.zeros(size)


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights under HF GPT-2 names (Conv1D weights transposed)."""
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    n_embd, vocab = model.config.n_embd, min(model.config.vocab_size, GPT2_VOCAB)
    out = {
        "transformer.wte.weight": sd["transformer.wte.weight"][:vocab].clone(),
        "transformer.wpe.weight": sd["transformer.wpe.weight"].clone(),
        "transformer.ln_f.weight": sd["transformer.ln_f.weight"].clone(),
        "transformer.ln_f.bias": _bias(sd, "transformer.ln_f.bias", n_embd),
    }
    for i in range(model.config.n_layer):
        p = f"transformer.h.{i}."
        for norm in _NORMS:
            out[f"{p}{norm}.weight"] = sd[f"{p}{norm}.weight"].clone()
            out[f"{p}{norm}.bias"] = _bias(sd, f"{p}{norm}.bias", n_embd)
        for lin in _LINEARS:
            weight = sd[f"{p}{lin}.weight"]  # Linear: (out, in)
            out[f"{p}{lin}.weight"] = weight.t().contiguous()  # Conv1D: (in, out)
            out[f"{p}{lin}.bias"] = _bias(sd, f"{p}{lin}.bias", weight.shape[0])
    return {k: v.contiguous() for k, v in out.items()}


def export_hf(checkpoint: str | os.PathLike, config: GPTConfig, out_dir: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for HF's GPT2LMHeadModel."""
    from safetensors.torch import save_file

    model = load_checkpoint(checkpoint, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(config), indent=2) + "\n")
    save_file(hf_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def export_run(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_config: str | os.PathLike | None = None,
) -> Path:
    """Export a run directory or checkpoint (see ``resolve_inputs``)."""
    checkpoint, config_path = resolve_inputs(source, model_config)
    try:
        config = GPTConfig.from_dict(json.loads(config_path.read_text()))
    except ValueError as error:  # JSON decode errors are ValueErrors too
        raise ExportError(f"{config_path}: {error}") from error
    return export_hf(checkpoint, config, out_dir)
