"""Token usage per session: one record, set by cumulative totals that only grow."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from lossgym.env.service import EpisodeService
from lossgym.env.usage import UsageReport
from lossgym.errors import Conflict, NotFound
from lossgym.store import queries
from lossgym.store.db import Database
from lossgym.store.models import UsageRow
from tests.leaderboard.lbtest_helpers import TASK, end

FIRST = {"model": "claude-x", "input_tokens": 1200, "output_tokens": 300, "requests": 4}


def report(**changes: object) -> UsageReport:
    return UsageReport.model_validate({**FIRST, "cost_usd": 0.25, **changes})


def rows(db: Database) -> int:
    with db.read() as tx:
        return tx.scalar(select(func.count()).select_from(UsageRow)) or 0


def test_totals_are_set_idempotently_and_only_grow(service: EpisodeService, db: Database) -> None:
    sid = service.create_session(TASK, "usage-agent")["session_id"]
    assert service.usage.get(sid) is None and service.session_info(sid)["usage"] is None

    reply = service.usage.record(sid, report(transcript="runs/agent-1.jsonl"))
    assert reply["ok"] is True and reply["text"].startswith("Usage recorded: claude-x")
    usage = reply["usage"]
    assert {k: usage[k] for k in (*FIRST, "cost_usd", "transcript")} == {
        **FIRST, "cost_usd": 0.25, "transcript": "runs/agent-1.jsonl",
    }  # fmt: skip
    assert usage["updated_at"].endswith("Z")
    again = service.usage.record(sid, report(transcript="runs/agent-1.jsonl"))  # a retry
    assert {**again["usage"], "updated_at": None} == {**usage, "updated_at": None}

    grown = service.usage.record(sid, report(input_tokens=5000, requests=9, cost_usd=1.5))
    assert grown["usage"]["input_tokens"] == 5000 and grown["usage"]["cost_usd"] == 1.5
    assert rows(db) == 1  # one record per session, replaced in place
    assert service.session_info(sid)["usage"] == service.usage.get(sid) == grown["usage"]
    with db.read() as tx:
        assert queries.get_usage(tx, sid).requests == 9  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"input_tokens": 1199}, "input_tokens"),
        ({"output_tokens": 0}, "output_tokens"),
        ({"requests": 3}, "requests"),
        ({"cost_usd": 0.2}, "cost_usd"),
        ({"cost_usd": None}, "cost_usd null"),
    ],
)
def test_shrinking_totals_are_refused_and_change_nothing(
    service: EpisodeService, changes: dict, field: str
) -> None:
    sid = service.create_session(TASK, "usage-agent")["session_id"]
    before = service.usage.record(sid, report())["usage"]
    with pytest.raises(Conflict) as refused:
        service.usage.record(sid, report(**changes))
    text = str(refused.value)
    assert text.startswith("ERROR: Usage totals only grow: " + field)
    assert "cumulative totals" in text
    assert service.usage.get(sid) == before


def test_an_unknown_cost_may_become_known_and_the_model_may_change(
    service: EpisodeService,
) -> None:
    sid = service.create_session(TASK, "usage-agent")["session_id"]
    assert service.usage.record(sid, report(cost_usd=None))["usage"]["cost_usd"] is None
    later = service.usage.record(sid, report(cost_usd=0.01, model="other-model"))["usage"]
    assert later["cost_usd"] == 0.01 and later["model"] == "other-model"


def test_usage_is_recorded_after_the_session_ended_and_is_no_step(
    service: EpisodeService, db: Database
) -> None:
    sid = service.create_session(TASK, "usage-agent")["session_id"]
    end(service, db, sid)
    assert service.session_info(sid)["status"] == "ended"
    assert service.usage.record(sid, report())["ok"]
    info = service.session_info(sid)
    assert info["usage"]["model"] == "claude-x" and info["steps_used"] == 0
    with db.read() as tx:
        assert queries.tool_calls(tx, sid) == []


def test_unknown_session(service: EpisodeService, db: Database) -> None:
    with pytest.raises(NotFound, match="Unknown session 'nope'"):
        service.usage.record("nope", report())
    assert rows(db) == 0
