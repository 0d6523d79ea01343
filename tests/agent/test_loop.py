"""The agent loop against a live server and scripted models, without training.

The server runs no worker; a test finishes a queued test itself (as the worker
would record it) from the loop's poll, so no test waits on real training.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lossgym.agent.loop import LoopConfig, SessionPlayer
from lossgym.agent.providers import ModelConfig, make_provider
from lossgym.agent.runs import UNRECORDED, RunPlan, resume, run_sessions, start_session
from lossgym.client import Api
from lossgym.config import Settings
from lossgym.env.service import EpisodeService
from lossgym.store.db import Database
from tests.agent.scripted_models import ScriptedModel, ScriptedTurn
from tests.conftest import run_server
from tests.leaderboard.lbtest_helpers import FILE, TASK, finish_test, primary_key

PROFILE = "tiny-cpu"


@pytest.fixture
def live(settings: Settings) -> Iterator[str]:
    """A server that stops waiting on a test at once, so the loop polls for its result."""
    with run_server(settings.model_copy(update={"test_wait_s": 0.1}), worker=False) as base:
        yield base


def _plan(model: ScriptedModel, tmp_path: Path, **kw: object) -> RunPlan:
    config = ModelConfig(model.protocol, model.model, "key", model.base_url, backoff_s=0.01)
    values = dict(
        model=config, agent=model.model, task=TASK, profile=PROFILE, seed=None, sessions=1,
        parallel=1, transcripts=tmp_path / "t", loop=LoopConfig(test_poll_s=0.01),
    )  # fmt: skip
    values.update(kw)
    return RunPlan(**values)  # type: ignore[arg-type]


def _edit(line: int) -> tuple[str, dict]:
    content = "def compute_loss(logits, targets):\n"
    args = {"op": "replace", "filename": FILE, "start_line": line, "end_line": line}
    return "edit", {**args, "content": content}


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_reminders_polling_and_the_auto_submit(
    protocol: str, live: str, service: EpisodeService, db: Database, tmp_path: Path
) -> None:
    start = service.tasks.get(TASK).regions()[FILE][0].start
    turns = [
        ScriptedTurn("", [_edit(start)] * 4),
        ScriptedTurn("Testing.", [("test", {})]),
        ScriptedTurn("That is all I want to try."),
    ]
    api = Api(live)
    with ScriptedModel(protocol, "loop-model", turns) as model:
        plan = _plan(model, tmp_path, loop=LoopConfig(test_poll_s=0.01, steps_left_warning=99))
        state, transcript = start_session(api, plan, seed=None)
        finished: list[int] = []

        def worker_sleep(_: float) -> None:  # the loop polls the test: record its result
            finish_test(service, db, state.session_id, 1, {primary_key(service): 5.5})
            finished.append(1)

        player = SessionPlayer(
            api, make_provider(plan.model), model.model, plan.loop, sleep=worker_sleep
        )
        outcome = player.play(state, transcript)

    assert finished == [1]
    assert (outcome.reason, outcome.final, outcome.turns) == ("auto_submitted", 1, 3)
    second = json.dumps(model.requests[1])
    assert "[Reminder: 4 edits since your last test." in second
    assert "step(s) left of" in second
    assert "edits since your last test" not in json.dumps(model.requests[2]["messages"][-1])
    test_result = [m for m in state.messages if m["role"] == "tool" and m["name"] == "test"]
    assert test_result[0]["content"].startswith("[Test #1]")  # the report, not "still running"
    info = httpx.get(f"{live}/sessions/{state.session_id}", headers=_auth(state.token)).json()
    assert info["status"] == "ended" and info["final"]["n"] == 1
    records = [json.loads(line) for line in Path(outcome.transcript).read_text().splitlines()]
    assert [r["type"] for r in records if r["type"] in ("auto_submit", "end")] == [
        "auto_submit",
        "end",
    ]


def test_parallel_sessions_take_the_task_seeds(live: str, tmp_path: Path) -> None:
    turns = [ScriptedTurn("Nothing to do.") for _ in range(3)]
    with ScriptedModel("openai", "seeds-model", turns) as model:
        outcomes = run_sessions(Api(live), _plan(model, tmp_path, sessions=3, parallel=2))
    seeds = []
    for outcome in outcomes:
        assert not isinstance(outcome, BaseException), outcome
        assert outcome.reason == "model_stopped"
        seeds.append(httpx.get(f"{live}/api/sessions/{outcome.session_id}").json()["seed"])
    tasks = {t["name"]: t for t in httpx.get(f"{live}/api/tasks").json()}
    assert sorted(seeds) == tasks[TASK]["seeds"][:3]


def test_a_failed_model_request_resumes_from_the_transcript(
    live: str, service: EpisodeService, tmp_path: Path
) -> None:
    start = service.tasks.get(TASK).regions()[FILE][0].start
    api = Api(live)
    with ScriptedModel("openai", "resume-model", [ScriptedTurn("", [_edit(start)]), 400]) as model:
        (failed,) = run_sessions(api, _plan(model, tmp_path))
    assert "400" in str(failed)  # a bad request is not retried: the session stops
    (path,) = (tmp_path / "t").glob("*.jsonl")
    session_id = path.stem
    before = [json.loads(line)["message"] for line in path.read_text().splitlines()[2:]]

    # The harness died after the model's next turn but before its tool result was written.
    lost = {"type": "message", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"id": "lost_1", "name": "view", "arguments": {"filename": FILE}}]}}  # fmt: skip
    with path.open("a") as out:
        out.write(json.dumps(lost) + "\n")
    with ScriptedModel("openai", "resume-model", [ScriptedTurn("Done.")]) as model:
        outcome = resume(api, _plan(model, tmp_path), session_id)
    sent = model.requests[0]["messages"]
    assert sent[0]["role"] == "system"
    assert [m["role"] for m in sent[1:]] == [m["role"] for m in before] + ["assistant", "tool"]
    assert sent[-1] == {"role": "tool", "tool_call_id": "lost_1", "content": UNRECORDED}
    assert outcome.reason == "model_stopped" and outcome.turns == 2


def test_bad_plans_fail_before_any_session(live: str, tmp_path: Path) -> None:
    with ScriptedModel("openai", "m", []) as model:
        for kw, why in [({"task": "nope"}, "unknown task"), ({"profile": "huge"}, "no profile")]:
            with pytest.raises(Exception, match=why):
                run_sessions(Api(live), _plan(model, tmp_path, **kw))
    assert model.requests == []
    assert httpx.get(f"{live}/api/leaderboard", params={"task": TASK}).json()["rows"] == []


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
