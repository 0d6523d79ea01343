"""The leaderboard's HTML pages: `/` (every board), `/board/{session_id}` (one session)
and `/compare?sessions=...` (sessions' loss curves overlaid).

Thin: the data and its visibility rule come from `LeaderboardService`; the
HTML from `lossgym.leaderboard.web.render`. The operator key
(`Authorization: Bearer <key>`) shows running sessions in full, as in the JSON.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from lossgym.agent_api.deps import Leaderboard
from lossgym.agent_api.routes.leaderboard import Operator, SessionIds
from lossgym.errors import AgentError, NotFound
from lossgym.leaderboard.web import render, view

router = APIRouter(tags=["pages"], default_response_class=HTMLResponse)

Text = Annotated[str | None, Query(max_length=200)]


@router.get("/", response_class=HTMLResponse)
def board_page(
    board: Leaderboard,
    operator: Operator,
    sort: Text = None,
    dir: Text = None,  # noqa: A002 - the query parameter's public name
    agent: Text = None,
) -> HTMLResponse:
    """Every (task, profile) board; `?sort=<column>&dir=asc|desc` and `?agent=<substring>`."""
    query = view.parse_query(sort, dir, agent)
    return HTMLResponse(render.index_page(board, query, operator))


@router.get("/board/{session_id}", response_class=HTMLResponse)
def session_page(session_id: str, board: Leaderboard, operator: Operator) -> HTMLResponse:
    """One session: summary, per-test metrics and loss plots, diffs, the whole transcript."""
    try:
        record = board.session(session_id, operator=operator)
    except NotFound as error:
        return HTMLResponse(render.not_found_page(str(error)), status_code=404)
    return HTMLResponse(render.session_page(record))


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    board: Leaderboard, operator: Operator, sessions: SessionIds = None
) -> HTMLResponse:
    """Up to 8 sessions of one board: their loss curves overlaid on cross_entropy's mean curve.
    `?sessions=id1,id2` (or repeated `sessions=`); ids that cannot be shown get a note."""
    try:
        record = board.compare(sessions or [], operator=operator)
    except AgentError as error:
        return HTMLResponse(render.error_page(str(error), "Cannot compare"), status_code=400)
    except NotFound as error:
        return HTMLResponse(render.not_found_page(str(error)), status_code=404)
    return HTMLResponse(render.compare_page(record))
