"""`lossgym serve`, `lossgym worker` and `lossgym baselines`: the service and its clients."""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import threading
from pathlib import Path
from typing import Annotated

import typer

from lossgym.cli.common import (
    IsolationOption,
    RunnerOption,
    checked_runner,
    settings_from,
    setup_logging,
)

DEMO_BANNER = """
Drive it from another terminal, as an agent would (each tool reply's "text" is what
an agent reads):

  curl -s -X POST {base}/sessions -H 'Content-Type: application/json' \\
       -d '{{"task": "llm-pretrain-loss", "agent": "me"}}'

or run the whole README walk-through (session, edit, test, edit, test, submit):

  scripts/walkthrough.sh {base}

The baselines (cross_entropy, label_smoothing, softcap_ce, z_loss; two seeds each
unless --demo-baselines says otherwise) now run in the background through the same
API, one real test each, so the leaderboard at {base}/ fills in over the next few
minutes; tests you start queue behind them ({key_note}).

Stop the service with Ctrl-C; the database and runs stay in var/ and runs/.
"""


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port; 0 lets the OS choose one (default: 8000).")
    ] = None,
    worker: Annotated[bool, typer.Option(help="Run a worker inside the server.")] = True,
    demo: Annotated[bool, typer.Option(help="Print how to drive the service with curl.")] = False,
    demo_baselines: Annotated[
        int, typer.Option(help="With --demo: run each baseline for this many seeds (0: none).")
    ] = 2,
    runner: RunnerOption = None,
    isolation: IsolationOption = None,
) -> None:
    """Start the HTTP API (and, by default, a worker that runs tests)."""
    import uvicorn

    from lossgym.agent_api.app import create_app

    setup_logging()
    settings = settings_from(
        host=host, port=port, worker_in_api=worker, runner=runner, isolation=isolation
    )
    checked_runner(settings)  # pre-flight smoke runs use it too, with or without a worker
    listener = _listen_on_any_port(settings.host) if settings.port == 0 else None
    port = listener.getsockname()[1] if listener else settings.port
    base = f"http://{settings.host}:{port}"
    typer.echo(f"LossGym on {base}  (API docs: /docs, leaderboard: /)")
    typer.echo(f"database {settings.database}, data {settings.data_dir}, runs {settings.runs_dir}")
    if demo:
        key_note = "the operator key is LOSSGYM_OPERATOR_KEY"
        if not settings.operator_key:  # baseline runs need one; a local demo gets a fresh one
            settings = settings.model_copy(update={"operator_key": secrets.token_urlsafe(16)})
            key_note = f"operator key for this run: {settings.operator_key}"
        typer.echo(DEMO_BANNER.format(base=base, key_note=key_note))
        if demo_baselines > 0:
            from lossgym.baselines.runner import start_in_background

            state = settings.database.parent / "baselines-state.json"
            start_in_background(
                base, settings.tasks_dir, settings.operator_key, demo_baselines, state
            )
    if listener is None:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
        return
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="info"))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C, as uvicorn.run takes it
        server.run(sockets=[listener])
    if not server.started:
        raise typer.Exit(3)  # as uvicorn.run exits when the app fails to start


def _listen_on_any_port(host: str) -> socket.socket:
    """A socket listening on a port the OS chose (for `--port 0`): connections queue
    from now on, and the "LossGym on" line can name the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, 0), family=family)
    except OSError as error:
        typer.echo(f"error: cannot listen on {host}: {error}", err=True)
        raise typer.Exit(2) from error


def run_worker(
    runner: RunnerOption = None,
    isolation: IsolationOption = None,
    alive_file: Annotated[
        Path | None, typer.Option(help="Touch this file while working (for health checks).")
    ] = None,
) -> None:
    """Run a worker alone against the configured database (several may run at once)."""
    from lossgym.env.catalog import TaskCache
    from lossgym.sandbox.worker import Worker
    from lossgym.store.db import Database

    setup_logging()
    settings = settings_from(runner=runner, isolation=isolation)
    checked = checked_runner(settings)
    db = Database(settings.database)
    db.create_schema()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    tasks = TaskCache(settings.tasks_dir)
    Worker(settings, db, tasks, runner=checked, alive_file=alive_file).run_forever(stop)


def baselines(
    task: Annotated[str | None, typer.Option(help="Task name (default: the first task).")] = None,
    profile: Annotated[
        str | None, typer.Option(help="Profile (default: the task's default).")
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Run the task's first N seeds.")] = 3,
    base_url: Annotated[str, typer.Option(help="The LossGym service.")] = "http://127.0.0.1:8000",
    names: Annotated[
        str | None, typer.Option(help="Comma-separated baselines (default: all of the task's).")
    ] = None,
    state: Annotated[
        Path, typer.Option(help="Where sessions an interrupted run left waiting are kept.")
    ] = Path("var/baselines-state.json"),
    until_resolved: Annotated[
        bool,
        typer.Option(
            help="After --seeds, add one seed a round (cross_entropy and the unresolved "
            "baselines) until every baseline's paired delta to cross_entropy is resolved."
        ),
    ] = False,
    max_seeds: Annotated[
        int, typer.Option(min=1, help="With --until-resolved: stop after this many seeds.")
    ] = 8,
) -> None:
    """Run each baseline over seeds through the public HTTP API; resumable (skips done ones).

    Baseline agent names are reserved for the operator: set LOSSGYM_OPERATOR_KEY to the
    server's key.
    """
    from lossgym.baselines.runner import BaselineRunner, PlanError, StateFile, choose, summary
    from lossgym.client import Api

    try:
        chosen, profile, wanted, seed_list = choose(
            settings_from().tasks_dir, task, profile, names, seeds
        )
    except PlanError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    if until_resolved and max_seeds < seeds:
        typer.echo(f"--max-seeds {max_seeds} is below --seeds {seeds}.", err=True)
        raise typer.Exit(2)
    api = Api(base_url, operator_key=settings_from().operator_key)
    runner = BaselineRunner(api, chosen, profile, StateFile(state), typer.echo)
    if until_resolved:
        from lossgym.baselines.resolution import final_report, run_until_resolved

        result = run_until_resolved(runner, wanted, seed_list, max_seeds)
        outcomes = result.outcomes
        typer.echo("\n" + summary(outcomes, runner.metric) + "\n" + final_report(result))
    else:
        outcomes = runner.run(wanted, seed_list)
        typer.echo("\n" + summary(outcomes, runner.metric))
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)
