"""Public leaderboard JSON and CSV, and public session records.

No token is needed. The operator key (`Authorization: Bearer <key>`) also
shows running sessions in full; any other caller sees only their summary.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from lossgym.agent_api.deps import Leaderboard, Operator

router = APIRouter(tags=["leaderboard"])


TaskName = Annotated[
    str | None, Query(max_length=100, description="Task name; default: the first task.")
]
ProfileName = Annotated[
    str | None, Query(max_length=100, description="Profile; default: the task's default.")
]
SessionIds = Annotated[
    list[str] | None,
    Query(description="Session ids, comma-separated and/or repeated; at most 8."),
]


@router.get("/api/leaderboard")
def leaderboard(
    board: Leaderboard, operator: Operator, task: TaskName = None, profile: ProfileName = None
) -> dict[str, Any]:
    """The ranked table of one (task, profile), baselines as mean ± std over seeds."""
    return board.board(task, profile, operator=operator)


@router.get("/api/leaderboard.csv", response_class=Response)
def leaderboard_csv(
    board: Leaderboard, operator: Operator, task: TaskName = None, profile: ProfileName = None
) -> Response:
    """The same table as CSV: fixed columns, then one column per metric."""
    filename, text = board.board_csv(task, profile, operator=operator)
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(text, media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/api/sessions/{session_id}")
def session_record(session_id: str, board: Leaderboard, operator: Operator) -> dict[str, Any]:
    """A session's transcript, tests (metrics, curves, diffs); running ones only summarised."""
    return board.session(session_id, operator=operator)


@router.get("/api/compare")
def compare(board: Leaderboard, operator: Operator, sessions: SessionIds = None) -> dict[str, Any]:
    """Up to 8 sessions of one board with their loss curves and the cross_entropy mean curve;
    running sessions (without the operator key), unknown ids and other boards get a note."""
    return board.compare(sessions or [], operator=operator)
