"""Bad input over real HTTP: every case is a 4xx with a clear text and changes nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import OPERATOR_KEY

FILE = "nanoGPT/custom_pretrain.py"


def _regions(session: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    (a, b), (c, d) = [(r["start"], r["end"]) for r in session["regions"][FILE]]
    return (a, b), (c, d)


def _snapshot(base: str, headers: dict) -> str:
    reply = httpx.post(f"{base}/view", json={"filename": FILE}, headers=headers)
    assert reply.status_code == 200, reply.text
    return reply.json()["text"]


def test_edit_errors_are_4xx_and_change_nothing(server: str, new_session) -> None:
    session = new_session(server)
    headers = session["headers"]
    (a, b), (c, d) = _regions(session)
    before = _snapshot(server, headers)
    edit = {"op": "replace", "filename": FILE, "content": "x = 1\n"}
    cases = {
        "outside": dict(edit, start_line=1, end_line=2),
        "partly outside": dict(edit, start_line=a - 1, end_line=a),
        "spanning both": dict(edit, start_line=a, end_line=d),
        "inverted": dict(edit, start_line=b, end_line=a),
        "past the end": dict(edit, start_line=100_000, end_line=100_001),
        "zero": dict(edit, start_line=0, end_line=a),
        "dot-dot": dict(edit, filename="../etc/passwd", start_line=a, end_line=b),
        "absolute": dict(edit, filename="/etc/passwd", start_line=a, end_line=b),
        "unknown file": dict(edit, filename="nanoGPT/other.py", start_line=a, end_line=b),
    }
    for name, body in cases.items():
        reply = httpx.post(f"{server}/edit", json=body, headers=headers)
        assert reply.status_code == 400, (name, reply.text)
        text = reply.json()["text"]
        assert text.startswith("ERROR:"), (name, text)
    # Errors about line ranges name the editable ranges so the agent can retry.
    reply = httpx.post(f"{server}/edit", json=cases["outside"], headers=headers)
    assert f"{a}–{b}" in reply.json()["text"] and f"{c}–{d}" in reply.json()["text"]
    assert _snapshot(server, headers) == before


def test_malformed_requests(server: str, new_session) -> None:
    session = new_session(server)
    headers = session["headers"]
    (a, b), _ = _regions(session)
    before = _snapshot(server, headers)
    json_headers = dict(headers, **{"Content-Type": "application/json"})

    huge = {
        "op": "replace",
        "filename": FILE,
        "start_line": a,
        "end_line": b,
        "content": "#" * 1_000_000,
    }
    reply = httpx.post(f"{server}/edit", json=huge, headers=headers)
    assert reply.status_code == 413 and "too large" in reply.json()["text"]

    reply = httpx.post(f"{server}/edit", content=b'{"op": "replace", ', headers=json_headers)
    assert reply.status_code == 422 and reply.json()["text"].startswith("ERROR: Invalid request")

    reply = httpx.post(f"{server}/edit", content=b'{"op": "\xff\xfe"}', headers=json_headers)
    assert reply.status_code == 400 and reply.json()["text"].startswith("ERROR:")

    reply = httpx.post(
        f"{server}/edit", json={"op": "delete", "filename": FILE, "content": ""}, headers=headers
    )
    assert reply.status_code == 422 and "op" in reply.json()["text"]

    reply = httpx.post(f"{server}/edit", json={"op": "replace", "filename": FILE}, headers=headers)
    assert reply.status_code == 422 and "start_line" in reply.json()["text"]

    reply = httpx.post(f"{server}/submit", json={"n": "one"}, headers=headers)
    assert reply.status_code == 422
    assert _snapshot(server, headers) == before


def test_tokens_and_unknown_sessions(server: str, new_session) -> None:
    mine, theirs = new_session(server, "a"), new_session(server, "b")

    reply = httpx.post(f"{server}/view", json={"filename": FILE})
    assert reply.status_code == 401 and "Bearer" in reply.json()["text"]
    reply = httpx.post(
        f"{server}/view", json={"filename": FILE}, headers={"Authorization": "Bearer nope"}
    )
    assert reply.status_code == 401

    reply = httpx.get(f"{server}/sessions/{theirs['session_id']}", headers=mine["headers"])
    assert reply.status_code == 401
    reply = httpx.get(f"{server}/sessions/{mine['session_id']}", headers=mine["headers"])
    assert reply.status_code == 200 and reply.json()["tests_used"] == 0

    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    reply = httpx.get(f"{server}/sessions/does-not-exist", headers=operator)
    assert reply.status_code == 404 and "Unknown session" in reply.json()["text"]
    reply = httpx.get(f"{server}/sessions/{mine['session_id']}/tests/1", headers=mine["headers"])
    assert reply.status_code == 404

    reply = httpx.post(f"{server}/sessions", json={"task": "no-such-task", "agent": "x"})
    assert reply.status_code == 400 and "no-such-task" in reply.json()["text"]
    reply = httpx.post(
        f"{server}/sessions", json={"task": "llm-pretrain-loss", "agent": "x", "profile": "huge"}
    )
    assert reply.status_code == 400 and "tiny-cpu" in reply.json()["text"]


@pytest.mark.parametrize("content", ["def compute_loss(logits, targets:\n    return 0\n\n"])
def test_preflight_syntax_error_costs_no_test(server: str, new_session, content: str) -> None:
    session = new_session(server)
    headers = session["headers"]
    (a, b), _ = _regions(session)
    edit = {"op": "replace", "filename": FILE, "start_line": a, "end_line": b, "content": content}
    assert httpx.post(f"{server}/edit", json=edit, headers=headers).status_code == 200
    reply = httpx.post(f"{server}/test", headers=headers, params={"wait": "false"})
    assert reply.status_code == 400
    assert "Pre-flight check failed (no test was used)" in reply.json()["text"]
    assert f"line {a}" in reply.json()["text"]
    state = httpx.get(f"{server}/sessions/{session['session_id']}", headers=headers).json()
    assert state["tests_used"] == 0


def test_baseline_names_are_reserved_for_the_operator(server: str) -> None:
    body = {"task": "llm-pretrain-loss", "agent": "baseline:cross_entropy"}
    reply = httpx.post(f"{server}/sessions", json=body)
    assert reply.status_code == 403 and "reserved" in reply.json()["text"]
    reply = httpx.post(f"{server}/sessions", json=body, headers={"Authorization": "Bearer wrong"})
    assert reply.status_code == 403
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    assert httpx.post(f"{server}/sessions", json=body, headers=operator).status_code == 201


def test_preflight_alone_checks_without_spending_or_recording(server: str, new_session) -> None:
    session = new_session(server)
    headers = session["headers"]
    passed = httpx.post(f"{server}/preflight", headers=headers, timeout=120)
    assert passed.status_code == 200 and passed.json()["text"].startswith("OK: Pre-flight check")
    (a, b), _ = _regions(session)
    body = "def compute_loss(logits, targets):\n    return open('/etc/passwd')\n\n"
    edit = {"op": "replace", "filename": FILE, "start_line": a, "end_line": b, "content": body}
    assert httpx.post(f"{server}/edit", json=edit, headers=headers).status_code == 200
    refused = httpx.post(f"{server}/preflight", headers=headers, timeout=120)
    assert refused.status_code == 400
    assert refused.json()["text"].startswith("ERROR: Pre-flight check failed (no test was used)")
    assert f"line {a + 1}" in refused.json()["text"]
    assert httpx.post(f"{server}/preflight").status_code == 401
    state = httpx.get(f"{server}/sessions/{session['session_id']}", headers=headers).json()
    assert state["tests_used"] == 0 and state["steps_used"] == 1, state  # only the edit counted
