"""Error → HTTP status mapping, in one place. Every error body carries `text`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lossgym.errors import (
    AgentError,
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


def install(app: FastAPI) -> None:
    @app.exception_handler(AgentError)
    async def agent_error(_: Request, exc: AgentError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(RateLimited)
    async def rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
        return _error(429, str(exc))

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(_: Request, exc: ServiceUnavailable) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, f"ERROR: {exc}")

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return _error(401, f"ERROR: {exc}")

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return _error(403, f"ERROR: {exc}")

    @app.exception_handler(SessionEnded)
    async def ended(_: Request, exc: SessionEnded) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "Bad request"
        return _error(exc.status_code, f"ERROR: {detail.rstrip('.')}.")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_text(exc))
