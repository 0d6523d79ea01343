"""`lossgym` command line: serve the API, run workers, prepare data, check tasks.

Each command imports what it needs when it runs, so `lossgym --help` stays fast
and `lossgym serve` never loads torch.
"""

from __future__ import annotations

import typer

from lossgym.cli import service
from lossgym.cli.agent import agent
from lossgym.cli.common import checked_runner
from lossgym.cli.data import data_app, export_app
from lossgym.cli.tasks import tasks_app

__all__ = ["app", "checked_runner"]

app = typer.Typer(help="LossGym: agents research training losses for GPT-2.", no_args_is_help=True)
app.command()(service.serve)
app.command("worker")(service.run_worker)
app.add_typer(data_app, name="data")
app.add_typer(tasks_app, name="tasks")
app.add_typer(export_app, name="export")
app.command("baselines")(service.baselines)
app.command("agent")(agent)
