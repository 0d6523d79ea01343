"""FastAPI dependencies: the service, and the session a bearer token opens."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from lossgym.env.service import EpisodeService
from lossgym.errors import Unauthorized
from lossgym.leaderboard.service import LeaderboardService


def get_service(request: Request) -> EpisodeService:
    return request.app.state.service  # type: ignore[no-any-return]


Service = Annotated[EpisodeService, Depends(get_service)]


def get_leaderboard(request: Request) -> LeaderboardService:
    return request.app.state.leaderboard  # type: ignore[no-any-return]


Leaderboard = Annotated[LeaderboardService, Depends(get_leaderboard)]


def _bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return authorization[7:].strip()


def bearer_token(authorization: Annotated[str | None, Header()] = None) -> str:
    token = _bearer(authorization)
    if token is None:
        raise Unauthorized("Missing 'Authorization: Bearer <token>' header.")
    return token


Token = Annotated[str, Depends(bearer_token)]


def session_id(service: Service, token: Token) -> str:
    """The session the token belongs to; a token opens exactly one session."""
    return service.session_for_token(token)


SessionId = Annotated[str, Depends(session_id)]


def is_operator(service: Service, token: str) -> bool:
    key = service.settings.operator_key
    return bool(key) and hmac.compare_digest(token.encode(), key.encode())


def operator_caller(
    service: Service, authorization: Annotated[str | None, Header()] = None
) -> bool:
    """True when the caller presents the operator key; no token or another one is public."""
    token = _bearer(authorization)
    return token is not None and is_operator(service, token)


Operator = Annotated[bool, Depends(operator_caller)]


def authorize_session(service: Service, token: str, wanted: str) -> None:
    """Allow the session's own token or the operator key to read a session."""
    if is_operator(service, token):
        return
    if service.session_for_token(token) != wanted:
        raise Unauthorized("This token does not belong to that session.")
