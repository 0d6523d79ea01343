"""`/mcp` through the official MCP SDK client against a live server: the same tools, the
same texts as HTTP, sessions by `start_session` or bearer token, and test progress."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import CallToolResult

from lossgym.agent_api.mcp import NO_SESSION, TOKEN_SENT
from lossgym.config import Settings
from lossgym.env.tools import TOOLS, tool_schemas
from tests.conftest import OPERATOR_KEY, REPO, fast_tasks_dir

FILE = "nanoGPT/custom_pretrain.py"
TASK = "llm-pretrain-loss"
STARTED = re.compile(r"\n\n\[Session (\w+)\] Started; .* Token: (\S+) \(to continue")
STEP = re.compile(r"^TRAIN_METRICS: step=(\d+), ")
OUTSIDE = {"op": "replace", "filename": FILE, "start_line": 1, "end_line": 1, "content": "x\n"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def _client(base: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    """An initialized SDK client session on `base/mcp`, sending `token` as bearer if given."""
    headers = _bearer(token) if token else {}
    timeout = httpx.Timeout(30.0, read=600.0)
    async with (
        httpx.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(f"{base}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _text(result: CallToolResult) -> str:
    assert len(result.content) == 1 and result.content[0].type == "text", result
    return result.content[0].text


async def _http(base: str, path: str, token: str, body: dict | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60.0) as http:
        return await http.post(f"{base}{path}", json=body, headers=_bearer(token))


async def _same_as_http(
    client: ClientSession, base: str, token: str, name: str, args: dict, undo: bool = False, **kw
) -> CallToolResult:
    """Call `name` over MCP, then its HTTP route in the same state: the texts must agree.

    `undo` first takes the MCP call back over HTTP, so the route meets the same state."""
    result = await client.call_tool(name, args, **kw)
    if undo:
        assert (await _http(base, "/undo", token, {"n": 1})).status_code == 200
    reply = await _http(base, f"/{name}", token, args)
    assert reply.status_code == (400 if result.isError else 200), reply.text
    assert reply.json()["text"] == _text(result), name
    return result


def _run(test: Callable[[], Awaitable[None]]) -> None:
    anyio.run(test)


def test_mcp_answers_at_exactly_slash_mcp(server: str) -> None:
    accept = {"Accept": "application/json, text/event-stream"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    opened = httpx.post(f"{server}/mcp", json=init, headers=accept)
    assert opened.status_code == 200, opened.text  # not a 307 to /mcp/
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], **accept}
    assert '"serverInfo":{"name":"lossgym"' in opened.text
    assert httpx.get(f"{server}/mcp", headers={"Accept": "text/event-stream"}).status_code == 400
    huge = httpx.post(f"{server}/mcp", content=b"x" * 300_000, headers=session)
    assert huge.status_code == 413 and "Request body too large" in huge.json()["text"]
    assert httpx.delete(f"{server}/mcp", headers=session).status_code == 200
    assert "/mcp" not in httpx.get(f"{server}/openapi.json").json()["paths"]


def test_tools_resources_and_prompt_match_the_http_api(server: str) -> None:
    fresh = httpx.post(f"{server}/sessions", json={"task": TASK, "agent": "http"}).json()
    other = httpx.post(
        f"{server}/sessions", json={"task": TASK, "agent": "http", "profile": "gpt2-124m"}
    ).json()

    async def check() -> None:
        async with _client(server) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert list(tools) == [*TOOLS, "start_session"]
            for schema in tool_schemas("anthropic"):
                tool = tools[schema["name"]]
                assert tool.inputSchema == schema["input_schema"], tool.name
                assert tool.description == schema["description"], tool.name
            assert tools["start_session"].inputSchema["required"] == ["agent"]

            uris = [str(r.uri) for r in (await client.list_resources()).resources]
            assert uris == [f"lossgym://tasks/{TASK}/description"]
            read = await client.read_resource(uris[0])
            assert read.contents[0].text == fresh["description"]
            templates = (await client.list_resource_templates()).resourceTemplates
            uri = templates[0].uriTemplate.format(task=TASK, profile="gpt2-124m")
            assert (await client.read_resource(uri)).contents[0].text == other["description"]
            with pytest.raises(McpError, match="ERROR: Unknown profile 'nope'"):
                await client.read_resource(
                    templates[0].uriTemplate.format(task=TASK, profile="nope")
                )

            assert [p.name for p in (await client.list_prompts()).prompts] == ["task"]
            prompt = await client.get_prompt("task", {"profile": "gpt2-124m"})
            assert prompt.messages[0].content.text == other["description"]
            default = await client.get_prompt("task", {})
            assert default.messages[0].content.text == fresh["description"]

    _run(check)


def test_sessions_by_start_session_or_bearer_token(server: str, new_session) -> None:
    http_session = new_session(server, "http-made")
    token = http_session["token"]
    view = {"filename": FILE, "start_line": 225, "end_line": 232}

    async def without_session() -> None:
        async with _client(server) as client:
            missing = await client.call_tool("view", view)
            assert missing.isError and _text(missing) == NO_SESSION
            bad = await client.call_tool("start_session", {"task": TASK})
            assert bad.isError and _text(bad).startswith(
                "ERROR: Invalid arguments for start_session: agent: Field required"
            )
            reserved = await client.call_tool("start_session", {"agent": "baseline:x"})
            body = {"task": TASK, "agent": "baseline:x"}
            http_reserved = httpx.post(f"{server}/sessions", json=body)
            assert http_reserved.status_code == 403
            assert reserved.isError and _text(reserved) == http_reserved.json()["text"]

            started = await client.call_tool("start_session", {"agent": "mcp-made"})
            assert not started.isError
            prefix = http_session["description"] + "\n\n[Session "
            assert _text(started).startswith(prefix)
            session_id, own_token = STARTED.search(_text(started)).groups()
            mcp_view = _text(await client.call_tool("view", view))
            http_view = await _http(server, "/view", own_token, view)
            assert http_view.json()["text"] == mcp_view
            info = httpx.get(f"{server}/sessions/{session_id}", headers=_bearer(own_token))
            assert info.json()["agent"] == "mcp-made" and info.json()["steps_used"] == 2

        async with _client(server, "wrong-token") as client:
            wrong = await client.call_tool("view", view)
            http_wrong = await _http(server, "/view", "wrong-token", view)
            assert http_wrong.status_code == 401
            assert wrong.isError and _text(wrong) == http_wrong.json()["text"]

        async with _client(server, OPERATOR_KEY) as client:
            operator = await client.call_tool("start_session", {"agent": "baseline:x"})
            assert not operator.isError, _text(operator)

    async def by_token() -> None:
        (a, b), _ = [(r["start"], r["end"]) for r in http_session["regions"][FILE]]
        broken = dict(OUTSIDE, start_line=a, end_line=b, content="def compute_loss(x:\n")
        progress: list[str | None] = []

        async def on_progress(_: float, __: float | None, message: str | None) -> None:
            progress.append(message)

        async with _client(server, token) as client:
            refused = await client.call_tool("start_session", {"agent": "again"})
            assert refused.isError and _text(refused) == TOKEN_SENT
            await _same_as_http(client, server, token, "view", view)
            await _same_as_http(client, server, token, "edit", OUTSIDE)
            await _same_as_http(client, server, token, "edit", broken, undo=True)
            failed = await _same_as_http(
                client, server, token, "test", {}, progress_callback=on_progress
            )
            assert "Pre-flight check failed (no test was used)" in _text(failed)
            assert progress == []  # no test was queued
        state = httpx.get(f"{server}/sessions/{http_session['session_id']}", headers=_bearer(token))
        assert state.json()["tests_used"] == 0 and state.json()["steps_used"] == 9

    _run(without_session)
    _run(by_token)


@pytest.fixture
def settings(settings: Settings, tmp_path) -> Settings:
    """tiny-cpu cut to 12 iterations (only the slow test trains; the others just read it)."""
    tasks = fast_tasks_dir(tmp_path, config={"max_iters": 12, "eval_interval": 2})
    return settings.model_copy(update={"tasks_dir": tasks})


@pytest.mark.slow
def test_a_session_over_mcp_with_test_progress(server_with_worker: str) -> None:
    base = server_with_worker
    edit = json.loads((REPO / "examples" / "edit_polyloss.json").read_text())
    view = {"filename": FILE, "start_line": edit["start_line"] - 3, "end_line": edit["end_line"]}
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def session() -> None:
        async with _client(base) as client:
            started = await client.call_tool("start_session", {"agent": "mcp-e2e", "seed": 1337})
            session_id, token = STARTED.search(_text(started)).groups()
            await _same_as_http(client, base, token, "view", view)
            edited = await _same_as_http(client, base, token, "edit", edit, undo=True)
            assert _text(edited).startswith(f"OK: Replaced lines {edit['start_line']}..")
            await _same_as_http(client, base, token, "edit", OUTSIDE)

            tested = await client.call_tool("test", {}, progress_callback=on_progress)
            assert not tested.isError and _text(tested).startswith("[Test #1] ("), _text(tested)
            info = httpx.get(f"{base}/sessions/{session_id}/tests/1", headers=_bearer(token))
            assert info.json()["status"] == "done" and info.json()["text"] == _text(tested)

            submitted = await _same_as_http(client, base, token, "submit", {"n": 1})
            assert "[submit] Finalized test #1 as final." in _text(submitted)
            ended = await client.call_tool("view", view)
            http_ended = await _http(base, "/view", token, view)
            assert http_ended.status_code == 409
            assert ended.isError and _text(ended) == http_ended.json()["text"]
        _check_progress(progress, _text(tested))

    _run(session)


def _check_progress(progress: list[tuple[float, float | None, str | None]], report: str) -> None:
    values = [value for value, _, _ in progress]
    assert values == sorted(set(values)), values  # strictly increasing
    messages = [message or "" for _, _, message in progress]
    assert messages[0].startswith("[Test #1] "), messages
    assert "[Test #1] running" in messages and "[Test #1] done" in messages, messages
    lines = [m for m in messages if m.startswith("TRAIN_METRICS")]
    steps = [int(STEP.match(line).group(1)) for line in lines]
    assert steps and steps == sorted(steps) and steps[-1] == 12, steps
    # Streamed while training ran: a look reports a state change before the new lines.
    assert (
        messages.index("[Test #1] running")
        < messages.index(lines[0])
        < messages.index("[Test #1] done")
    )
    shown = [line for line in report.splitlines() if line.startswith("TRAIN_METRICS")]
    assert shown and lines[-len(shown) :] == shown  # the report shows the last ones
