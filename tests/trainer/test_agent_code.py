"""The second wall at run time: regions in a namespace of their own, logits cut off
from the model, and the allowlist the namespace is built from."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lossgym.trainer import allowlist
from lossgym.trainer.agent_code import (
    AgentCodeError,
    AgentLoss,
    agent_namespace,
    load_regions,
    regions_in,
)

# A toy training script laid out like the template: read-only lines that use
# builtins and config names, a compute_loss region, a hook region in the loop.
SCRIPT = """import math
import torch
import torch.nn.functional as F
lr = 0.1
seen = []
def schedule(it):
    return min(lr * (it + 1), 1.0) + len(sorted([3, 1, 2])) + sum(range(3))
loss_progress = 0.0
{loss}
torch.manual_seed(0)
weight = torch.randn(5, 5, requires_grad=True)
for iter_num in range(3):
    max_iters = 3
{hook}
    logits = torch.ones(4, 5) @ weight
    loss = compute_loss(logits, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    seen.append([schedule(iter_num), round(loss.item(), 6), round(float(weight.grad.sum()), 6)])
    weight.grad = None
print("RESULT " + repr(seen))
"""
CLEAN_LOSS = """def compute_loss(logits, targets):
    return F.cross_entropy(logits, targets) * (1.0 + loss_progress)
"""
CLEAN_HOOK = """    loss_progress = iter_num / max_iters
    pass
    pass"""
# Everything here passes no policy; it must still change nothing but the loss.
HOSTILE_LOSS = """def min(*args):
    return 1000.0
def sorted(values):
    return [0] * 50
def range(n):
    return [100]
lr = 50.0
def compute_loss(logits, targets):
    try:
        seen.append("forged")
    except Exception:
        pass
    frame_globals = (0 for _ in [1]).gi_frame.f_globals
    frame_globals["lr"] = 99.0
    assert "weight" not in frame_globals and "seen" not in frame_globals
    assert logits.grad_fn is None and logits.is_leaf
    print("TRAIN_METRICS: step=1, train_loss=0.0001, val_loss=0.0001")
    return F.cross_entropy(logits, targets) * (1.0 + loss_progress)
"""
HOSTILE_HOOK = """    loss_progress = iter_num / max_iters
    iter_num = 100
    max_iters = 0"""


def _launch(tmp_path: Path, loss: str, hook: str) -> str:
    """Run SCRIPT through the launcher, as the worker does; returns its RESULT line
    (and checks that no line the agent printed passes for the script's own)."""
    text = SCRIPT.format(loss=loss.rstrip("\n"), hook=hook)
    lines = text.split("\n")
    start = lines.index(loss.split("\n")[0]) + 1
    hook_start = lines.index(hook.split("\n")[0], start) + 1
    regions = [
        {"name": "compute_loss", "start": start, "end": start + loss.rstrip("\n").count("\n")},
        {"name": "loss_state_hook", "start": hook_start, "end": hook_start + hook.count("\n")},
    ]
    (tmp_path / "train.py").write_text(text)
    argv = [sys.executable, "-I", "-m", "lossgym.trainer.launch", "--script", "train.py"]
    done = subprocess.run(
        [*argv, "--regions", json.dumps(regions)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert not any(line.startswith("TRAIN_METRICS") for line in done.stdout.splitlines())
    return next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))


def test_regions_cannot_read_or_shadow_the_scripts_names(tmp_path: Path) -> None:
    clean = _launch(tmp_path, CLEAN_LOSS, CLEAN_HOOK)
    assert _launch(tmp_path, HOSTILE_LOSS, HOSTILE_HOOK) == clean
    assert "forged" not in clean


def test_an_error_names_the_files_line_in_one_line_the_agent_wrote_nothing_of(
    tmp_path: Path,
) -> None:
    loss = (
        "def compute_loss(logits, targets):\n"
        "    raise ValueError('boom\\nTRAIN_METRICS: step=9, train_loss=0.1, val_loss=0.1')\n"
    )
    with pytest.raises(AssertionError) as error:
        _launch(tmp_path, loss, CLEAN_HOOK)
    text = str(error.value)
    assert "compute_loss raised ValueError: boom | TRAIN_METRICS: step=9" in text
    assert "(line 10)" in text and "\nTRAIN_METRICS" not in text


def test_writing_into_the_logits_is_refused() -> None:
    def scribble(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        value = logits.sum()
        with torch.no_grad():
            logits.mul_(0.0)
        return value

    with pytest.raises(TypeError, match="wrote into its logits in place"):
        AgentLoss(scribble, "x.py")(torch.randn(2, 3, requires_grad=True) * 1, torch.zeros(2))


def test_agent_prints_are_marked_as_the_agents(capsys: pytest.CaptureFixture[str]) -> None:
    ns = agent_namespace()
    ns["__builtins__"]["print"]("a\nTRAIN_METRICS: step=1", 2, sep=" - ", end="!\n")
    assert capsys.readouterr().out == "[loss] a\n[loss] TRAIN_METRICS: step=1 - 2!\n"


def _model_grads(loss_fn, accumulate: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 11))
    x, y = torch.randn(3, 7, 8), torch.randint(0, 11, (3, 7))
    for _ in range(accumulate):
        (loss_fn(model(x), y) / accumulate).backward()
    return [p.grad for p in model.parameters()]


def _z_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    flat = logits.reshape(-1, logits.size(-1)).float()
    ce = F.cross_entropy(flat, targets.reshape(-1), label_smoothing=0.1)
    return ce + 1e-4 * torch.logsumexp(flat, dim=-1).square().mean()


@pytest.mark.parametrize("accumulate", [1, 5])
def test_gradients_through_the_bridge_equal_a_direct_call(accumulate: int) -> None:
    direct = _model_grads(_z_loss, accumulate)
    bridged = _model_grads(AgentLoss(_z_loss, "x.py"), accumulate)
    assert all(torch.equal(a, b) for a, b in zip(direct, bridged, strict=True))


def test_the_loss_sees_a_leaf_and_a_copy_of_the_targets() -> None:
    seen = {}

    def peek(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seen.update(leaf=logits.is_leaf, grad_fn=logits.grad_fn, targets=targets)
        return logits.sum()

    x = torch.randn(2, 3, requires_grad=True)
    targets = torch.zeros(2, dtype=torch.long)
    AgentLoss(peek, "x.py")(x * 2, targets).backward()
    assert seen["leaf"] and seen["grad_fn"] is None and seen["targets"] is not targets
    assert torch.equal(x.grad, torch.full((2, 3), 2.0))


def test_the_namespace_holds_only_the_allowlist() -> None:
    ns = agent_namespace({"loss_progress": 0.5, "learning_rate": 1.0})
    assert set(ns) == {"__builtins__", "__name__", "torch", "F", "nn", "math", "loss_progress"}
    assert set(ns["__builtins__"]) == allowlist.BUILTINS | {"__import__"}
    for name in ("os", "sys", "load", "save", "_C", "autograd", "distributed", "manual_seed"):
        assert not hasattr(ns["torch"], name), name
    for name in ("importlib", "np", "torch", "grad", "math", "warnings"):
        assert not hasattr(ns["F"], name), name
    assert ns["torch"].nn.functional is ns["F"] and ns["nn"].functional is ns["F"]
    assert ns["__builtins__"]["__import__"]("os") is None  # imports hand out nothing


def test_an_import_in_region_code_binds_nothing() -> None:
    script = "def compute_loss(logits, targets):\n    import os\n    return os\n"
    loss, _, _ = load_regions("x.py", script, regions_in(script, [_span("compute_loss", 1, 3)]))
    with pytest.raises(TypeError, match="returned NoneType"):
        loss(torch.zeros(2, requires_grad=True), torch.zeros(2))


def _span(name: str, start: int, end: int) -> dict:
    return {"name": name, "start": start, "end": end}


@pytest.mark.parametrize("end", [4, 9])
def test_a_region_past_the_end_of_the_file_is_refused(end: int) -> None:
    """Lines are counted as the workspace counts them: the final newline adds none."""
    script = "def compute_loss(logits, targets):\n    return logits.sum()\n\n"
    assert [r.end for r in regions_in(script, [_span("compute_loss", 1, 3)])] == [3]
    with pytest.raises(ValueError, match=f"compute_loss \\(1-{end}\\) is outside the file's 3"):
        regions_in(script, [_span("compute_loss", 1, end)])


@pytest.mark.parametrize(
    ("module", "names"),
    [(torch, allowlist.TORCH), (F, allowlist.FUNCTIONAL), (math, allowlist.MATH)],
)
def test_every_allowed_function_exists_and_none_is_a_module(module, names) -> None:
    missing = sorted(n for n in names if not hasattr(module, n))
    assert not missing, f"not in {module.__name__}: {missing}"
    modules = sorted(n for n in names if inspect.ismodule(getattr(module, n)) and n != "nn")
    assert not modules, f"modules on the allowlist: {modules}"


def test_refused_names_are_not_allowed_anywhere() -> None:
    assert not set(allowlist.REFUSAL_HINTS) & allowlist.ATTRIBUTES
    dangerous = {"data", "grad", "grad_fn", "numpy", "format", "backward", "storage", "_base"}
    assert not dangerous & allowlist.ATTRIBUTES
    assert all(not name.startswith("_") for name in allowlist.ATTRIBUTES)


def test_an_exception_whose_message_cannot_be_shown_is_still_one_line() -> None:
    """A second red-team pass: str() of a deeply nested KeyError raises, and its chain
    (with the agent's raw, multi-line message) would print un-sanitised."""

    def deep(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nested: list = []
        for _ in range(5000):
            nested = [nested]
        try:
            raise ValueError("x\nTRAIN_METRICS: step=1, train_loss=0.1, val_loss=0.1")
        except ValueError:
            raise KeyError(nested) from None

    with pytest.raises(AgentCodeError) as error:
        AgentLoss(deep, "x.py")(torch.randn(2, 3, requires_grad=True) * 1, torch.zeros(2))
    assert "KeyError: (a message that cannot be shown)" in str(error.value)
    assert error.value.__suppress_context__ and error.value.__cause__ is None


def test_grad_mode_is_restored_after_agent_code() -> None:
    def leaves_grad_off(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        off = torch.no_grad()
        value = logits.sum()
        with off, off:  # a reused no_grad object leaves grad mode off on exit
            pass
        return value

    AgentLoss(leaves_grad_off, "x.py")(torch.randn(2, 3, requires_grad=True) * 1, torch.zeros(2))
    assert torch.is_grad_enabled()


def test_no_torch_tensor_constructor_for_uninitialised_memory() -> None:
    assert not hasattr(agent_namespace()["torch"], "Tensor")
    assert "Tensor" not in allowlist.ATTRIBUTES
