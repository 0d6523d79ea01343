"""`lossgym tasks list` and `lossgym tasks validate`."""

from __future__ import annotations

from typing import Annotated

import typer

from lossgym.cli.common import settings_from

tasks_app = typer.Typer(help="Inspect and validate task specs.", no_args_is_help=True)


@tasks_app.command("list")
def tasks_list() -> None:
    """List the tasks and their profiles."""
    from lossgym.env.task import list_tasks, load_task

    settings = settings_from()
    for name in list_tasks(settings.tasks_dir):
        task = load_task(settings.tasks_dir, name)
        profiles = ", ".join(
            f"{p}{' (default)' if p == task.spec.default_profile else ''}"
            for p in task.spec.profiles
        )
        typer.echo(f"{name}: {task.spec.title}  [profiles: {profiles}]")


@tasks_app.command("validate")
def tasks_validate(name: Annotated[str, typer.Argument(help="Task name.")]) -> None:
    """Load a task spec, its regions from the files' markers, and apply every baseline
    through the edit engine; report the first problem, naming the key."""
    from lossgym.env.baselines import check_baselines
    from lossgym.env.task import load_task
    from lossgym.errors import TaskSpecError

    try:
        task = load_task(settings_from().tasks_dir, name)
        check_baselines(task)
    except TaskSpecError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    for path, regions in task.regions().items():
        if regions:
            typer.echo(f"{path}: " + ", ".join(f"{r.name} lines {r.span}" for r in regions))
    typer.echo(f"{task.spec.name}: OK")
