"""`POST /sessions/{id}/usage` over real HTTP: the contract `lossgym agent` codes against."""

from __future__ import annotations

import httpx

from lossgym.env.service import EpisodeService
from lossgym.store.db import Database
from tests.conftest import OPERATOR_KEY
from tests.leaderboard.lbtest_helpers import end

OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
TOTALS = {
    "model": "claude-sonnet-x",
    "input_tokens": 1000,
    "output_tokens": 250,
    "requests": 3,
    "cost_usd": 0.0123,
    "transcript": "agent-runs/abc.jsonl",
}


def post(base: str, sid: str, body: object, headers: dict | None) -> httpx.Response:
    return httpx.post(f"{base}/sessions/{sid}/usage", json=body, headers=headers or {})


def test_usage_is_set_read_back_and_refused_when_it_shrinks(server: str, new_session) -> None:
    session = new_session(server, "usage-http")
    sid, headers = session["session_id"], session["headers"]
    state = httpx.get(f"{server}/sessions/{sid}", headers=headers).json()
    assert state["usage"] is None

    reply = post(server, sid, TOTALS, headers)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["ok"] is True and set(body) == {"ok", "text", "usage"}
    usage = body["usage"]
    assert set(usage) == {*TOTALS, "updated_at"}
    assert {k: usage[k] for k in TOTALS} == TOTALS
    assert post(server, sid, TOTALS, headers).json()["usage"]["requests"] == 3  # a retry

    state = httpx.get(f"{server}/sessions/{sid}", headers=headers).json()
    assert state["usage"]["model"] == "claude-sonnet-x" and state["steps_used"] == 0
    public = httpx.get(f"{server}/api/sessions/{sid}").json()
    assert public["redacted"] is True and public["usage"] is None  # running: summary only
    full = httpx.get(f"{server}/api/sessions/{sid}", headers=OPERATOR).json()
    assert full["usage"]["input_tokens"] == 1000

    shrunk = post(server, sid, {**TOTALS, "output_tokens": 10}, headers)
    assert shrunk.status_code == 409
    assert shrunk.json()["text"].startswith("ERROR: Usage totals only grow: output_tokens 10")
    assert post(server, sid, {**TOTALS, "cost_usd": None}, headers).status_code == 409


def test_tokens_sessions_and_bad_bodies(server: str, new_session) -> None:
    mine, theirs = new_session(server, "a"), new_session(server, "b")
    sid = mine["session_id"]
    assert post(server, sid, TOTALS, None).status_code == 401
    assert post(server, sid, TOTALS, {"Authorization": "Bearer wrong"}).status_code == 401
    assert post(server, sid, TOTALS, theirs["headers"]).status_code == 401
    unknown = post(server, "no-such-session", TOTALS, OPERATOR)
    assert unknown.status_code == 404 and "Unknown session" in unknown.json()["text"]

    bad = [
        ({**TOTALS, "input_tokens": -1}, "input_tokens"),
        ({**TOTALS, "requests": True}, "requests"),
        ({**TOTALS, "output_tokens": 2.5}, "output_tokens"),
        ({**TOTALS, "input_tokens": 10**30}, "input_tokens"),
        ({**TOTALS, "cost_usd": -0.5}, "cost_usd"),
        ({**TOTALS, "model": ""}, "model"),
        ({**TOTALS, "model": "m" * 201}, "model"),
        ({**TOTALS, "transcript": "t" * 501}, "transcript"),
        ({k: v for k, v in TOTALS.items() if k != "model"}, "model"),
        ({**TOTALS, "tokens": 5}, "tokens"),
        (["not", "an", "object"], "body"),
    ]
    for body, field in bad:
        reply = post(server, sid, body, mine["headers"])
        assert reply.status_code == 422, (body, reply.text)
        text = reply.json()["text"]
        assert text.startswith("ERROR: Invalid request.") and field in text, text
    json_headers = {**mine["headers"], "Content-Type": "application/json"}
    nan = b'{"model": "m", "input_tokens": 1, "output_tokens": 1, "requests": 1, "cost_usd": NaN}'
    for content, field in ((nan, "cost_usd"), (b"{not json", "JSON")):
        raw = httpx.post(f"{server}/sessions/{sid}/usage", content=content, headers=json_headers)
        assert raw.status_code == 422 and field in raw.json()["text"], raw.text
    state = httpx.get(f"{server}/sessions/{sid}", headers=mine["headers"]).json()
    assert state["usage"] is None  # nothing bad was stored


def test_usage_after_the_session_ended_is_public(
    server: str, new_session, service: EpisodeService, db: Database
) -> None:
    session = new_session(server, "finished-agent")
    sid = session["session_id"]
    end(service, db, sid)
    reply = post(server, sid, {**TOTALS, "cost_usd": None}, session["headers"])
    assert reply.status_code == 200, reply.text
    public = httpx.get(f"{server}/api/sessions/{sid}").json()
    assert public["redacted"] is False and public["usage"]["cost_usd"] is None
    page = httpx.get(f"{server}/board/{sid}").text
    assert 'class="usage-model">claude-sonnet-x<' in page
    assert 'class="usage-tokens">1000 · 250<' in page
    assert 'class="usage-requests">3<' in page and 'class="usage-cost">\u2014<' in page
