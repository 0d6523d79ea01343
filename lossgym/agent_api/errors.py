"""Error → HTTP status mapping, in one place. Every error body carries `text`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lossgym.errors import (
    AgentError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    SessionEnded,
    Unauthorized,
)


def _error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"ok": False, "text": text, "detail": text}, status_code=status)


def _validation_text(error: RequestValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "ERROR: Invalid request. " + "; ".join(problems)


# Every error an agent can cause: its HTTP status and whether its text needs the
# "ERROR: " prefix (errors whose message already is the agent's text do not).
# HTTP and MCP both answer with `agent_text`, so the texts cannot drift apart.
STATUSES: dict[type[Exception], tuple[int, bool]] = {
    AgentError: (400, False),
    RateLimited: (429, False),
    ServiceUnavailable: (503, False),
    NotFound: (404, True),
    Unauthorized: (401, True),
    Forbidden: (403, True),
    SessionEnded: (409, False),
    Conflict: (409, False),
}


def agent_text(exc: Exception) -> str | None:
    """The text an agent is shown for `exc`; None for an error that is not the caller's."""
    for kind, (_, prefixed) in STATUSES.items():
        if isinstance(exc, kind):
            return f"ERROR: {exc}" if prefixed else str(exc)
    return None


def install(app: FastAPI) -> None:
    async def known(_: Request, exc: Exception) -> JSONResponse:
        status = next(code for kind, (code, _) in STATUSES.items() if isinstance(exc, kind))
        return _error(status, agent_text(exc) or str(exc))

    for kind in STATUSES:
        app.add_exception_handler(kind, known)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "Bad request"
        return _error(exc.status_code, f"ERROR: {detail.rstrip('.')}.")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_text(exc))
