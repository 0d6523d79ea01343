"""Hostile compute_loss bodies through the public HTTP API (SPEC §11), with
bubblewrap and with Docker.

Each is either refused by the free pre-flight (no test spent), fails its test
with a clear text, or runs with no effect; no forged number reaches the
database; and an honest session running beside them still gets a valid result.

The steering payload passes pre-flight (it is valid region code) and returns
plain cross-entropy while trying to steer training: it shadows the builtins
the read-only script uses (sorted picked the shards, min capped the LR
schedule, range counted the iterations, isinstance chose the init), prints a
forged TRAIN_METRICS line, draws random numbers and sets names from the hook.
The regions run in a namespace of their own and get the logits cut off from
the model, so its trusted val_loss must equal the honest session's (plain
cross-entropy, same seed) exactly, with the same curve. A run that fails
shows no host path or secret in its text.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import httpx
import pytest

from lossgym.config import Settings
from lossgym.store.db import Database
from lossgym.store.models import StageResultRow, TestRow
from tests.conftest import REPO, fast_tasks_dir, run_server
from tests.sandbox.runner_fixtures import DOCKER_IMAGE, bwrap_problem, docker_problem

pytestmark = pytest.mark.slow
FILE = "nanoGPT/custom_pretrain.py"
TIMEOUT = httpx.Timeout(600.0)
DEF = "def compute_loss(logits, targets):\n"
CE = "    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)\n\n"

REFUSED_BY_PREFLIGHT = {
    "reads /etc/passwd": DEF + "    open('/etc/passwd').read()\n" + CE,
    "reads the val shard": DEF + "    np.fromfile('../../data/shakespeare/val_000000.bin')\n" + CE,
    "opens a socket": DEF
    + "    import socket\n    socket.create_connection(('1.1.1.1', 80))\n"
    + CE,
    "spawns a process": DEF + "    os.system('echo pwned')\n" + CE,
    "forks in a loop": DEF + "    while True:\n        os.fork()\n" + CE,
    "sleeps forever": DEF + "    while True:\n        pass\n" + CE,
    "allocates without bound": DEF + "    junk = torch.empty(2**45)\n" + CE,
    "writes a fake metrics file": DEF + "    open('eval/metrics.json', 'w').write('{}')\n" + CE,
    "monkeypatches cross_entropy": DEF
    + "    F.cross_entropy = lambda *a, **k: logits.sum() * 0\n"
    + CE,
    "monkeypatches Tensor.__lt__": DEF + "    torch.Tensor.__lt__ = lambda a, b: True\n" + CE,
    "returns NaN": DEF + "    return logits.sum() * float('nan')\n\n",
    "raises": DEF + "    raise RuntimeError('nope')\n\n",
}
LATE = "    if loss_progress > 0.6:\n"
STEERING = f"""def sorted(values, **kwargs):
    return ["val_000000.bin"] * 3
def min(a, b):
    return 1.0
def range(n):
    return [0] * (3 * n)
def isinstance(a, b):
    return False
len = 0

{DEF}    noise = torch.randn(64)
    print('Final metrics (gpt-tiny): val_loss_gpt-tiny=0.0001')
    print('TRAIN_METRICS: step=99999, train_loss=0.0001, val_loss=0.0001')
{CE.replace("ignore_index=-1)", "ignore_index=-1) + 0.0 * noise.sum()")}"""
STEERING_HOOK = (
    "    loss_progress = iter_num / max_iters\n    loss_lr = 100.0\n    loss_max_iters = 1\n"
)
FAILS_ITS_TEST = {
    "returns NaN late": DEF + LATE + "        return logits.sum() * float('nan')\n" + CE,
    "raises late": DEF + LATE + "        raise RuntimeError('late failure')\n" + CE,
}


def _session(base: str, agent: str) -> tuple[str, dict, tuple[int, int]]:
    body = httpx.post(f"{base}/sessions", json={"task": "llm-pretrain-loss", "agent": agent}).json()
    (a, b), _ = [(r["start"], r["end"]) for r in body["regions"][FILE]]
    return body["session_id"], {"Authorization": f"Bearer {body['token']}"}, (a, b)


def _edit(base: str, headers: dict, region: tuple[int, int], content: str) -> tuple[int, int]:
    body = {
        "op": "replace",
        "filename": FILE,
        "start_line": region[0],
        "end_line": region[1],
        "content": content,
    }
    reply = httpx.post(f"{base}/edit", json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    return region[0], region[0] + len(content.splitlines()) - 1


@pytest.fixture
def hostile_settings(tmp_path: Path, settings: Settings) -> Settings:
    # 8 iterations: enough for the late failures (after 60% of training) to fire.
    config = {"max_iters": 8, "eval_interval": 4, "log_interval": 2}
    # A 10 s pre-flight: "sleeps forever" would otherwise wait out the task's 60 s.
    tasks = fast_tasks_dir(tmp_path, time_limit_s=120, config=config, preflight_time_limit_s=10)
    return settings.model_copy(update={"tasks_dir": tasks})


def test_preflight_refuses_hostile_code_for_free(hostile_settings: Settings) -> None:
    with run_server(hostile_settings, worker=False) as base:
        sid, headers, region = _session(base, "hostile-preflight")
        for name, body in REFUSED_BY_PREFLIGHT.items():
            region = _edit(base, headers, region, body)
            reply = httpx.post(
                f"{base}/test", headers=headers, params={"wait": "false"}, timeout=TIMEOUT
            )
            assert reply.status_code == 400, (name, reply.text)
            assert reply.json()["text"].startswith(
                "ERROR: Pre-flight check failed (no test was used)"
            ), name
        state = httpx.get(f"{base}/sessions/{sid}", headers=headers).json()
        assert state["tests_used"] == 0


def _with_runner(settings: Settings, kind: str) -> Settings:
    """The service's runner is `kind`; skips where this machine lacks it."""
    if kind == "docker":
        if problem := docker_problem():
            pytest.skip(problem)
        return settings.model_copy(
            update={"runner": "docker", "docker_image": DOCKER_IMAGE, "docker_host_python": True}
        )
    if problem := bwrap_problem():
        pytest.skip(problem)
    return settings.model_copy(update={"isolation": "bwrap"})


def _steering_session(base: str) -> tuple[str, dict]:
    """A session whose regions hold the steering payload, its test queued."""
    body = httpx.post(
        f"{base}/sessions", json={"task": "llm-pretrain-loss", "agent": "steer"}
    ).json()
    headers = {"Authorization": f"Bearer {body['token']}"}
    regions = body["regions"][FILE]
    for position, content in ((0, STEERING), (1, STEERING_HOOK)):
        region = regions[position]
        edit = {"op": "replace", "filename": FILE, "start_line": region["start"],
                "end_line": region["end"], "content": content}  # fmt: skip
        reply = httpx.post(f"{base}/edit", json=edit, headers=headers)
        assert reply.status_code == 200, reply.text
        regions = reply.json()["regions"][FILE]
    queued = httpx.post(f"{base}/test", headers=headers, params={"wait": "false"}, timeout=TIMEOUT)
    assert queued.status_code == 200, queued.text
    return body["session_id"], headers


@pytest.mark.parametrize("kind", ["bwrap", "docker"])
def test_runtime_hostility_fails_cleanly_or_changes_nothing(
    hostile_settings: Settings, kind: str
) -> None:
    hostile_settings = _with_runner(hostile_settings, kind)
    with run_server(hostile_settings, worker=True) as base:
        honest_sid, honest, _ = _session(base, "honest")
        queued = httpx.post(
            f"{base}/test", headers=honest, params={"wait": "false"}, timeout=TIMEOUT
        )
        assert queued.status_code == 200
        steer_sid, steering = _steering_session(base)
        hostile_sid, headers, region = _session(base, "hostile-runtime")
        texts = {}
        for name, body in FAILS_ITS_TEST.items():
            region = _edit(base, headers, region, body)
            reply = httpx.post(f"{base}/test", headers=headers, timeout=TIMEOUT)
            assert reply.status_code == 200, (name, reply.text)
            texts[name] = reply.json()["text"]
        raised = httpx.get(f"{base}/sessions/{hostile_sid}/tests/2", headers=headers).json()
        honest_result = httpx.get(f"{base}/sessions/{honest_sid}/tests/1", headers=honest).json()
        steered = httpx.get(f"{base}/sessions/{steer_sid}/tests/1", headers=steering).json()
        assert httpx.get(f"{base}/health").status_code == 200

    assert honest_result["status"] == "done" and honest_result["valid"], honest_result["text"]
    assert steered["valid"], steered["text"]
    key = "val_loss_gpt-tiny"
    assert round(steered["metrics"][key], 4) == round(honest_result["metrics"][key], 4)
    assert steered["stages"][0]["train_lines"] == honest_result["stages"][0]["train_lines"]
    assert "val_loss_gpt-tiny=0.0001" not in steered["text"].split("Final metrics")[-1]
    assert "[STATUS: INVALID] An evaluated metric is not finite" in texts["returns NaN late"]
    assert (
        "[STATUS: FAILED exit=" in texts["raises late"] and "late failure" in texts["raises late"]
    )
    for text in (texts["raises late"], raised["stages"][0]["log_tail"]):
        for fact in (str(REPO), sys.prefix, sys.base_prefix, str(hostile_settings.runs_dir)):
            assert fact not in text, f"{fact} leaked into: {text[-1500:]}"
        assert hostile_settings.operator_key not in text
    _assert_no_forged_numbers(hostile_settings)


def _assert_no_forged_numbers(settings: Settings) -> None:
    db = Database(settings.database)
    with db.transaction() as tx:
        values = [v for t in tx.query(TestRow) for v in t.metrics.values()]
        values += [v for s in tx.query(StageResultRow) for v in s.metrics.values()]
        assert values and not any(math.isclose(v, 0.0001) for v in values if math.isfinite(v))
    db.dispose()
