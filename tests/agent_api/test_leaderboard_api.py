"""The public leaderboard JSON/CSV and session records over real HTTP (no worker).

Test results are written into the database as the worker would write them.
"""

from __future__ import annotations

import csv
import io
import json

import httpx

from lossgym.env.service import EpisodeService
from lossgym.store.db import Database
from tests.conftest import OPERATOR_KEY
from tests.leaderboard.lbtest_helpers import FILE, finish_test, primary_key

OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
MARKER = "SECRET_LOSS_IDEA"
HIDDEN = "piqa_acc_gpt-tiny"


def _edit_compute_loss(base: str, session: dict) -> None:
    first = session["regions"][FILE][0]
    start, end = first["start"], first["end"]
    content = (
        "def compute_loss(logits, targets):\n"
        f"    # {MARKER}\n"
        "    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), "
        "ignore_index=-1)\n\n"
    )
    body = {"op": "replace", "filename": FILE, "start_line": start, "end_line": end}
    reply = httpx.post(
        f"{base}/edit", json={**body, "content": content}, headers=session["headers"]
    )
    assert reply.status_code == 200, reply.text


def _tested_session(base: str, new_session, service: EpisodeService, db: Database) -> dict:
    """A running session with an edit and one finished test whose metrics include a hidden one."""
    session = new_session(base, agent="secretive-agent")
    _edit_compute_loss(base, session)
    # The pre-flight smoke run answers this request: it may take a while on a busy machine.
    reply = httpx.post(
        f"{base}/test", params={"wait": "false"}, headers=session["headers"], timeout=60
    )
    assert reply.status_code == 200, reply.text
    metrics = {primary_key(service): 5.4321, HIDDEN: 61.5}
    finish_test(service, db, session["session_id"], 1, metrics)
    return session


def _get(base: str, path: str, headers: dict | None = None) -> httpx.Response:
    reply = httpx.get(f"{base}{path}", headers=headers or {})
    assert reply.status_code == 200, reply.text
    return reply


def test_running_session_is_only_summarised_without_the_operator_key(
    server: str, new_session, service: EpisodeService, db: Database
) -> None:
    session = _tested_session(server, new_session, service, db)
    sid = session["session_id"]
    for headers in ({}, session["headers"], {"Authorization": "Bearer wrong"}):
        record = _get(server, f"/api/sessions/{sid}", headers).json()
        dumped = json.dumps(record)
        assert record["redacted"] is True and record["status"] == "active"
        assert record["agent"] == "secretive-agent" and record["tests"] == [
            {"n": 1, "status": "done"}
        ]
        for secret in (MARKER, "compute_loss", "val_loss", "piqa", "5.4321", "OK: Replaced"):
            assert secret not in dumped, secret
        assert "transcript" not in record and "diff" not in dumped
        board = _get(server, "/api/leaderboard", headers).json()
        row = next(r for r in board["rows"] if r["session_id"] == sid)
        assert row["status"] == "running" and row["metrics"] == {} and row["value"] is None
        assert HIDDEN not in json.dumps(board) and "5.4321" not in json.dumps(board)


def test_operator_key_sees_a_running_session_in_full(
    server: str, new_session, service: EpisodeService, db: Database
) -> None:
    session = _tested_session(server, new_session, service, db)
    record = _get(server, f"/api/sessions/{session['session_id']}", OPERATOR).json()
    assert record["redacted"] is False
    assert [c["tool"] for c in record["transcript"]] == ["edit", "test"]
    assert MARKER in record["transcript"][0]["arguments"]["content"]
    assert MARKER in record["transcript"][0]["text"]
    test = record["tests"][0]
    assert f"+    # {MARKER}" in test["diff"] and test["diff"].startswith(f"--- a/{FILE}")
    assert test["metrics"][HIDDEN] == 61.5 and test["stages"][0]["curve"]


def test_after_submit_the_session_is_public_in_full(
    server: str, new_session, service: EpisodeService, db: Database
) -> None:
    session = _tested_session(server, new_session, service, db)
    sid = session["session_id"]
    reply = httpx.post(f"{server}/submit", json={"n": 1}, headers=session["headers"])
    assert reply.status_code == 200 and "piqa" not in reply.json()["text"]
    record = _get(server, f"/api/sessions/{sid}").json()
    assert record["redacted"] is False and record["final"] == {
        "test": 1, "kind": "submitted", "auto_submitted": False
    }  # fmt: skip
    assert MARKER in record["tests"][0]["diff"]
    assert record["tests"][0]["metrics"][HIDDEN] == 61.5
    assert all("piqa" not in call["text"] for call in record["transcript"])
    board = _get(server, "/api/leaderboard?task=llm-pretrain-loss&profile=tiny-cpu").json()
    row = next(r for r in board["rows"] if r["session_id"] == sid)
    assert row["status"] == "ranked" and row["rank"] == 1 and row["value"] == 5.4321
    assert row["metrics"][HIDDEN] == 61.5
    assert set(board) >= {
        "task",
        "profile",
        "metric",
        "direction",
        "noise_rule",
        "rows",
        "baselines",
    }


def test_csv_export_parses(server: str, new_session, service: EpisodeService, db: Database) -> None:
    session = _tested_session(server, new_session, service, db)
    httpx.post(f"{server}/submit", json={"n": 1}, headers=session["headers"])
    reply = _get(server, "/api/leaderboard.csv")
    assert reply.headers["content-type"].startswith("text/csv")
    assert "leaderboard-llm-pretrain-loss-tiny-cpu.csv" in reply.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert len(rows) == 1 and rows[0]["session_id"] == session["session_id"]
    assert float(rows[0][primary_key(service)]) == 5.4321 and rows[0][HIDDEN] == "61.5"


def test_unknown_task_profile_session_are_404(server: str) -> None:
    for path in (
        "/api/leaderboard?task=nope",
        "/api/leaderboard?profile=nope",
        "/api/leaderboard.csv?task=nope",
        "/api/sessions/nope",
    ):
        reply = httpx.get(f"{server}{path}")
        assert reply.status_code == 404, (path, reply.text)
        body = reply.json()
        assert body["ok"] is False and body["text"].startswith("ERROR: "), body
