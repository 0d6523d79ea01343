"""One tool path: the tool table makes the routes, and every transport gives the same texts."""

from __future__ import annotations

import httpx

from lossgym.agent_api.app import create_app
from lossgym.config import Settings
from lossgym.env.tools import TOOLS, tool_schemas

FILE = "nanoGPT/custom_pretrain.py"


def test_every_tool_in_the_table_has_a_typed_route(settings: Settings) -> None:
    spec = create_app(settings).openapi()
    assert {t["function"]["name"] for t in tool_schemas("openai")} == set(TOOLS)
    for name, tool in TOOLS.items():
        route = spec["paths"][f"/{name}"]["post"]
        body = route.get("requestBody", {}).get("content", {}).get("application/json", {})
        assert tool.args.__name__ in str(body.get("schema")), (name, body)
        params = {p["name"] for p in route.get("parameters", [])}
        assert ("wait" in params) == tool.waits, name


def _two_sessions(base: str, new_session) -> tuple[dict, dict]:
    return new_session(base, "via-route"), new_session(base, "via-call")


def test_routes_and_tools_call_give_the_same_texts(server: str, new_session) -> None:
    by_route, by_call = _two_sessions(server, new_session)
    start, end = by_route["regions"][FILE][0]["start"], by_route["regions"][FILE][0]["end"]
    calls = [
        ("edit", {"op": "replace", "filename": FILE, "start_line": start, "end_line": end,
                  "content": "def compute_loss(logits, targets):\n    return logits.sum()\n"}),
        ("view", {"filename": FILE, "start_line": start, "end_line": start + 2}),
        ("undo", {}),
        ("edit", {"op": "replace", "filename": FILE, "start_line": 1, "end_line": 1,
                  "content": "x = 1\n"}),  # an error: outside every region
        ("submit", {"n": 1}),  # an error: no test yet
    ]  # fmt: skip
    for name, arguments in calls:
        direct = httpx.post(f"{server}/{name}", json=arguments, headers=by_route["headers"])
        generic = httpx.post(
            f"{server}/tools/call",
            json={"name": name, "arguments": arguments},
            headers=by_call["headers"],
        )
        assert direct.status_code == generic.status_code, (name, direct.text, generic.text)
        assert direct.json()["text"] == generic.json()["text"], name
        assert direct.json().get("regions") == generic.json().get("regions"), name


def test_tools_call_refuses_an_unknown_tool_and_bad_arguments(server: str, new_session) -> None:
    session = new_session(server, "bad-call")
    for body, expected in (
        ({"name": "rm", "arguments": {}}, "ERROR: Unknown tool 'rm'. Tools: edit, test"),
        ({"name": "submit", "arguments": {"n": 0}}, "ERROR: Invalid arguments for submit: n:"),
        ({"name": "view", "arguments": {"filename": FILE, "extra": 1}}, "extra"),
    ):
        reply = httpx.post(f"{server}/tools/call", json=body, headers=session["headers"])
        assert reply.status_code == 400, reply.text
        assert reply.json()["text"].startswith(expected) or expected in reply.json()["text"]
