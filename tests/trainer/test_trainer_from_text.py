"""`lossgym data prepare NAME --from-text ...`: local text → llm.c shards in the dataset layout."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lossgym.cli import app
from lossgym.trainer.data import _is_complete
from lossgym.trainer.shards import list_shards, read_header, read_shard
from lossgym.trainer.text_shards import SplitWriter
from lossgym.trainer.tokenizer import EOT_ID, get_encoding

SPLITS_IN_ORDER = ("val", "monitor", "train")  # held-out documents come first
SMALL = ["--val-tokens", "10", "--monitor-tokens", "10", "--shard-tokens", "48"]

TEXTS = [
    "First document: to be, or not to be, that is the question.",
    "Second one, with unicode — café, naïve, 東京 and an emoji 🙂.",
    "Third.\n\nIt has two paragraphs and a trailing newline.\n",
    "Fourth document is a little longer than the others, so that the shards "
    "have to cut it in the middle: " + "lorem ipsum dolor sit amet " * 8,
    "Fifth: numbers 12345 and symbols <|endoftext|> written as plain text.",
]
JSONL_TEXTS = ["A JSON line document.", "Another one\nwith a newline."]


@pytest.fixture
def data_root(tmp_path: Path, trainer_data_root: Path) -> Path:
    """An empty data directory that has the prepared tokenizer (no network needed)."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "tokenizer").symlink_to(trainer_data_root / "tokenizer")
    return root


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Five .txt documents and a .jsonl file with two (and an empty line) in a directory."""
    src = tmp_path / "corpus"
    (src / "more").mkdir(parents=True)
    for i, text in enumerate(TEXTS):
        (src / f"doc{i}.txt").write_text(text, encoding="utf-8")
    lines = [json.dumps({"text": t, "id": i}) for i, t in enumerate(JSONL_TEXTS)]
    (src / "more" / "rows.jsonl").write_text(lines[0] + "\n\n" + lines[1] + "\n")
    return src


def _prepare(data_root: Path, *args: str):
    cli = ["data", "prepare", *args, "--data-dir", str(data_root)]
    return CliRunner().invoke(app, cli)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _documents(tokens: np.ndarray) -> list[list[int]]:
    """Split a token stream into documents at each leading <|endoftext|>."""
    starts = np.flatnonzero(tokens == EOT_ID)
    assert starts.size and starts[0] == 0, "every document starts with <|endoftext|>"
    return [
        tokens[a + 1 : b].tolist() for a, b in zip(starts, [*starts[1:], tokens.size], strict=True)
    ]


def test_from_text_round_trip(data_root, corpus, trainer_data_root):
    result = _prepare(data_root, "mine", "--from-text", str(corpus), "--workers", "2", *SMALL)
    assert result.exit_code == 0, result.output
    target = data_root / "mine"
    assert result.stdout.strip().endswith(str(target))
    assert "tokens/s" in result.output and "wrote train_000000.bin" in result.output

    meta = json.loads((target / "meta.json").read_text())
    assert _is_complete(target)  # the same completeness rule as the embedded dataset
    enc = get_encoding(trainer_data_root)
    decoded = []
    for split in SPLITS_IN_ORDER:
        shards = list_shards(target, split)
        assert shards, f"no {split}_*.bin"
        assert [p.name for p in shards] == [f for f in meta["files"] if f.startswith(split)]
        assert all(read_header(p) <= 48 for p in shards)
        tokens = np.concatenate([read_shard(p) for p in shards])
        assert sum(read_header(p) for p in shards) == tokens.size == meta["token_counts"][split]
        docs = _documents(tokens)
        assert len(docs) == meta["documents"][split]
        decoded += [enc.decode(d) for d in docs]
    assert decoded == TEXTS + JSONL_TEXTS  # directory order: doc0..doc4.txt, then more/
    assert meta["documents"]["val"] >= 1 and meta["token_counts"]["val"] > 10
    assert meta["empty_documents_skipped"] == 0
    assert len(list_shards(target, "train")) > 1  # a document straddles shards


def test_worker_count_does_not_change_the_shards(data_root, corpus):
    for name, workers in (("one", "1"), ("two", "2")):
        result = _prepare(data_root, name, "--from-text", str(corpus), "--workers", workers, *SMALL)
        assert result.exit_code == 0, result.output
    one, two = data_root / "one", data_root / "two"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    for shard in one.glob("*.bin"):
        assert shard.read_bytes() == (two / shard.name).read_bytes()


def test_files_and_globs_as_extra_arguments(data_root, corpus):
    """`--from-text a b c` as a shell expands a glob; an explicit file and a pattern mix."""
    files = [str(corpus / f"doc{i}.txt") for i in (3, 1)]
    args = ["--from-text", files[0], files[1], str(corpus / "more" / "*.jsonl")]
    result = _prepare(data_root, "mix", *args, "--workers", "1", *SMALL)
    assert result.exit_code == 0, result.output
    meta = json.loads((data_root / "mix" / "meta.json").read_text())
    assert [Path(f).name for f in meta["source"]["files"]] == ["doc3.txt", "doc1.txt", "rows.jsonl"]
    assert sum(meta["documents"].values()) == 4


def test_split_writer_cuts_shards_at_the_size(tmp_path):
    seen = []
    writer = SplitWriter(tmp_path, "train", 5, lambda name, n: seen.append((name, n)))
    for doc in ([1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12]):
        writer.add(np.array(doc, dtype=np.uint16))
    writer.flush()
    assert seen == [("train_000000.bin", 5), ("train_000001.bin", 5), ("train_000002.bin", 2)]
    tokens = np.concatenate([read_shard(tmp_path / name) for name, _ in seen])
    assert tokens.tolist() == list(range(1, 13)) and writer.tokens == 12 and writer.documents == 3


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no input files: {tmp}/nope matches no .txt or .jsonl file"),
        ("glob", "no input files: {tmp}/corpus/*.md matches no .txt or .jsonl file"),
        ("suffix", "{tmp}/corpus/notes.csv: unsupported file type; use .txt or .jsonl"),
        ("empty", "empty text: the input holds no non-empty document (3 empty documents skipped)"),
        ("jsonl", "{tmp}/corpus/bad.jsonl:2: no string field 'text'"),
        ("small", "the train split is empty: the input has only 2 documents"),
        ("exists", "{tmp}/data/taken already exists; pass --force to replace it"),
        ("name", "invalid dataset name 'tokenizer'"),
    ],
)
def test_errors_are_clear_and_change_nothing(data_root, tmp_path, case, message):
    src = tmp_path / "corpus"
    inputs = {
        "missing": [str(tmp_path / "nope")],
        "glob": [str(src / "*.md")],
        "suffix": [str(_write(src / "notes.csv", "a,b"))],
        "empty": [str(_write(src / f"e{i}.txt", " \n" * i)) for i in range(3)],
        "jsonl": [str(_write(src / "bad.jsonl", '{"text": "ok"}\n{"body": "x"}\n'))],
        "small": [str(_write(src / f"s{i}.txt", "few words")) for i in range(2)],
        "exists": [str(_write(src / "fine.txt", "fine"))],
        "name": [str(_write(src / "fine.txt", "fine"))],
    }[case]
    (data_root / "taken").mkdir()
    (data_root / "taken" / "keep.txt").write_text("old")
    name = {"exists": "taken", "name": "tokenizer"}.get(case, "new")
    before = _snapshot(data_root)
    extra = [] if case == "small" else SMALL
    result = _prepare(data_root, name, "--from-text", *inputs, "--workers", "2", *extra)
    assert result.exit_code == 1, result.output
    assert f"data prepare {name} failed: " + message.format(tmp=tmp_path) in result.output
    assert "Traceback" not in result.output
    assert _snapshot(data_root) == before  # no dataset, no temporary directory left behind
    assert sorted(p.name for p in data_root.iterdir()) == ["taken", "tokenizer"]


def test_force_replaces_an_existing_dataset(data_root, corpus):
    (data_root / "mine").mkdir()
    (data_root / "mine" / "stale.bin").write_text("old")
    result = _prepare(data_root, "mine", "--from-text", str(corpus), "--force", *SMALL)
    assert result.exit_code == 0, result.output
    assert not (data_root / "mine" / "stale.bin").exists()
    assert _is_complete(data_root / "mine")


def test_inputs_without_from_text_and_both_sources(data_root, corpus):
    result = _prepare(data_root, "mine", str(corpus))
    assert result.exit_code == 2 and "input paths need --from-text" in result.output
    both = _prepare(data_root, "mine", "--from-text", str(corpus), "--hf-dataset", "x/y")
    assert both.exit_code == 1 and "not both" in both.output
    assert not (data_root / "mine").exists()


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets installed")
def test_hf_dataset_without_the_library_says_what_to_install(data_root):
    result = _prepare(data_root, "web", "--hf-dataset", "HuggingFaceFW/fineweb:sample-10BT")
    assert result.exit_code == 1
    assert "needs the Hugging Face `datasets` library: pip install datasets" in result.output
    assert not (data_root / "web").exists()


def test_hf_dataset_is_streamed_through_the_library(data_root, monkeypatch):
    """A stand-in for `datasets` (no network here): rows are read in order, field by name."""
    calls = []

    def load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter([{"body": t} for t in TEXTS])

    fake = types.ModuleType("datasets")
    fake.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    args = ["--hf-dataset", "org/web:sample", "--hf-split", "train", "--text-field", "body"]
    result = _prepare(data_root, "web", *args, "--workers", "1", *SMALL)
    assert result.exit_code == 0, result.output
    assert calls == [("org/web", "sample", "train", True)]
    meta = json.loads((data_root / "web" / "meta.json").read_text())
    assert meta["source"] == {"hf_dataset": "org/web:sample", "split": "train", "field": "body"}
    assert sum(meta["documents"].values()) == len(TEXTS)
