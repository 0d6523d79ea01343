"""Token usage and cost per session, as the agent's own harness reports them.

`lossgym agent` (or any client) posts the session's cumulative totals so far to
`POST /sessions/{id}/usage`: each report sets the totals, so a retry changes
nothing, and totals never shrink (`Conflict`). Reports are accepted while the
session is active and after it ended (the agent reports after its final
submit); they are bookkeeping, not tool calls: no step is counted, nothing is
added to the transcript.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lossgym.errors import Conflict, NotFound
from lossgym.store import queries
from lossgym.store.db import Database
from lossgym.store.models import UsageRow

MAX_COUNT = 10**15  # far beyond any real session, well inside SQLite's 64-bit integers
MAX_COST_USD = 1e9
COUNTERS = ("input_tokens", "output_tokens", "requests")


class UsageReport(BaseModel):
    """The session's cumulative totals so far (each report replaces the last)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200, description="The model the agent runs on.")
    input_tokens: int = Field(ge=0, le=MAX_COUNT, strict=True, description="Prompt tokens, total.")
    output_tokens: int = Field(
        ge=0, le=MAX_COUNT, strict=True, description="Completion tokens, total."
    )
    requests: int = Field(ge=0, le=MAX_COUNT, strict=True, description="Model requests, total.")
    cost_usd: float | None = Field(
        None, ge=0, le=MAX_COST_USD, allow_inf_nan=False, description="Cost so far; null: unknown."
    )
    transcript: str | None = Field(
        None, max_length=500, description="File name or path of the agent's JSONL transcript."
    )


class UsageRecorder:
    """Records usage reports; one record per session."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, session_id: str, report: UsageReport) -> dict[str, Any]:
        """Set the session's totals; the reply `{ok, text, usage}`."""
        with self.db.transaction() as db:
            if queries.get_session(db, session_id) is None:
                raise NotFound(f"Unknown session {session_id!r}.")
            previous = queries.get_usage(db, session_id)
            if previous is not None:
                refuse_shrinking(previous, report)
            row = queries.put_usage(db, session_id, report.model_dump())
            usage = row.to_dict()
        return {"ok": True, "text": usage_text(usage), "usage": usage}

    def get(self, session_id: str) -> dict[str, Any] | None:
        """The session's usage record, or None when none was reported."""
        with self.db.read() as db:
            row = queries.get_usage(db, session_id)
            return None if row is None else row.to_dict()


def refuse_shrinking(previous: UsageRow, report: UsageReport) -> None:
    """Totals only grow: a smaller count, or a cost gone down or unknown again, is refused."""
    for name in COUNTERS:
        before, now = int(getattr(previous, name)), int(getattr(report, name))
        if now < before:
            raise Conflict(_shrunk(name, now, before))
    if previous.cost_usd is not None:
        if report.cost_usd is None:
            raise Conflict(_shrunk("cost_usd", None, previous.cost_usd))
        if report.cost_usd < previous.cost_usd:
            raise Conflict(_shrunk("cost_usd", report.cost_usd, previous.cost_usd))


def _shrunk(name: str, now: float | None, before: float) -> str:
    shown = "null" if now is None else now
    return (
        f"ERROR: Usage totals only grow: {name} {shown} is below the recorded {before}. "
        "Send the session's cumulative totals so far, not the usage since the last report."
    )


def usage_text(usage: dict[str, Any]) -> str:
    cost = "unknown" if usage["cost_usd"] is None else f"${usage['cost_usd']:.4f}"
    return (
        f"Usage recorded: {usage['model']}, {usage['input_tokens']} input and "
        f"{usage['output_tokens']} output tokens in {usage['requests']} requests, cost {cost}."
    )
