"""`lossgym agent`'s sessions: start (or resume) each, play it, N at a time K in parallel.

Session i of a run gets seed `seed + i` when a seed is given, otherwise the
task's i-th seed (the seeds its baselines ran on, so the board can pair them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossgym.agent import messages as msg
from lossgym.agent.loop import KICKOFF, LoopConfig, Outcome, SessionPlayer, SessionState
from lossgym.agent.providers import ModelConfig, Provider, make_provider
from lossgym.agent.transcript import Resumed, Transcript, TranscriptError
from lossgym.client import Api, ApiError

log = logging.getLogger("lossgym.agent")

UNRECORDED = (
    "ERROR: The harness stopped before this call's result was recorded; the call may or may "
    "not have been carried out. Use view to check the workspace before going on."
)


@dataclass(frozen=True)
class RunPlan:
    model: ModelConfig
    agent: str  # the name on the leaderboard (default: the model's)
    task: str
    profile: str | None
    seed: int | None
    sessions: int
    parallel: int
    transcripts: Path
    loop: LoopConfig


class PlanError(Exception):
    """A run that cannot start (unknown task or profile, server unreachable); says why."""


def seeds_for(api: Api, plan: RunPlan) -> list[int | None]:
    """The seed of each session, checking the task and profile on the way."""
    tasks = {t["name"]: t for t in api.call_list("GET", "/api/tasks")}
    task = tasks.get(plan.task)
    if task is None:
        raise PlanError(f"unknown task {plan.task!r}; the server has: {', '.join(tasks) or 'none'}")
    if plan.profile is not None and plan.profile not in task["profiles"]:
        profiles = ", ".join(task["profiles"])
        raise PlanError(f"task {plan.task} has no profile {plan.profile!r}; it has: {profiles}")
    if plan.seed is not None:
        return [plan.seed + i for i in range(plan.sessions)]
    seeds = task["seeds"]
    return [seeds[i % len(seeds)] for i in range(plan.sessions)]


def run_sessions(
    api: Api,
    plan: RunPlan,
    say: Callable[[str], None] = log.info,
    provider_for: Callable[[ModelConfig], Provider] = make_provider,
) -> list[Outcome | BaseException]:
    """Play `plan.sessions` sessions, `plan.parallel` at a time; one failure stops no other."""
    seeds = seeds_for(api, plan)

    def one(seed: int | None) -> Outcome:
        player = SessionPlayer(api, provider_for(plan.model), plan.model.model, plan.loop, say)
        state, transcript = start_session(api, plan, seed)
        say(f"{state.session_id}: started (seed {seed}), transcript {transcript.path}")
        return player.play(state, transcript)

    with ThreadPoolExecutor(max_workers=max(1, plan.parallel)) as pool:
        futures = [pool.submit(one, seed) for seed in seeds]
        results: list[Outcome | BaseException] = []
        for future in futures:
            error = future.exception()
            results.append(error if error is not None else future.result())
            if error is not None:
                say(f"a session failed: {type(error).__name__}: {error}")
    return results


def start_session(api: Api, plan: RunPlan, seed: int | None) -> tuple[SessionState, Transcript]:
    created = api.create_session(plan.task, plan.agent, plan.profile, seed)
    header = {
        "session_id": created["session_id"],
        "token": created["token"],
        "server": api.base_url,
        "task": created["task"],
        "profile": created["profile"],
        "seed": seed,
        "agent": plan.agent,
        "provider": plan.model.provider,
        "model": plan.model.model,
        "base_url": plan.model.base_url,
    }
    system = created["description"]
    transcript = Transcript.create(plan.transcripts, header, system)
    first = msg.user(KICKOFF)
    transcript.message(first)
    state = SessionState(created["session_id"], created["token"], system, [first])
    return state, transcript


def resume_header(folder: Path, session_id: str) -> dict[str, Any]:
    """The session record of a saved transcript: server, model, provider, agent, token."""
    return Resumed(Transcript(folder / f"{session_id}.jsonl")).header


def resume(
    api: Api, plan: RunPlan, session_id: str, say: Callable[[str], None] = log.info
) -> Outcome:
    """Go on with a session from its transcript, after the last recorded message."""
    transcript = Transcript(plan.transcripts / f"{session_id}.jsonl")
    saved = Resumed(transcript)
    if saved.header.get("server", "").rstrip("/") != api.base_url:
        raise TranscriptError(
            f"session {session_id} was played on {saved.header.get('server')}, not {api.base_url}"
        )
    state = SessionState(session_id, saved.header["token"], saved.system, saved.messages)
    for usage in saved.usage:
        state.usage.add(msg.Usage(**usage))
    state.turns = len(saved.usage)
    _close_open_calls(state, transcript)
    say(f"{session_id}: resumed after {len(saved.messages)} messages")
    player = SessionPlayer(api, make_provider(plan.model), plan.model.model, plan.loop, say)
    return player.play(state, transcript)


def _close_open_calls(state: SessionState, transcript: Transcript) -> None:
    """Every tool call needs a result before the next request; unrecorded ones say so."""
    answered = {m["tool_call_id"] for m in state.messages if m["role"] == "tool"}
    for message in [m for m in state.messages if m["role"] == "assistant"]:
        for call in message.get("tool_calls", []):
            if call["id"] not in answered:
                result = msg.tool_result(msg.ToolCall(**call), UNRECORDED, False)
                state.messages.append(result)
                transcript.message(result)


def describe(outcome: Outcome | BaseException) -> dict[str, Any]:
    if isinstance(outcome, BaseException):
        text = str(outcome)
        if isinstance(outcome, ApiError):
            text = f"HTTP {outcome.status}: {text}"
        return {"error": f"{type(outcome).__name__}: {text}"}
    return {
        "session_id": outcome.session_id,
        "reason": outcome.reason,
        "final": outcome.final,
        "turns": outcome.turns,
        **outcome.usage.as_dict(),
        "transcript": outcome.transcript,
    }
