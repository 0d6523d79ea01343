"""The leaderboard's read side: boards per (task, profile) and public session records.

Visibility (SPEC §5): while a session is active, a caller without the operator
key sees only a summary of it (agent, status, counts) — never its code, diffs,
transcript or any metric, so an agent cannot read another agent's work in
progress. Ended sessions are public in full, hidden metrics included: these
records are the researchers' view, not a text any agent is shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lossgym.errors import NotFound, TaskSpecError
from lossgym.leaderboard import compare
from lossgym.leaderboard.groups import agent_groups
from lossgym.leaderboard.paired import PAIRED_RULE, session_paired, with_paired
from lossgym.leaderboard.ranking import (
    REFERENCE_AGENT,
    agent_stats,
    baseline_name,
    iso,
    metric_keys,
    rank_sessions,
    reference_for,
    to_csv,
)
from lossgym.leaderboard.tasks import BoardTask, TaskCatalog
from lossgym.store import boards, queries
from lossgym.store.db import Database
from lossgym.store.models import SessionRow, StageResultRow, TestRow, ToolCallRow

REDACTED = "This session is still running: its code, transcript and metrics are shown once it ends."


class LeaderboardService:
    def __init__(self, db: Database, tasks: TaskCatalog) -> None:
        self.db = db
        self.tasks = tasks

    # ── Boards ──────────────────────────────────────────────────────────────

    def board(
        self, task_name: str | None = None, profile: str | None = None, operator: bool = False
    ) -> dict[str, Any]:
        """The ranked table of one (task, profile); defaults: the first task, its profile."""
        task = self._task(task_name)
        profile = self._profile(task, profile)
        key = task.primary_metric_key(profile)
        with self.db.read() as db:
            results = boards.session_results(db, task.name, profile)
        board = with_paired(rank_sessions(results, key, task.direction), results, key)
        board["groups"] = agent_groups(results, key, task.direction)  # finished sessions only
        if not operator:
            board["rows"] = [_public_row(row) for row in board["rows"]]
        return {
            "task": task.name,
            "profile": profile,
            "profiles": list(task.profiles),
            "hidden_metrics": list(task.hidden_metrics),
            **board,
            "metric_keys": metric_keys(board["rows"], key),
        }

    def board_csv(
        self, task_name: str | None = None, profile: str | None = None, operator: bool = False
    ) -> tuple[str, str]:
        """(file name, CSV text) of the same table as `board`."""
        board = self.board(task_name, profile, operator)
        return f"leaderboard-{board['task']}-{board['profile']}.csv", to_csv(board)

    # ── Sessions ────────────────────────────────────────────────────────────

    def session(self, session_id: str, operator: bool = False) -> dict[str, Any]:
        """A session's public record; a running one is only summarised for non-operators."""
        with self.db.read() as db:
            session = queries.get_session(db, session_id)
            if session is None:
                raise NotFound(f"Unknown session {session_id!r}.")
            summary = _summary(session)
            if session.status == "active" and not operator:
                tests = [{"n": t.n, "status": t.status} for t in session.tests]
                return {
                    **summary,
                    "redacted": True,
                    "note": REDACTED,
                    "tests": tests,
                    "usage": None,
                }
            task = self._task(session.task)
            tests = queries.tests_of(db, session.id, with_stages=True)
            calls = queries.tool_calls(db, session.id)
            final = queries.get_final(db, session.id)
            curves = boards.agent_final_curves(db, session.task, session.profile, REFERENCE_AGENT)
            results = boards.session_results(db, session.task, session.profile)
            final_n = next((t.n for t in tests if final and t.id == final.test_id), None)
            usage = queries.get_usage(db, session.id)
            key = task.primary_metric_key(session.profile)
            paired, agent_paired = session_paired(results, session.id, key)
            return {
                **summary,
                "redacted": False,
                "metric": key,
                "direction": task.direction,
                "hidden_metrics": list(task.hidden_metrics),
                "final": None if final is None else _final(final_n, final.kind),
                "tests": [_test(t, task) for t in tests],
                "transcript": [_call(c) for c in calls],
                "reference_curve": compare.reference_curve(curves),
                "usage": None if usage is None else usage.to_dict(),
                "paired": paired,
                "agent_paired": agent_paired,
                "paired_rule": PAIRED_RULE,
            }

    # ── Comparing sessions ──────────────────────────────────────────────────

    def compare(self, raw_ids: Iterable[str], operator: bool = False) -> dict[str, Any]:
        """Up to 8 sessions of one board with their curves, against cross_entropy's mean curve.

        Ids that cannot be shown (unknown, running without the operator key, no
        curve, another board) are left out with a note; `NotFound` when none can.
        """
        ids = compare.parse_ids(raw_ids)
        with self.db.read() as db:
            shown, notes = compare.choose(ids, boards.session_curves(db, ids), operator)
            if not shown:
                raise NotFound("Nothing to compare. " + " ".join(notes))
            first = shown[0]
            results = boards.session_results(db, first.task, first.profile)
            curves = boards.agent_final_curves(db, first.task, first.profile, REFERENCE_AGENT)
        task = self._task(first.task)
        key = task.primary_metric_key(first.profile)
        reference = reference_for(agent_stats(results, key))
        return {
            "task": first.task,
            "profile": first.profile,
            "metric": key,
            "direction": task.direction,
            "limit": compare.MAX_SESSIONS,
            "sessions": [compare.entry_record(e, key, reference) for e in shown],
            "notes": notes,
            "reference": reference.compare(reference.stat),
            "reference_curve": compare.reference_curve(curves),
        }

    # ── Internals ───────────────────────────────────────────────────────────

    def _task(self, name: str | None) -> BoardTask:
        names = self.tasks.names()
        if name is None:
            if not names:
                raise NotFound("No tasks are installed.")
            name = names[0]
        if name not in names:
            raise NotFound(f"Unknown task {name!r}. Tasks: {', '.join(names) or 'none'}.")
        try:
            return self.tasks.board_task(name)
        except TaskSpecError as error:
            raise NotFound(f"Task {name!r} cannot be loaded: {error}") from error

    def _profile(self, task: BoardTask, profile: str | None) -> str:
        profile = profile or task.default_profile
        if profile not in task.profiles:
            known = ", ".join(task.profiles)
            raise NotFound(f"Unknown profile {profile!r} for task {task.name}. Profiles: {known}.")
        return profile


def _public_row(row: dict[str, Any]) -> dict[str, Any]:
    """A board row as callers without the operator key see it: running rows carry no metrics."""
    if row["session_status"] != "active":
        return row
    hidden = {
        "value", "delta", "noise", "paired", "metrics", "elapsed_s", "agent_stats", "final_test",
    }  # fmt: skip
    return {k: (({} if k == "metrics" else None) if k in hidden else v) for k, v in row.items()}


def _summary(session: SessionRow) -> dict[str, Any]:
    return {
        "session_id": session.id,
        "task": session.task,
        "profile": session.profile,
        "agent": session.agent,
        "baseline": baseline_name(session.agent),
        "seed": session.seed,
        "status": session.status,
        "ended_reason": session.ended_reason,
        "created_at": iso(session.created_at),
        "ended_at": iso(session.ended_at),
        "tests_used": session.tests_used,
        "budget_tests": session.budget_tests,
        "steps_used": session.steps_used,
        "budget_steps": session.budget_steps,
    }


def _final(n: int | None, kind: str) -> dict[str, Any]:
    return {"test": n, "kind": kind, "auto_submitted": kind == "auto"}


def _test(test: TestRow, task: BoardTask) -> dict[str, Any]:
    revision = test.revision
    return {
        "n": test.n,
        "status": test.status,
        "valid": test.valid,
        "created_at": iso(test.created_at),
        "finished_at": iso(test.finished_at),
        "metrics": dict(test.metrics),
        "sandbox": test.sandbox,
        "elapsed_s": sum(s.elapsed_s for s in test.stages),
        "revision": revision.seq,
        "content_hash": revision.content_hash,
        "diff": task.diff_from_template(revision.files),
        "stages": [_stage(s) for s in test.stages],
    }


def _stage(stage: StageResultRow) -> dict[str, Any]:
    return {
        "label": stage.label,
        "kind": stage.kind,
        "status": stage.status,
        "exit_code": stage.exit_code,
        "metrics": dict(stage.metrics),
        "curve": list(stage.curve),
        "train_lines": list(stage.train_lines),
        "log_tail": stage.log_tail,
        "train_s": stage.train_s,
        "eval_s": stage.eval_s,
        "elapsed_s": stage.elapsed_s,
        "reason": str(stage.info.get("reason", "")),
    }


def _call(call: ToolCallRow) -> dict[str, Any]:
    return {
        "seq": call.seq,
        "tool": call.tool,
        "arguments": dict(call.arguments),
        "ok": call.ok,
        "text": call.text,
        "created_at": iso(call.created_at),
    }
