"""The pristine model the evaluator uses computes exactly what the template's model does.

The two definitions are separate on purpose (the evaluator must never import
the file agents edit), so nothing but this test keeps them from drifting: the
same weights must give the same logits.
"""

from __future__ import annotations

import importlib.resources
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from lossgym.trainer.model import GPT, GPTConfig


def _template_model_namespace() -> dict:
    source = importlib.resources.files("lossgym.trainer.template").joinpath("custom_pretrain.py")
    lines = source.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# ── Model"))
    end = next(i for i, line in enumerate(lines) if line.startswith("# ── Loss"))
    namespace = {"torch": torch, "nn": nn, "F": F, "math": math, "dataclass": dataclass}
    exec(compile("\n".join(lines[start:end]), "custom_pretrain.py", "exec"), namespace)
    return namespace


def test_same_weights_same_logits() -> None:
    shape = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128, bias=True)
    template = _template_model_namespace()
    torch.manual_seed(0)
    theirs = template["GPT"](template["GPTConfig"](**shape)).eval()
    ours = GPT(GPTConfig(**shape)).eval()
    state = {k: v for k, v in theirs.state_dict().items() if k != "lm_head.weight"}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert unexpected == [] and missing == ["lm_head.weight"]
    assert ours.lm_head.weight.data_ptr() == ours.transformer.wte.weight.data_ptr()  # still tied
    idx = torch.randint(0, 128, (3, 16))
    with torch.no_grad():
        logits = theirs(idx)
        torch.testing.assert_close(ours(idx), logits, rtol=0, atol=1e-6)
