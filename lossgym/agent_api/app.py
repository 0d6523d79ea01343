"""The HTTP service: `create_app(settings)` builds everything; nothing happens at import."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lossgym.agent_api import errors, mcp
from lossgym.agent_api.routes import leaderboard, pages, sessions, tools
from lossgym.agent_api.routes import tasks as task_routes
from lossgym.config import Settings
from lossgym.env.catalog import TaskCache
from lossgym.env.service import EpisodeService, PreflightCheck
from lossgym.leaderboard.service import LeaderboardService
from lossgym.store.db import Database

log = logging.getLogger("lossgym.api")


def create_app(settings: Settings) -> FastAPI:
    settings = settings.resolved()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database)
        db.create_schema()
        tasks = TaskCache(settings.tasks_dir)
        preflight = _preflight(settings)
        app.state.service = EpisodeService(settings, db, tasks, preflight)
        app.state.leaderboard = LeaderboardService(db, tasks)
        app.state.mcp = mcp.McpEndpoint(app.state.service, app.version)
        stop = threading.Event()
        worker_thread = _start_worker(settings, db, tasks, stop) if settings.worker_in_api else None
        try:
            async with app.state.mcp.run():
                yield
        finally:
            stop.set()
            if worker_thread is not None:
                worker_thread.join(timeout=30)
            preflight.close()
            db.dispose()

    app = FastAPI(
        title="LossGym",
        version="0.1.0",
        description="Agents edit compute_loss, run real GPT-2 training tests, and submit one.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    app.middleware("http")(_limit_body(settings.max_request_bytes))
    app.include_router(sessions.router)
    app.include_router(task_routes.router)
    app.include_router(tools.router)
    app.include_router(leaderboard.router)
    app.include_router(pages.router)
    mcp.install(app)

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _preflight(settings: Settings) -> PreflightCheck:
    """Pre-flight runs the agent's compute_loss in the configured sandbox, never here."""
    from lossgym.sandbox.preflight import Preflight
    from lossgym.sandbox.runner import UNISOLATED_WARNING, make_runner

    runner = make_runner(settings)
    if not runner.isolated:
        log.warning(UNISOLATED_WARNING)
    return Preflight(
        runner,
        settings.runs_dir / "preflight",
        settings.preflight_per_minute,
        warm=settings.warm_start,
    )


def _start_worker(
    settings: Settings, db: Database, tasks: TaskCache, stop: threading.Event
) -> threading.Thread:
    from lossgym.sandbox.worker import Worker

    worker = Worker(settings, db, tasks)
    thread = threading.Thread(target=worker.run_forever, args=(stop,), name="worker", daemon=True)
    thread.start()
    return thread


def _limit_body(
    limit: int,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def middleware(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        declared = request.headers.get("content-length")
        too_big = declared is not None and (not declared.isdigit() or int(declared) > limit)
        if not too_big and declared is None and request.method in ("POST", "PUT", "PATCH"):
            too_big = len(await request.body()) > limit
        if too_big:
            text = f"ERROR: Request body too large (limit {limit} bytes)."
            return JSONResponse({"ok": False, "text": text, "detail": text}, status_code=413)
        return await call_next(request)

    return middleware
