"""Pre-flight policy on the real template: hostile code is refused, honest losses pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossgym.env.baselines import apply_baseline, load_baseline
from lossgym.env.catalog import TaskCache
from lossgym.env.errors import AgentError
from lossgym.env.workspace import Workspace
from lossgym.sandbox.preflight import check_workspace
from tests.conftest import REPO

FILE = "nanoGPT/custom_pretrain.py"
TASK = TaskCache(REPO / "tasks").get("llm-pretrain-loss")

HEADER = "def compute_loss(logits, targets):\n"
CE = "    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)\n"
HOSTILE = {
    "import": HEADER + "    import os\n" + CE,
    "open": HEADER + "    open('/etc/passwd').read()\n" + CE,
    "os via template import": HEADER + "    os.system('id')\n" + CE,
    "socket": HEADER + "    s = socket.socket()\n" + CE,
    "eval": HEADER + "    eval('1')\n" + CE,
    "dunder import": HEADER + "    __import__('os')\n" + CE,
    "getattr": HEADER + "    getattr(torch, 'load')\n" + CE,
    "dunder attribute": HEADER + "    logits.__class__.__lt__\n" + CE,
    "monkeypatch F": HEADER + "    F.cross_entropy = lambda *a, **k: 0\n" + CE,
    "monkeypatch at top": "F.cross_entropy = None\n" + HEADER + CE,
    "torch.load": HEADER + "    torch.load('/data/val.bin')\n" + CE,
    "numpy": HEADER + "    np.fromfile('x')\n" + CE,
    "global rebinding": HEADER + "    global learning_rate\n    learning_rate = 1.0\n" + CE,
    "shadow config": "learning_rate = 10.0\n" + HEADER + CE,
    "class": "class X:\n    pass\n" + HEADER + CE,
    "statement at top": "print('hi')\n" + HEADER + CE,
    "reads training data": HEADER + "    z = X\n" + CE,
    "local shadow trick": "def f():\n    os = 1\n    return os\n"
    + HEADER
    + "    os.system('id')\n"
    + CE,
    "no compute_loss": "def other(logits, targets):\n" + CE,
    "decorator": "@torch.jit.script\n" + HEADER + CE,
}
HOOK_HOSTILE = {
    "sets the learning rate": "    learning_rate = 1.0\n    pass\n    pass\n",
    "touches the optimizer": "    loss_x = optimizer.param_groups\n    pass\n    pass\n",
    "calls open": "    loss_x = open('x')\n    pass\n    pass\n",
    "attribute": "    model.lm_head = None\n    pass\n    pass\n",
}


def _workspace() -> Workspace:
    return TASK.new_workspace()


def _region(ws: Workspace, name: str) -> tuple[int, int]:
    region = next(r for r in ws.regions_of(FILE) if r.name == name)
    return region.start, region.end


def _check(ws: Workspace) -> None:
    check_workspace(ws.files, {FILE: ws.regions_of(FILE)})


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_compute_loss_is_refused(name: str) -> None:
    ws = _workspace()
    start, end = _region(ws, "compute_loss")
    ws.replace(FILE, start, end, HOSTILE[name] + "\n")
    with pytest.raises(AgentError) as error:
        _check(ws)
    text = str(error.value)
    assert text.startswith("ERROR: Pre-flight check failed (no test was used): ")
    line = int(text.split(" line ")[1].split(":")[0])
    assert start <= line <= start + HOSTILE[name].count("\n"), text


@pytest.mark.parametrize("name", sorted(HOOK_HOSTILE))
def test_hostile_hook_is_refused(name: str) -> None:
    ws = _workspace()
    start, end = _region(ws, "loss_state_hook")
    ws.replace(FILE, start, end, HOOK_HOSTILE[name])
    with pytest.raises(AgentError, match="Pre-flight check failed"):
        _check(ws)


def test_template_baselines_and_seed_edits_pass() -> None:
    _check(_workspace())
    for name in TASK.spec.baselines:
        ws = _workspace()
        apply_baseline(ws, load_baseline(TASK, name))
        _check(ws)
    for example in ("edit_polyloss.json", "edit_softcap.json"):
        ws = _workspace()
        edit = json.loads(Path(REPO / "examples" / example).read_text())
        start, _ = _region(ws, "compute_loss")
        ws.replace(FILE, start, _region(ws, "compute_loss")[1], edit["content"])
        _check(ws)


def test_honest_schedule_with_helpers_passes() -> None:
    ws = _workspace()
    start, end = _region(ws, "compute_loss")
    body = (
        "SMOOTHING = 0.1\n\n"
        "def _smoothing():\n"
        "    return SMOOTHING * (1.0 - loss_progress) + 0.5 * math.cos(math.pi * loss_temperature)\n\n"
        "def compute_loss(logits, targets):\n"
        "    flat = logits.view(-1, logits.size(-1)).float()\n"
        "    mask = targets.view(-1) != -1\n"
        "    eps = max(0.0, _smoothing())\n"
        "    losses = [F.cross_entropy(flat, targets.view(-1), ignore_index=-1, label_smoothing=eps)]\n"
        "    return sum(losses) + 0.0 * mask.sum()\n\n"
    )
    ws.replace(FILE, start, end, body)
    hook_start, hook_end = _region(ws, "loss_state_hook")
    ws.replace(
        FILE, hook_start, hook_end,
        "    loss_progress = iter_num / max_iters\n    loss_temperature = min(1.0, 2 * loss_progress)\n    pass\n",
    )  # fmt: skip
    _check(ws)
