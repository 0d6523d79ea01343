"""The agent's tools over the Model Context Protocol: `/mcp`, streamable HTTP (SPEC §5, §9).

Built from the one tool table (`lossgym.env.tools.TOOLS`): the same five tools,
descriptions and input schemas as `GET /tools`. Every call goes through
`EpisodeService.call` in a worker thread, and its text is exactly the `text`
HTTP returns in the same state (`isError` where HTTP answers 4xx).

Sessions. Each tool call works on one LossGym session, found per request:

1. `Authorization: Bearer <token>` on the client's HTTP requests: the session
   that token opens (from `POST /sessions` or `start_session`). It takes
   precedence; a wrong token is an error result, never a 500.
2. Otherwise the session this MCP session (one `Mcp-Session-Id`) started with
   the extra tool `start_session(agent, task?, profile?, seed?)`, which creates
   one as `POST /sessions` does (the operator key as bearer token allows
   `baseline:` names) and binds it to the MCP session until that ends (DELETE,
   or 30 idle minutes); calling it again binds a new one. Its text is the
   session's description, then its id and token, for re-attaching later.
3. Neither: the text tells the agent to call `start_session` or send its token.

Progress: a `test` call with a `progressToken` gets a progress notification
per state change (`[Test #n] running`) and per TRAIN_METRICS line (the message
is the line) while it waits, read as `GET .../tests/{n}/events` reads them;
the progress value counts the notifications.

Resources `lossgym://tasks/{task}/description` (default profile) and
`lossgym://tasks/{task}/profiles/{profile}/description`, and the prompt `task`
(optional `task`, `profile`), give the description a new session gets.
"""

from __future__ import annotations

import inspect
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, TypeVar

import anyio
from anyio import to_thread
from fastapi import FastAPI
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.session import ServerSession
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.context import RequestContext
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl, BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from lossgym.agent_api.deps import bearer_token, is_operator
from lossgym.agent_api.errors import agent_text
from lossgym.env.service import EpisodeService, ToolResult
from lossgym.env.tools import TOOLS, tool_description, tool_parameters
from lossgym.errors import (
    AgentError,
    Unauthorized,
)
from lossgym.sandbox.events import Event, TestEvents

log = logging.getLogger("lossgym.mcp")

PATH = "/mcp"
START = "start_session"
PROMPT = "task"
POLL_S = 0.5
DESCRIPTION_URI = "lossgym://tasks/{task}/description"
PROFILE_URI = "lossgym://tasks/{task}/profiles/{profile}/description"
_URI = re.compile(r"^lossgym://tasks/(?P<task>[^/]+)(?:/profiles/(?P<profile>[^/]+))?/description$")

NO_SESSION = (
    "ERROR: No LossGym session is attached to this MCP connection. Call start_session"
    "(agent=...) to start one, or connect with the header 'Authorization: Bearer <token>' "
    "of an existing session."
)
TOKEN_SENT = (
    "ERROR: This connection sends a session token (Authorization: Bearer ...), so its tool "
    "calls go to that session; connect without that header to start a new session."
)
INTERNAL = "ERROR: Internal error; the call may not have completed. Try again."
INSTRUCTIONS = (
    "LossGym: rewrite the training loss (compute_loss) of a GPT-2 run, test it with real "
    "training, and submit one test. Call start_session(agent=...) first, or connect with "
    "'Authorization: Bearer <token>' to continue a session. The prompt 'task' and the "
    "resources lossgym://tasks/<task>/description give the task description."
)

T = TypeVar("T")
Context = RequestContext[ServerSession, Any, Any]
Notify = Callable[[float, str], Awaitable[None]]  # (progress, message)


class StartSessionArgs(BaseModel):
    """Start a LossGym session (one episode of a task) and attach this MCP connection to it.

    The reply is the task description with the workspace, then the session id and its
    token: send "Authorization: Bearer <token>" from another connection to continue it.
    """

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=200, description="Your agent or model name.")
    task: str | None = Field(None, max_length=100, description="Task name; default: the first.")
    profile: str | None = Field(
        None, max_length=100, description="Compute profile; default: the task's default."
    )
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Training seed; default: the task's first seed."
    )


async def _in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call in a worker thread; a cancelled caller stops waiting, not the call."""
    return await to_thread.run_sync(partial(func, *args, **kwargs), abandon_on_cancel=True)


def _error_result(exc: Exception) -> ToolResult:
    """The text HTTP answers an exception with (`agent_api.errors`); nothing internal leaks."""
    text = agent_text(exc)
    if text is not None:
        return ToolResult(False, text)
    log.error("MCP tool call failed", exc_info=exc)
    return ToolResult(False, INTERNAL)


def _bearer(ctx: Context) -> str | None:
    request = ctx.request
    if not isinstance(request, Request):
        return None
    try:
        return bearer_token(request.headers.get("authorization"))
    except Unauthorized:
        return None


def _input_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema["properties"].values():
        prop.pop("title", None)
    return schema


def _invalid(name: str, error: ValidationError) -> AgentError:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'arguments'}: {item['msg']}"
        for item in error.errors()
    )
    return AgentError(f"ERROR: Invalid arguments for {name}: {problems}.")


def _started_text(info: dict[str, Any]) -> str:
    token = info["token"]
    return (
        f"{info['description']}\n\n[Session {info['session_id']}] Started; this MCP connection "
        f"now works on it. Token: {token} (to continue from another connection, send the "
        f'header "Authorization: Bearer {token}").'
    )


def _progress_message(event: Event) -> str | None:
    name, data = event
    if name == "train_metrics":
        return str(data["line"])
    if name == "state":
        attempt = f" (attempt {data['attempt']})" if data["attempt"] > 1 else ""
        return f"[Test #{data['test']}] {data['status']}{attempt}"
    return None  # `done`: the report is the call's result


def _latest_test(service: EpisodeService, session_id: str) -> int:
    return max((t["n"] for t in service.session_info(session_id)["tests"]), default=0)


class TestProgress:
    """The live events of the test a `test` call queues, sent as that call's progress."""

    __test__ = False  # not a pytest test class

    def __init__(self, service: EpisodeService, session_id: str, notify: Notify) -> None:
        self.service, self.session_id, self.notify = service, session_id, notify
        self.events: TestEvents | None = None
        self.sent = 0

    async def follow(self, before: int, finished: anyio.Event) -> None:
        """Until the call returns: find its test (the first above `before`) and stream it."""
        while not finished.is_set():
            with anyio.move_on_after(POLL_S):
                await finished.wait()
            if self.events is None:
                latest = await _in_thread(_latest_test, self.service, self.session_id)
                if latest <= before:
                    continue
                await self._open(latest)
            await self._flush()

    async def finish(self, n: int) -> None:
        """After the call, before its result: what test `n` printed since the last look."""
        if self.events is None or self.events.n != n:
            await self._open(n)
        await self._flush()

    async def _open(self, n: int) -> None:
        service = self.service
        self.events = await _in_thread(
            TestEvents, service.db, service.tasks, service.settings.runs_dir, self.session_id, n
        )

    async def _flush(self) -> None:
        assert self.events is not None
        batch, _ = await _in_thread(self.events.step)
        for event in batch:
            message = _progress_message(event)
            if message is not None:
                self.sent += 1
                await self.notify(self.sent, message)


async def _quietly(step: Callable[[], Awaitable[None]]) -> None:
    """Progress is a courtesy: its failure (a closed stream, say) is logged; the call goes on."""
    try:
        await step()
    except Exception:
        log.warning("MCP test progress failed", exc_info=True)


class McpEndpoint:
    """The MCP server of one app run: its tools, resources, prompts and session manager."""

    def __init__(self, service: EpisodeService, version: str) -> None:
        self.service = service
        self.bound: weakref.WeakKeyDictionary[ServerSession, str] = weakref.WeakKeyDictionary()
        self.server: Server[Any, Any] = Server("lossgym", version, instructions=INSTRUCTIONS)
        self.server.list_tools()(self._list_tools)
        self.server.call_tool(validate_input=False)(self._call_tool)
        self.server.list_resources()(self._list_resources)
        self.server.list_resource_templates()(self._list_templates)
        self.server.read_resource()(self._read_resource)
        self.server.list_prompts()(self._list_prompts)
        self.server.get_prompt()(self._get_prompt)
        self.manager = StreamableHTTPSessionManager(
            self.server, max_request_body_size=service.settings.max_request_bytes
        )

    def run(self) -> AbstractAsyncContextManager[None]:
        """The session manager's run; enter it once, in the app's lifespan."""
        return self.manager.run()

    # ── Tools ───────────────────────────────────────────────────────────────

    async def _list_tools(self) -> list[types.Tool]:
        tools = [
            types.Tool(name=n, description=tool_description(n), inputSchema=tool_parameters(n))
            for n in TOOLS
        ]
        start = StartSessionArgs
        doc = inspect.cleandoc(start.__doc__ or START)
        tools.append(types.Tool(name=START, description=doc, inputSchema=_input_schema(start)))
        return tools

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        ctx = self.server.request_context
        try:
            result = await self._dispatch(ctx, name, arguments)
        except Exception as exc:
            result = _error_result(exc)
        text = types.TextContent(type="text", text=result.text)
        return types.CallToolResult(content=[text], isError=not result.ok)

    async def _dispatch(self, ctx: Context, name: str, arguments: dict[str, Any]) -> ToolResult:
        token = _bearer(ctx)
        operator = token is not None and is_operator(self.service, token)
        if operator:
            token = None  # the operator key opens no session
        if name == START:
            return await self._start_session(ctx, arguments, token, operator)
        if token is not None:
            session_id = await _in_thread(self.service.session_for_token, token)
        elif ctx.session in self.bound:
            session_id = self.bound[ctx.session]
        else:
            raise AgentError(NO_SESSION)
        if name == "test":
            return await self._test(ctx, session_id, arguments)
        return await _in_thread(self.service.call, session_id, name, arguments, wait=True)

    async def _start_session(
        self, ctx: Context, arguments: dict[str, Any], token: str | None, operator: bool
    ) -> ToolResult:
        if token is not None:
            raise AgentError(TOKEN_SENT)
        try:
            args = StartSessionArgs.model_validate(arguments)
        except ValidationError as error:
            raise _invalid(START, error) from None
        task = args.task or await self._default_task()
        info = await _in_thread(
            self.service.create_session, task, args.agent, args.profile, args.seed, operator
        )
        self.bound[ctx.session] = info["session_id"]
        return ToolResult(True, _started_text(info), {"session_id": info["session_id"]})

    async def _test(self, ctx: Context, session_id: str, arguments: dict[str, Any]) -> ToolResult:
        """`test`, waiting as POST /test does; with a progressToken, its events as progress."""
        call = partial(self.service.call, session_id, "test", arguments, wait=True)
        token = ctx.meta.progressToken if ctx.meta is not None else None
        if token is None:
            return await _in_thread(call)

        async def notify(progress: float, message: str) -> None:
            await ctx.session.send_progress_notification(
                token, progress, message=message, related_request_id=str(ctx.request_id)
            )

        progress = TestProgress(self.service, session_id, notify)
        before = await _in_thread(_latest_test, self.service, session_id)
        finished = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(_quietly, partial(progress.follow, before, finished))
            try:
                result = await _in_thread(call)
            except Exception as exc:
                result = _error_result(exc)
            finally:
                finished.set()
        if isinstance(result.data.get("test"), int):
            await _quietly(partial(progress.finish, result.data["test"]))
        return result

    # ── Task descriptions: resources and a prompt ───────────────────────────

    async def _default_task(self) -> str:
        names = await _in_thread(self.service.tasks.names)
        if not names:
            raise AgentError("ERROR: No tasks are installed on this server.")
        return names[0]

    async def _description(self, task: str | None, profile: str | None) -> str:
        """The description a new session gets; a problem is an MCP error with HTTP's text."""
        try:
            task = task or await self._default_task()
            return await _in_thread(self.service.task_description, task, profile)
        except Exception as exc:
            code = types.INVALID_PARAMS if isinstance(exc, AgentError) else types.INTERNAL_ERROR
            raise McpError(types.ErrorData(code=code, message=_error_result(exc).text)) from None

    async def _list_resources(self) -> list[types.Resource]:
        names = await _in_thread(self.service.tasks.names)
        return [
            types.Resource(
                uri=AnyUrl(DESCRIPTION_URI.format(task=name)),
                name=f"{name} description",
                description=f"Task {name} (default profile): what an agent reads first.",
                mimeType="text/plain",
            )
            for name in names
        ]

    async def _list_templates(self) -> list[types.ResourceTemplate]:
        about = "A task's description for one of its compute profiles."
        return [
            types.ResourceTemplate(
                uriTemplate=PROFILE_URI, name="profile", description=about, mimeType="text/plain"
            )
        ]

    async def _read_resource(self, uri: AnyUrl) -> Iterable[ReadResourceContents]:
        found = _URI.match(str(uri))
        if found is None:
            message = f"Unknown resource {uri}; use {DESCRIPTION_URI} or {PROFILE_URI}."
            raise McpError(types.ErrorData(code=types.INVALID_PARAMS, message=message))
        text = await self._description(found["task"], found["profile"])
        return [ReadResourceContents(text, "text/plain")]

    async def _list_prompts(self) -> list[types.Prompt]:
        arguments = [
            types.PromptArgument(name="task", description="Task name; default: the first."),
            types.PromptArgument(name="profile", description="Profile; default: the task's."),
        ]
        about = "The task description and workspace an agent reads at the start of a session."
        return [types.Prompt(name=PROMPT, description=about, arguments=arguments)]

    async def _get_prompt(
        self, name: str, arguments: dict[str, str] | None
    ) -> types.GetPromptResult:
        if name != PROMPT:
            message = f"Unknown prompt {name!r}; the prompt is {PROMPT!r}."
            raise McpError(types.ErrorData(code=types.INVALID_PARAMS, message=message))
        arguments = arguments or {}
        text = await self._description(arguments.get("task"), arguments.get("profile"))
        content = types.TextContent(type="text", text=text)
        return types.GetPromptResult(
            description="The task description at session start.",
            messages=[types.PromptMessage(role="user", content=content)],
        )


class _Route:
    """The ASGI app at `/mcp`: each request goes to the running app's session manager."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint: McpEndpoint = scope["app"].state.mcp
        await endpoint.manager.handle_request(scope, receive, send)


def install(app: FastAPI) -> None:
    """Serve `/mcp` itself: a route, not a mount, so nothing redirects to `/mcp/`."""
    app.router.add_route(PATH, _Route(), methods=["GET", "POST", "DELETE"], include_in_schema=False)
