"""Baseline edit files apply through the edit engine and keep compute_loss's signature."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from envtest_helpers import SCRIPT, TASK, TASKS_DIR, needs_template

from lossgym.env.baselines import EditOp, apply_baseline, load_baseline
from lossgym.env.task import Task, load_task
from lossgym.env.workspace import Workspace
from lossgym.errors import AgentError, TaskSpecError

SIGNATURE = "def compute_loss(logits, targets):"


@pytest.fixture
def task() -> Task:
    return load_task(TASKS_DIR, TASK)


def test_baseline_files_parse(task: Task) -> None:
    assert load_baseline(task, "cross_entropy") == []
    for name in ("label_smoothing", "softcap_ce", "z_loss"):
        ops = load_baseline(task, name)
        assert len(ops) == 1 and ops[0].region == "compute_loss" and ops[0].op == "replace"
        assert ops[0].content is not None and ops[0].content.startswith(SIGNATURE + "\n")
    with pytest.raises(AgentError, match="Unknown baseline 'nope'"):
        load_baseline(task, "nope")


def test_baseline_contents(task: Task) -> None:
    content = {
        n: load_baseline(task, n)[0].content or ""
        for n in ("label_smoothing", "softcap_ce", "z_loss")
    }
    assert "label_smoothing=0.05" in content["label_smoothing"]
    assert "torch.is_grad_enabled()" in content["label_smoothing"]
    assert "30.0 * torch.tanh(logits.float() / 30.0)" in content["softcap_ce"]
    assert "1e-4" in content["z_loss"] and "logsumexp" in content["z_loss"]


@needs_template
@pytest.mark.parametrize("name", ["cross_entropy", "label_smoothing", "softcap_ce", "z_loss"])
def test_baselines_apply_to_real_workspace(task: Task, name: str) -> None:
    ws = task.new_workspace()
    hook_before = _region_text(ws, "loss_state_hook")
    texts = apply_baseline(ws, load_baseline(task, name))
    assert all(t.startswith("OK: Replaced lines ") for t in texts)
    region = {r.name: r for r in ws.regions_of(SCRIPT)}["compute_loss"]
    lines = ws.files[SCRIPT].splitlines()
    assert lines[region.start - 1] == SIGNATURE
    assert ws.files[SCRIPT].count(SIGNATURE) == 1
    assert _region_text(ws, "loss_state_hook") == hook_before
    ast.parse(ws.files[SCRIPT])  # the edited script is still valid Python
    if name == "cross_entropy":
        assert ws.files == task.workspace_files()


def _region_text(ws: Workspace, name: str) -> list[str]:
    region = {r.name: r for r in ws.regions_of(SCRIPT)}[name]
    return ws.files[SCRIPT].splitlines()[region.start - 1 : region.end]


def test_region_resolves_to_current_lines(ws: Workspace) -> None:
    ws.insert(SCRIPT, 187, "HELPER = 1\nOTHER = 2")  # compute_loss is now 188–193
    op = EditOp(op="replace", filename=SCRIPT, region="compute_loss", content=SIGNATURE + "\n")
    (text,) = apply_baseline(ws, [op])
    assert text.startswith("OK: Replaced lines 188..193 with 1 line(s)")
    bad = EditOp(op="replace", filename=SCRIPT, region="nope", content="x")
    with pytest.raises(AgentError, match="no editable region 'nope'"):
        apply_baseline(ws, [bad])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"op": "insert", "filename": SCRIPT, "region": "compute_loss", "content": "x"}, "only"),
        (
            {"op": "replace", "filename": SCRIPT, "region": "r", "start_line": 1, "content": "x"},
            "not both",
        ),
        ({"op": "replace", "filename": SCRIPT, "region": "r"}, "needs content"),
        ({"op": "replace", "filename": SCRIPT, "start_line": 1, "content": "x"}, "end_line"),
        ({"op": "replace", "filename": SCRIPT, "region": "r", "content": "x", "x": 1}, "Extra"),
    ],
)
def test_bad_baseline_file(tmp_path: Path, task: Task, data: dict, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump([data]))
    fake = Task(
        task.spec.model_copy(update={"baselines": {"cross_entropy": str(path)}}), tmp_path, ""
    )
    with pytest.raises(TaskSpecError, match=message) as info:
        load_baseline(fake, "cross_entropy")
    assert str(info.value).startswith(f"{path}: 0")
