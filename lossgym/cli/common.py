"""What the commands share: settings from flags and the environment, the runner check."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lossgym.config import Settings

if TYPE_CHECKING:
    from lossgym.sandbox.runner import Runner

RunnerOption = Annotated[
    str | None,
    typer.Option(
        help="How tests run: 'local', 'docker' or 'slurm' (default: LOSSGYM_RUNNER or local)."
    ),
]
IsolationOption = Annotated[
    str | None,
    typer.Option(
        help="Local runner: 'auto' or 'bwrap' sandbox agent code in bubblewrap; 'none' runs it "
        "unisolated (trusted code only) (default: LOSSGYM_ISOLATION or auto)."
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(help="Where prepared data lives (default: LOSSGYM_DATA_DIR or ./data)."),
]


def settings_from(**overrides: object) -> Settings:
    from pydantic import ValidationError

    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values).resolved()  # type: ignore[arg-type]
    except ValidationError as error:
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"])
            variable = f"LOSSGYM_{name.upper()}"
            typer.echo(f"error: setting {name} ({variable}): {problem['msg']}", err=True)
        raise typer.Exit(2) from error


def checked_runner(settings: Settings) -> Runner:
    """The configured runner; fail at start, with the reason, if it cannot work here."""
    from lossgym.sandbox.runner import UNISOLATED_WARNING, is_queuing, make_runner

    try:
        runner = make_runner(settings)
    except (RuntimeError, ValueError) as error:
        typer.echo(f"error: runner {settings.runner!r}: {error}", err=True)
        raise typer.Exit(2) from error
    gpus = settings.gpus or "(empty: every GPU the worker sees)"
    if is_queuing(runner):
        gpus = "(unused: the scheduler allocates GPUs)"
    typer.echo(f"sandbox {runner.describe()}, LOSSGYM_GPUS={gpus}")
    if not runner.isolated:
        typer.secho(UNISOLATED_WARNING, fg=typer.colors.RED, err=True)
    return runner


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
