"""Shared helpers for the env tests: a synthetic script shaped like the seed's, the real task."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lossgym.env.workspace import Region

REPO = Path(__file__).resolve().parents[2]
TASKS_DIR = REPO / "tasks"
TASK = "llm-pretrain-loss"
SCRIPT = "nanoGPT/custom_pretrain.py"
HEADING = "# ── Loss Computation " + "─" * 55


def _template_exists() -> bool:
    spec = importlib.util.find_spec("lossgym.trainer")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        (Path(p) / "template" / "custom_pretrain.py").is_file()
        for p in spec.submodule_search_locations
    )


TEMPLATE_EXISTS = _template_exists()
needs_template = pytest.mark.skipif(
    not TEMPLATE_EXISTS, reason="lossgym/trainer/template/custom_pretrain.py not written yet"
)


def synthetic_script() -> str:
    """439 lines with editable regions 188–191 and 247–249, laid out like the seed's."""
    lines = [f"line_{n} = {n}" for n in range(1, 440)]
    lines[184] = "        return optimizer"
    lines[185] = ""
    lines[186] = HEADING
    lines[187:191] = [
        "def compute_loss(logits, targets):",
        '    """Standard cross-entropy."""',
        "    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))",
        "",
    ]
    lines[245] = "    # ── loss-state hook ──"
    lines[246:249] = ["    loss_progress = iter_num / max_iters", "    pass", "    pass"]
    lines[249] = "    # ── end of loss-state hook ──"
    return "\n".join(lines) + "\n"


SYNTHETIC_REGIONS = [Region("compute_loss", 188, 191), Region("loss_state_hook", 247, 249)]
