"""The agent's tools over HTTP. Each returns `{ok, text, ...}`; `text` is what the agent sees.

`POST /<tool>` and `POST /tools/call` are both built from the one tool table
(`lossgym.env.tools.TOOLS`) and both dispatch through `EpisodeService.call`:
a tool added to the table appears here, typed, with nothing else to write.
"""

import inspect
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from lossgym.agent_api.deps import Service, SessionId
from lossgym.env.service import ToolResult
from lossgym.env.tools import TOOLS, Tool, tool_description

router = APIRouter(tags=["tools"])

WAIT = Query(True, description="Wait for the result (up to a server-side limit); false: poll.")


def _reply(result: ToolResult) -> JSONResponse:
    body = {"ok": result.ok, "text": result.text, **result.data}
    return JSONResponse(body, status_code=200 if result.ok else 400)


def _tool_route(tool: Tool) -> None:
    """`POST /<tool.name>`, its body typed by the tool's argument model."""
    optional = all(not field.is_required() for field in tool.args.model_fields.values())

    def endpoint(service: Service, session: SessionId, **kw: Any) -> JSONResponse:
        args = kw.get("args") or tool.args()
        return _reply(service.call(session, tool.name, args, wait=kw.get("wait", True)))

    body_type = tool.args | None if optional else tool.args
    params = [
        inspect.Parameter("service", inspect.Parameter.KEYWORD_ONLY, annotation=Service),
        inspect.Parameter("session", inspect.Parameter.KEYWORD_ONLY, annotation=SessionId),
        inspect.Parameter(
            "args",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[body_type, Body()],
            default=None if optional else inspect.Parameter.empty,
        ),
    ]
    if tool.waits:
        params.append(
            inspect.Parameter("wait", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=WAIT)
        )
    endpoint.__signature__ = inspect.Signature(params, return_annotation=JSONResponse)  # type: ignore[attr-defined]
    endpoint.__name__ = tool.name
    summary = tool_description(tool.name).splitlines()[0]
    router.add_api_route(f"/{tool.name}", endpoint, methods=["POST"], summary=summary)


for _tool in TOOLS.values():
    _tool_route(_tool)


@router.post("/preflight")
def preflight(service: Service, session: SessionId) -> JSONResponse:
    """The free pre-flight check of `test` alone: costs no test and is not a tool call."""
    return _reply(service.preflight(session))


@router.get("/tools")
def tools(
    service: Service, format: Literal["openai", "anthropic"] = "openai"
) -> list[dict[str, Any]]:
    return service.schemas(format)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description=f"One of: {', '.join(TOOLS)}.")
    arguments: dict[str, Any] = Field(default_factory=dict)


@router.post("/tools/call")
def call_tool(
    call: ToolCall, service: Service, session: SessionId, wait: bool = WAIT
) -> JSONResponse:
    return _reply(service.call(session, call.name, call.arguments, wait=wait))
