"""Tokenizing raw text into a dataset of llm.c ``.bin`` shards.

``lossgym data prepare NAME --from-text PATH...`` (or ``--hf-dataset``) turns
documents into the same layout as the other datasets, so NAME can be a task
stage's ``dataset``::

    <data_dir>/NAME/val_000000.bin ...      the first documents, until val holds
    <data_dir>/NAME/monitor_000000.bin ...  more than --val-tokens (then monitor
    <data_dir>/NAME/train_000000.bin ...    more than --monitor-tokens); the rest
    <data_dir>/NAME/meta.json               is train

The split is by document (none leaks between splits) and the held-out ones
come first, as llm.c's ``fineweb.py`` makes its first shard the val shard.
Each document is ``<|endoftext|>`` + its GPT-2 tokens (as llm.c). A process
pool tokenizes in order; each split is cut into ``--shard-tokens`` shards (a
document may straddle two). All is written to a temporary directory renamed
into place at the end, so a failure leaves ``data_dir`` as it was.

Inputs: ``.txt`` files (one document each) and ``.jsonl`` files (one document
per line, its ``text`` field), given as files, directories (searched
recursively) or glob patterns; or a Hugging Face dataset streamed through the
``datasets`` library. No torch here: the data CLI uses this module.
"""

from __future__ import annotations

import collections
import glob
import importlib.util
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lossgym.trainer.data import SPLITS, DatasetError
from lossgym.trainer.hashing import file_sha256
from lossgym.trainer.shards import write_shard
from lossgym.trainer.tokenizer import EOT_ID, get_encoding, prepare_tokenizer

TEXT_SUFFIXES = (".txt", ".jsonl")
RESERVED_NAMES = ("tokenizer", "evals")
SHARD_TOKENS = 100_000_000  # llm.c's shard size
VAL_TOKENS = 10_485_760  # what the GPU profiles' evaluator reads (val_tokens)
MONITOR_TOKENS = 1_048_576
BATCH_CHARS = 1 << 20  # characters of text sent to a worker at a time
META_VERSION = 1

Progress = Callable[[str], object]


@dataclass
class TextSource:
    """Where the documents come from: local files, or a Hugging Face dataset."""

    files: list[Path] = field(default_factory=list)
    hf_dataset: str | None = None  # "name" or "name:config"
    hf_split: str = "train"
    text_field: str = "text"

    def documents(self) -> Iterator[str]:
        if self.hf_dataset is not None:
            return hf_documents(self.hf_dataset, self.hf_split, self.text_field)
        return local_documents(self.files, self.text_field)

    def describe(self) -> dict[str, object]:
        if self.hf_dataset is not None:
            return {"hf_dataset": self.hf_dataset, "split": self.hf_split, "field": self.text_field}
        return {
            "files": {str(p.resolve()): file_sha256(p) for p in self.files},
            "field": self.text_field,
        }


# ── inputs ────────────────────────────────────────────────────────────────────


def resolve_inputs(specs: Iterable[str]) -> list[Path]:
    """Files, directories (recursively) and glob patterns → ``.txt`` / ``.jsonl`` files."""
    found: dict[Path, None] = {}  # ordered and without duplicates
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES)
        elif path.is_file():
            if path.suffix not in TEXT_SUFFIXES:
                raise DatasetError(f"{spec}: unsupported file type; use .txt or .jsonl files")
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
            matches = [p for p in matches if p.is_file() and p.suffix in TEXT_SUFFIXES]
        if not matches:
            raise DatasetError(f"no input files: {spec} matches no .txt or .jsonl file")
        found.update(dict.fromkeys(matches))
    if not found:
        raise DatasetError("no input files: give --from-text PATH... or --hf-dataset NAME")
    return list(found)


def local_documents(files: list[Path], text_field: str = "text") -> Iterator[str]:
    """Each ``.txt`` file is a document; each line of a ``.jsonl`` file is one."""
    for path in files:
        if path.suffix == ".txt":
            yield path.read_text(encoding="utf-8", errors="replace")
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield _jsonl_text(line, text_field, f"{path}:{lineno}")


def _jsonl_text(line: str, text_field: str, where: str) -> str:
    try:
        record = json.loads(line)
    except ValueError as error:
        raise DatasetError(f"{where}: not a JSON object ({error})") from None
    text = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise DatasetError(f"{where}: no string field {text_field!r}")
    return text


def check_hf_available() -> None:
    if importlib.util.find_spec("datasets") is None:
        raise DatasetError(
            "--hf-dataset needs the Hugging Face `datasets` library: pip install datasets"
        )


def hf_documents(spec: str, split: str, text_field: str) -> Iterator[str]:
    """Stream ``name[:config]`` from the Hugging Face Hub (no full download)."""
    check_hf_available()
    import datasets

    name, _, config = spec.partition(":")
    try:
        stream = datasets.load_dataset(name, config or None, split=split, streaming=True)
    except Exception as error:  # the library raises many kinds (network, hub, config)
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatasetError(f"cannot stream Hugging Face dataset {spec!r}: {detail}") from None
    for i, row in enumerate(stream):
        text = row.get(text_field)
        if not isinstance(text, str):
            raise DatasetError(f"{spec} row {i}: no string field {text_field!r}")
        yield text


# ── tokenizing in worker processes ────────────────────────────────────────────

_encoding = None  # the GPT-2 encoding of a worker process


def _init_worker(data_dir: str) -> None:
    global _encoding
    _encoding = get_encoding(data_dir)


def _encode_batch(texts: list[str]) -> list[np.ndarray]:
    """``<|endoftext|>`` + tokens of each document, as uint16 arrays."""
    assert _encoding is not None, "worker not initialized"
    out = []
    for text in texts:
        ids = [EOT_ID, *_encoding.encode_ordinary(text)]
        out.append(np.asarray(ids, dtype=np.uint16))
    return out


def _batches(docs: Iterable[str], counter: collections.Counter) -> Iterator[list[str]]:
    """Non-empty documents grouped into batches of about BATCH_CHARS characters."""
    batch: list[str] = []
    size = 0
    for text in docs:
        if not text.strip():
            counter["empty"] += 1
            continue
        batch.append(text)
        size += len(text)
        if size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_in_order(
    docs: Iterable[str], data_dir: Path, workers: int, counter: collections.Counter
) -> Iterator[np.ndarray]:
    """Tokenize ``docs`` in a process pool; yield each document's tokens in input order.

    At most ``2 * workers`` batches are in flight, so a long stream is never
    read far ahead of what has been written.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    with context.Pool(workers, initializer=_init_worker, initargs=(str(data_dir),)) as pool:
        pending: collections.deque = collections.deque()
        for batch in _batches(docs, counter):
            pending.append(pool.apply_async(_encode_batch, (batch,)))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


# ── writing shards ────────────────────────────────────────────────────────────


class SplitWriter:
    """Appends tokens to ``<split>_NNNNNN.bin`` shards of ``shard_tokens`` tokens each."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, on_shard: Callable) -> None:
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.on_shard = on_shard  # called with (file name, its token count) per shard
        self.buffer: np.ndarray | None = None  # allocated on first use
        self.fill = 0
        self.files: list[str] = []
        self.tokens = 0  # added so far, written or not
        self.documents = 0

    def add(self, tokens: np.ndarray) -> None:
        self.documents += 1
        self.tokens += tokens.size
        if self.buffer is None:
            self.buffer = np.empty(self.shard_tokens, dtype=np.uint16)
        while tokens.size:
            take = min(tokens.size, self.shard_tokens - self.fill)
            self.buffer[self.fill : self.fill + take] = tokens[:take]
            self.fill += take
            tokens = tokens[take:]
            if self.fill == self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        if self.fill == 0 or self.buffer is None:
            return
        name = f"{self.split}_{len(self.files):06d}.bin"
        write_shard(self.out_dir / name, self.buffer[: self.fill])
        self.files.append(name)
        self.on_shard(name, self.fill)
        self.fill = 0


# ── the whole preparation ─────────────────────────────────────────────────────


@dataclass
class SplitPlan:
    """Sizes: held-out documents first, then training; shards of ``shard_tokens``."""

    val_tokens: int = VAL_TOKENS
    monitor_tokens: int = MONITOR_TOKENS
    shard_tokens: int = SHARD_TOKENS

    def check(self) -> None:
        if self.shard_tokens < 1:
            raise DatasetError(f"--shard-tokens must be at least 1, got {self.shard_tokens}")
        if self.val_tokens < 0 or self.monitor_tokens < 0:
            raise DatasetError("--val-tokens and --monitor-tokens must not be negative")

    def rule(self) -> str:
        return (
            f"by document, in input order: val = the first documents until it holds more than "
            f"{self.val_tokens:,} tokens, monitor = the next until more than "
            f"{self.monitor_tokens:,}, train = the rest"
        )


def check_target(name: str, data_dir: Path, force: bool) -> Path:
    """``data_dir/name``, refusing bad names and (without ``force``) an existing dataset."""
    if not name or name != Path(name).name or name.startswith(".") or name in RESERVED_NAMES:
        raise DatasetError(
            f"invalid dataset name {name!r}: use a plain directory name "
            f"(not {' or '.join(RESERVED_NAMES)})"
        )
    target = data_dir / name
    if target.exists() and not force:
        raise DatasetError(f"{target} already exists; pass --force to replace it")
    return target


def prepare_from_text(
    name: str,
    data_dir: str | os.PathLike,
    source: TextSource,
    plan: SplitPlan | None = None,
    workers: int | None = None,
    force: bool = False,
    progress: Progress = print,
) -> Path:
    """Tokenize ``source`` into ``data_dir/name`` (train / monitor / val shards + meta.json)."""
    plan = plan or SplitPlan()
    plan.check()
    workers = workers or os.cpu_count() or 1
    data_dir = Path(data_dir)
    target = check_target(name, data_dir, force)
    data_dir.mkdir(parents=True, exist_ok=True)
    prepare_tokenizer(data_dir, progress)
    t0 = time.monotonic()
    progress(f"{name}: tokenizing with {workers} worker processes")
    with tempfile.TemporaryDirectory(prefix=f".lossgym-{name}-", dir=data_dir) as tmp:
        out = Path(tmp) / name
        out.mkdir()
        writers, counter = _write_splits(name, source, data_dir, out, plan, workers, progress)
        _check_splits(writers, counter, plan)
        _write_meta(out, name, source, plan, writers, counter)
        if target.exists():  # --force: replace the old dataset only now that the new one is whole
            shutil.rmtree(target)
        os.replace(out, target)
    counts = ", ".join(f"{s} {w.tokens:,}" for s, w in writers.items())
    progress(f"{name}: prepared {target} ({counts} tokens) in {time.monotonic() - t0:.1f}s")
    return target


def _write_splits(
    name: str,
    source: TextSource,
    data_dir: Path,
    out: Path,
    plan: SplitPlan,
    workers: int,
    progress: Progress,
) -> tuple[dict[str, SplitWriter], collections.Counter]:
    counter: collections.Counter = collections.Counter()
    t0 = time.monotonic()

    def on_shard(file_name: str, n_tokens: int) -> None:
        rate = counter["tokens"] / max(time.monotonic() - t0, 1e-9)
        progress(
            f"{name}: wrote {file_name} ({n_tokens:,} tokens); {counter['tokens']:,} tokens "
            f"from {counter['documents']:,} documents so far, {rate:,.0f} tokens/s"
        )

    writers = {s: SplitWriter(out, s, plan.shard_tokens, on_shard) for s in SPLITS}
    val, monitor, train = writers["val"], writers["monitor"], writers["train"]
    for tokens in encode_in_order(source.documents(), data_dir, workers, counter):
        counter["documents"] += 1
        counter["tokens"] += tokens.size
        if val.tokens <= plan.val_tokens:
            val.add(tokens)
        elif monitor.tokens <= plan.monitor_tokens:
            monitor.add(tokens)
        else:
            train.add(tokens)
    for writer in writers.values():
        writer.flush()
    return writers, counter


def _check_splits(
    writers: dict[str, SplitWriter], counter: collections.Counter, plan: SplitPlan
) -> None:
    if counter["documents"] == 0:
        empty = f" ({counter['empty']} empty documents skipped)" if counter["empty"] else ""
        raise DatasetError(f"empty text: the input holds no non-empty document{empty}")
    for split, writer in writers.items():
        if writer.documents == 0:
            raise DatasetError(
                f"the {split} split is empty: the input has only {counter['documents']} "
                f"documents ({counter['tokens']:,} tokens) and the split is {plan.rule()}; "
                "lower --val-tokens / --monitor-tokens or give more text"
            )


def _write_meta(
    out: Path,
    name: str,
    source: TextSource,
    plan: SplitPlan,
    writers: dict[str, SplitWriter],
    counter: collections.Counter,
) -> None:
    meta = {
        "meta_version": META_VERSION,
        "dataset": name,
        "source": source.describe(),
        "tokenizer": "gpt2 (tiktoken), <|endoftext|> before every document",
        "split": plan.rule(),
        "shard_tokens": plan.shard_tokens,
        "token_counts": {s: w.tokens for s, w in writers.items()},
        "documents": {s: w.documents for s, w in writers.items()},
        "empty_documents_skipped": counter["empty"],
        "files": [f for w in writers.values() for f in w.files],
        "complete": True,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
