"""`lossgym agent` against scripted models on loopback: the seed run, end to end.

A real HTTP server speaks chat completions (or Anthropic Messages) and replays
the seed transcript's edit → test → edit → test → submit; the real CLI plays
it against a live LossGym server with a worker running real tiny-cpu training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from lossgym.config import Settings
from lossgym.env.task import load_task
from tests.agent.scripted_models import ScriptedModel
from tests.agent.seed_script import FILENAME, seed_turns
from tests.conftest import fast_tasks_dir

pytestmark = pytest.mark.slow
TASK = "llm-pretrain-loss"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    tasks = fast_tasks_dir(tmp_path, config={"max_iters": 2, "eval_interval": 2, "warmup_iters": 1})
    return settings.model_copy(update={"tasks_dir": tasks})


def _served_messages(protocol: str, served: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the scripted model sent, in the transcript's neutral shape."""
    out = []
    for reply in served:
        if protocol == "openai":
            message = reply["choices"][0]["message"]
            calls = [
                {
                    "id": c["id"],
                    "name": c["function"]["name"],
                    "arguments": json.loads(c["function"]["arguments"]),
                }
                for c in message.get("tool_calls", [])
            ]
            text = message["content"] or ""
        else:
            blocks = reply["content"]
            calls = [
                {"id": b["id"], "name": b["name"], "arguments": b["input"]}
                for b in blocks
                if b["type"] == "tool_use"
            ]
            text = "".join(b["text"] for b in blocks if b["type"] == "text")
        out.append({"role": "assistant", "content": text, "tool_calls": calls})
    return out


def _run_agent(model: ScriptedModel, base: str, transcripts: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    command = [
        sys.executable, "-m", "lossgym.cli", "agent",
        "--model", model.model, "--provider", model.protocol, "--base-url", model.base_url,
        "--server", base, "--task", TASK, "--profile", "tiny-cpu",
        "--transcripts", str(transcripts), "--retry-backoff", "0.05",
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_agent_replays_the_seed_run_onto_the_leaderboard(
    protocol: str, server_with_worker: str, settings: Settings, tmp_path: Path
) -> None:
    base = server_with_worker
    region = load_task(settings.tasks_dir, TASK).regions()[FILENAME][0]
    assert region.name == "compute_loss"
    name = f"scripted-{protocol}-model"
    transcripts = tmp_path / "transcripts"
    with ScriptedModel(protocol, name, seed_turns(region.start, region.end), [429, 500]) as model:
        done = _run_agent(model, base, transcripts)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not model.turns, "the whole script was played"

    # Retries: the rate limit and the 5xx were retried with the very same request.
    assert len(model.requests) == 2 + 5
    assert model.requests[0] == model.requests[1] == model.requests[2]

    (path,) = transcripts.glob("*.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    header, system = records[0], records[1]
    session_id = header["session_id"]
    assert path.name == f"{session_id}.jsonl" and header["model"] == name
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # it holds the session's token

    # The transcript is what was served, and each tool result is what the server recorded.
    messages = [r["message"] for r in records if r["type"] == "message"]
    assistant = [m for m in messages if m["role"] == "assistant"]
    assert assistant == _served_messages(protocol, model.served)
    record = httpx.get(f"{base}/api/sessions/{session_id}").json()
    results = [m for m in messages if m["role"] == "tool"]
    assert [(m["name"], m["content"]) for m in results] == [
        (c["tool"], c["text"]) for c in record["transcript"]
    ]
    assert [c["tool"] for c in record["transcript"]] == ["edit", "test", "edit", "test", "submit"]
    assert results[-1]["content"].startswith("[submit] Submitting result from test #1 as final.")

    # The model saw the task description as its system prompt, and the tools of its protocol.
    last = model.requests[-1]
    tools = httpx.get(f"{base}/tools", params={"format": protocol}).json()
    assert last["tools"] == tools
    if protocol == "openai":
        assert last["messages"][0] == {"role": "system", "content": system["content"]}
    else:
        assert last["system"] == system["content"]
    assert f"{FILENAME} [EDITABLE" in system["content"]

    # The final is on the leaderboard under the model's name, with the usage it reported.
    board = httpx.get(f"{base}/api/leaderboard", params={"task": TASK, "profile": "tiny-cpu"})
    (row,) = [r for r in board.json()["rows"] if r["session_id"] == session_id]
    assert row["agent"] == name and row["final_test"] == 1
    usage = record["usage"]
    assert (usage["model"], usage["input_tokens"], usage["output_tokens"]) == (name, 5000, 500)
    assert usage["requests"] == 5 and usage["transcript"] == str(path)
