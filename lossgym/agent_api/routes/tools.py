"""The agent's tools over HTTP. Each returns `{ok, text, ...}`; `text` is what the agent sees."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lossgym.agent_api.deps import Service, SessionId
from lossgym.env.service import ToolResult
from lossgym.env.tools import EditArgs, SubmitArgs, TestArgs, UndoArgs, ViewArgs
from lossgym.errors import AgentError

router = APIRouter(tags=["tools"])


def _reply(result: ToolResult) -> JSONResponse:
    body = {"ok": result.ok, "text": result.text, **result.data}
    return JSONResponse(body, status_code=200 if result.ok else 400)


@router.post("/edit")
def edit(args: EditArgs, service: Service, session: SessionId) -> JSONResponse:
    return _reply(service.edit(session, args))


@router.post("/undo")
def undo(service: Service, session: SessionId, args: UndoArgs | None = None) -> JSONResponse:
    return _reply(service.undo(session, args or UndoArgs()))


@router.post("/view")
def view(args: ViewArgs, service: Service, session: SessionId) -> JSONResponse:
    return _reply(service.view(session, args))


@router.post("/test")
def test(
    service: Service,
    session: SessionId,
    args: TestArgs | None = None,
    wait: bool = Query(True, description="Wait for the result (up to a server-side limit)."),
) -> JSONResponse:
    return _reply(service.test(session, wait=wait))


@router.post("/preflight")
def preflight(service: Service, session: SessionId) -> JSONResponse:
    """The free pre-flight check of `test` alone: costs no test and is not a tool call."""
    return _reply(service.preflight(session))


@router.post("/submit")
def submit(args: SubmitArgs, service: Service, session: SessionId) -> JSONResponse:
    return _reply(service.submit(session, args))


@router.get("/tools")
def tools(
    service: Service, format: Literal["openai", "anthropic"] = "openai"
) -> list[dict[str, Any]]:
    return service.schemas(format)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["edit", "test", "submit", "undo", "view"]
    arguments: dict[str, Any] = Field(default_factory=dict)


ARGS = {
    "edit": EditArgs,
    "test": TestArgs,
    "submit": SubmitArgs,
    "undo": UndoArgs,
    "view": ViewArgs,
}


@router.post("/tools/call")
def call_tool(
    call: ToolCall,
    service: Service,
    session: SessionId,
    wait: bool = Query(True, description="For test: wait for the result."),
) -> JSONResponse:
    try:
        args = ARGS[call.name].model_validate(call.arguments)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
            for e in error.errors()
        )
        raise AgentError(f"ERROR: Invalid arguments for {call.name}: {problems}") from None
    if call.name == "test":
        return _reply(service.test(session, wait=wait))
    handler = {
        "edit": service.edit,
        "submit": service.submit,
        "undo": service.undo,
        "view": service.view,
    }
    return _reply(handler[call.name](session, args))  # type: ignore[operator]
