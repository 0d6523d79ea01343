"""The pre-flight smoke run: compute_loss must return a finite scalar with a finite gradient."""

from __future__ import annotations

import pytest

from lossgym.env.errors import AgentError
from lossgym.sandbox.policy import RegionCode
from lossgym.sandbox.preflight import run_smoke

PATH = "nanoGPT/custom_pretrain.py"
START = 200
HEADER = "def compute_loss(logits, targets):\n"


def _smoke(body: str, timeout_s: float = 60.0) -> None:
    run_smoke(PATH, [RegionCode("compute_loss", START, HEADER + body)], timeout_s=timeout_s)


def test_plain_cross_entropy_passes() -> None:
    _smoke(
        "    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)\n"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    return logits.sum() * float('nan')\n", "must be finite"),
        ("    return logits.mean(-1)\n", "must return a scalar (0-dim)"),
        ("    return 0.0\n", "it must return a scalar tensor"),
        ("    return torch.tensor(1.0)\n", "no gradient"),
        ("    x = 1\n    raise ValueError('boom')\n", f"ValueError: boom (line {START + 2})"),
        (
            "    return (logits * 1e30).exp().sum() * 0 + logits.sum() * 0 + (logits * 1e30).exp().sum() * 0\n",
            "finite",
        ),
    ],
)
def test_broken_losses_are_refused(body: str, message: str) -> None:
    with pytest.raises(AgentError) as error:
        _smoke(body)
    assert str(error.value).startswith("ERROR: Pre-flight check failed (no test was used): ")
    assert message in str(error.value)


def test_a_loss_that_never_returns_times_out() -> None:
    with pytest.raises(AgentError, match="did not return within 3 s"):
        _smoke("    while True:\n        pass\n", timeout_s=3)
