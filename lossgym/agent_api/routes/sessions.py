"""Sessions: start one, read its state and its tests, record its token usage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lossgym.agent_api.deps import Operator, Service, Token, authorize_session
from lossgym.env.usage import UsageReport
from lossgym.sandbox.events import TestEvents

EVENTS_POLL_S = 0.5

router = APIRouter(tags=["sessions"])


class NewSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(max_length=100, description="Task name, e.g. llm-pretrain-loss.")
    agent: str = Field(min_length=1, max_length=200, description="Agent or model name.")
    profile: str | None = Field(None, max_length=100, description="Compute profile; task default.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Training seed; task default.")


@router.post("/sessions", status_code=201)
def create_session(body: NewSession, service: Service, operator: Operator) -> dict[str, Any]:
    return service.create_session(body.task, body.agent, body.profile, body.seed, operator)


@router.get("/sessions/{session_id}")
def get_session(session_id: str, service: Service, token: Token) -> dict[str, Any]:
    authorize_session(service, token, session_id)
    return service.session_info(session_id)


@router.post("/sessions/{session_id}/usage")
def record_usage(
    session_id: str, body: UsageReport, service: Service, token: Token
) -> dict[str, Any]:
    """Set the session's cumulative token usage and cost so far (a retry changes nothing;
    totals only grow). Accepted while the session runs and after it ended."""
    authorize_session(service, token, session_id)
    return service.usage.record(session_id, body)


@router.get("/sessions/{session_id}/tests/{n}")
def get_test(session_id: str, n: int, service: Service, token: Token) -> dict[str, Any]:
    authorize_session(service, token, session_id)
    return service.test_info(session_id, n)


@router.get("/sessions/{session_id}/tests/{n}/events")
def test_events(session_id: str, n: int, service: Service, token: Token) -> StreamingResponse:
    """Server-sent events while the test runs: `state` on every change, `train_metrics`
    for each TRAIN_METRICS line as it is printed, then `done` with the report text.
    Disconnecting stops the stream, not the test."""
    authorize_session(service, token, session_id)
    events = TestEvents(service.db, service.tasks, service.settings.runs_dir, session_id, n)
    return StreamingResponse(
        _server_sent(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _server_sent(events: TestEvents) -> AsyncIterator[str]:
    """Poll the test every half second; a read takes a worker thread only while it reads."""
    while True:
        batch, over = await run_in_threadpool(events.step)
        for name, data in batch:
            yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
        if over:
            return
        await asyncio.sleep(EVENTS_POLL_S)
