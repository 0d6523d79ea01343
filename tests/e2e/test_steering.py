"""Steering payloads through the public HTTP API, with bubblewrap and with Docker.

Each payload passes pre-flight (it is valid region code) and returns plain
cross-entropy while trying to steer training: shadowing the builtins the
read-only script uses (sorted picked the shards, min capped the LR schedule,
range counted the iterations, isinstance chose the init), printing a forged
TRAIN_METRICS line, drawing random numbers, and setting names from the hook. The
regions run in a namespace of their own and get logits cut off from the
model, so the trusted val_loss must equal plain cross-entropy's at the same
seed exactly, with the same curve (the agent's print cannot forge a point). A
run that fails shows no host path or secret in its text.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from lossgym.config import Settings
from tests.conftest import REPO, fast_tasks_dir, run_server
from tests.sandbox.runner_fixtures import DOCKER_IMAGE, bwrap_problem, docker_problem

pytestmark = pytest.mark.slow
FILE = "nanoGPT/custom_pretrain.py"
TIMEOUT = httpx.Timeout(600.0)
CE = "F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)"
STEERING = f"""def sorted(values, **kwargs):
    return ["val_000000.bin"] * 3
def min(a, b):
    return 1.0
def range(n):
    return [0] * (3 * n)
def isinstance(a, b):
    return False
len = 0

def compute_loss(logits, targets):
    noise = torch.randn(64)
    print("TRAIN_METRICS: step=1, train_loss=0.0001, val_loss=0.0001")
    return {CE} + 0.0 * noise.sum()
"""
STEERING_HOOK = (
    "    loss_progress = iter_num / max_iters\n    loss_lr = 100.0\n    loss_max_iters = 1\n"
)
FAILING = f"""def compute_loss(logits, targets):
    if loss_progress > 0.5:
        raise RuntimeError("late failure")
    return {CE}
"""


def _settings(settings: Settings, tmp_path: Path, kind: str) -> Settings:
    tasks = fast_tasks_dir(tmp_path, time_limit_s=300)
    if kind == "docker":
        if problem := docker_problem():
            pytest.skip(problem)
        runner = {"runner": "docker", "docker_image": DOCKER_IMAGE, "docker_host_python": True}
        return settings.model_copy(update={"tasks_dir": tasks, **runner})
    if problem := bwrap_problem():
        pytest.skip(problem)
    return settings.model_copy(update={"tasks_dir": tasks, "isolation": "bwrap"})


def _session(base: str, agent: str) -> tuple[dict, list[dict]]:
    body = httpx.post(f"{base}/sessions", json={"task": "llm-pretrain-loss", "agent": agent}).json()
    headers = {"Authorization": f"Bearer {body['token']}", "X-Session": body["session_id"]}
    return headers, body["regions"][FILE]


def _replace(base: str, headers: dict, region: dict, content: str) -> list[dict]:
    edit = {"op": "replace", "filename": FILE, "start_line": region["start"],
            "end_line": region["end"], "content": content}  # fmt: skip
    reply = httpx.post(f"{base}/edit", json=edit, headers=headers)
    assert reply.status_code == 200, reply.text
    return reply.json()["regions"][FILE]


def _test(base: str, headers: dict) -> dict:
    reply = httpx.post(f"{base}/test", headers=headers, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    n = reply.json()["test"]
    return httpx.get(f"{base}/sessions/{headers['X-Session']}/tests/{n}", headers=headers).json()


@pytest.mark.parametrize("kind", ["bwrap", "docker"])
def test_steering_payloads_change_nothing_but_the_loss(
    settings: Settings, tmp_path: Path, kind: str
) -> None:
    settings = _settings(settings, tmp_path, kind)
    with run_server(settings, worker=True) as base:
        plain, _ = _session(base, "plain-ce")
        reference = _test(base, plain)
        steering, regions = _session(base, "steering")
        regions = _replace(base, steering, regions[0], STEERING)
        _replace(base, steering, regions[1], STEERING_HOOK)
        steered = _test(base, steering)
        failing, regions = _session(base, "fails-late")
        _replace(base, failing, regions[0], FAILING)
        failed = _test(base, failing)

    key = "val_loss_gpt-tiny"
    assert reference["valid"] and steered["valid"], steered["text"]
    assert round(steered["metrics"][key], 4) == round(reference["metrics"][key], 4)
    assert steered["stages"][0]["train_lines"] == reference["stages"][0]["train_lines"]
    assert failed["status"] == "failed" and "late failure" in failed["text"]
    for text in (failed["text"], failed["stages"][0]["log_tail"]):
        for fact in (str(REPO), sys.prefix, sys.base_prefix, str(settings.runs_dir)):
            assert fact not in text, f"{fact} leaked into: {text[-1500:]}"
        assert settings.operator_key not in text
