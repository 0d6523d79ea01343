"""The pre-flight smoke run: compute_loss must return a finite scalar with a finite
gradient. It runs in the sandbox, with the task's pre-flight limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossgym.env.catalog import TaskCache
from lossgym.env.limits import LimitsSpec, PreflightSpec
from lossgym.env.workspace import Workspace
from lossgym.errors import AgentError, RateLimited
from lossgym.sandbox.preflight import Preflight
from lossgym.trainer import smoke
from tests.conftest import REPO
from tests.sandbox.runner_fixtures import make_test_runner

FILE = "nanoGPT/custom_pretrain.py"
TASK = TaskCache(REPO / "tasks").get("llm-pretrain-loss")
HEADER = "def compute_loss(logits, targets):\n"
SPEC = TASK.spec.preflight


@pytest.fixture(scope="module")
def preflight(tmp_path_factory: pytest.TempPathFactory) -> Preflight:
    return Preflight(make_test_runner("bwrap"), tmp_path_factory.mktemp("preflight"))


def _workspace(body: str, hook: str | None = None) -> tuple[Workspace, int]:
    ws = TASK.new_workspace()
    region = ws.regions_of(FILE)[0]
    ws.replace(FILE, region.start, region.end, HEADER + body)
    if hook is not None:
        hook_region = ws.regions_of(FILE)[1]
        ws.replace(FILE, hook_region.start, hook_region.end, hook)
    return ws, region.start


def _check(preflight: Preflight, ws: Workspace, spec: PreflightSpec = SPEC, sid: str = "s") -> None:
    preflight.check(sid, dict(ws.files), {FILE: ws.regions_of(FILE)}, spec)


def test_plain_cross_entropy_passes(preflight: Preflight) -> None:
    ws, _ = _workspace(
        "    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)\n"
    )
    _check(preflight, ws)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    return logits.sum() * float('nan')\n", "must be finite"),
        ("    return logits.mean(-1)\n", "must return a scalar (0-dim)"),
        ("    return 0.0\n", "it must return a scalar tensor"),
        ("    return torch.tensor(1.0)\n", "no gradient"),
        ("    x = 1\n    raise ValueError('boom')\n", "ValueError: boom (line {line})"),
        ("    return torch.os.getcwd()\n", "AttributeError"),  # no module behind the stand-in
        ("    return open('/etc/passwd')\n", "NameError: name 'open' is not defined"),
        (
            "    return (logits * 1e30).exp().sum() * 0 + logits.sum() * 0 + (logits * 1e30).exp().sum() * 0\n",
            "finite",
        ),
    ],
)
def test_broken_losses_are_refused(body: str, message: str) -> None:
    """The smoke run's verdicts (lossgym.trainer.smoke.check, here in the test process:
    these bodies are the test's own). The static policy refuses some of them first;
    the smoke run must hold on its own."""
    ws, start = _workspace(body)
    regions = [r.to_dict() for r in ws.regions_of(FILE)]
    problem = smoke.check({"path": FILE, "script": ws.files[FILE], "regions": regions})
    assert problem is not None and message.format(line=start + 2) in problem, problem


def test_a_verdict_comes_back_from_the_sandbox(preflight: Preflight) -> None:
    ws, _ = _workspace("    return logits.sum() * float('nan')\n")
    text = preflight.smoke(dict(ws.files), {FILE: ws.regions_of(FILE)}, SPEC)
    assert text == (
        "ERROR: Pre-flight check failed (no test was used): compute_loss returned nan on "
        "random logits; it must be finite. Fix it with edit, then call test again."
    )


def test_a_failing_hook_is_named(preflight: Preflight) -> None:
    ws, _ = _workspace(
        "    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))\n",
        hook="    loss_x = iter_num / 0\n    pass\n    pass\n",
    )
    with pytest.raises(AgentError, match="the loss-state hook raised ZeroDivisionError"):
        _check(preflight, ws)


def test_a_loss_that_never_returns_times_out(preflight: Preflight) -> None:
    ws, _ = _workspace("    while True:\n        pass\n")
    quick = PreflightSpec(time_limit_s=3, limits=SPEC.limits)
    with pytest.raises(AgentError, match="did not return within 3 s"):
        _check(preflight, ws, quick)


def test_a_loss_that_allocates_without_bound_hits_the_memory_limit(preflight: Preflight) -> None:
    if preflight.runner.limits_problem:  # type: ignore[attr-defined]
        pytest.skip(preflight.runner.limits_problem)  # type: ignore[attr-defined]
    ws, _ = _workspace(
        "    junk = [torch.ones(2**24) for _ in range(1000)]\n    return logits.sum()\n"
    )
    small = PreflightSpec(time_limit_s=60, limits=LimitsSpec(memory="512MiB", cpus=1, pids=64))
    with pytest.raises(AgentError, match=r"ran out of memory \(limit 0.5 GiB\)"):
        _check(preflight, ws, small)


def test_checks_are_rate_limited_per_session_and_verdicts_remembered(tmp_path: Path) -> None:
    preflight = Preflight(make_test_runner("bwrap"), tmp_path, per_minute=2)
    bodies = [f"    return logits.sum() * {k}.0\n" for k in range(3)]
    for body in bodies[:2]:
        _check(preflight, _workspace(body)[0], sid="a")
    _check(preflight, _workspace(bodies[0])[0], sid="a")  # known: answered without a run
    with pytest.raises(RateLimited, match="limited to 2 per minute per session"):
        _check(preflight, _workspace(bodies[2])[0], sid="a")
    _check(preflight, _workspace(bodies[2])[0], sid="b")  # another session has its own
    assert list(tmp_path.iterdir()) == []  # every smoke run's files are gone
