"""FineWeb-10B, pre-tokenized with GPT-2, from the Hugging Face Hub.

The llm.c / modded-nanogpt shards of dataset repo ``kjj0/fineweb10B-gpt2``
(100M tokens each, llm.c ``.bin`` format) are fetched over plain HTTPS and
renamed into LossGym's layout under ``<data_dir>/fineweb10b/``:

* ``val_000000.bin``      ← ``fineweb_val_000000.bin`` (the Hub's val shard)
* ``train_000000.bin`` …  ← ``fineweb_train_000001.bin`` … (``--shards N``: N of them)
* ``monitor_000000.bin``  ← ``fineweb_train_{N+1}.bin``: the next train shard,
  held out whole, so the monitor loss is never measured on training tokens.

Every file is downloaded to ``<name>.part`` (resumed with an HTTP range where
one is left), its header checked with ``lossgym.trainer.shards``, then renamed
into place; a re-run skips the files already there with a valid header.

No torch here: the data CLI uses this module.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from lossgym.trainer.data import DatasetError
from lossgym.trainer.shards import ShardError, read_header

NAME = "fineweb10b"
HUB_REPO = "kjj0/fineweb10B-gpt2"
BASE_URL = f"https://huggingface.co/datasets/{HUB_REPO}/resolve/main/"
MAX_TRAIN_SHARDS = 102  # the repo holds 103 train shards; one more is the monitor
CHUNK_BYTES = 1 << 20
PROGRESS_EVERY_S = 5.0
META_VERSION = 1

Progress = Callable[[str], object]


def shard_plan(shards: int) -> dict[str, str]:
    """Local file name → Hub file name for ``shards`` training shards."""
    if not 1 <= shards <= MAX_TRAIN_SHARDS:
        raise DatasetError(f"--shards must be between 1 and {MAX_TRAIN_SHARDS}, got {shards}")
    plan = {"val_000000.bin": "fineweb_val_000000.bin"}
    for i in range(shards):
        plan[f"train_{i:06d}.bin"] = f"fineweb_train_{i + 1:06d}.bin"
    plan["monitor_000000.bin"] = f"fineweb_train_{shards + 1:06d}.bin"
    return plan


def is_valid_shard(path: Path) -> bool:
    try:
        read_header(path)
    except ShardError:
        return False
    return True


def _download(client: httpx.Client, url: str, part: Path, label: str, progress: Progress) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size where it exists."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", url, headers=headers, follow_redirects=True) as response:
        if response.status_code == 416:  # the part file is already whole
            return
        response.raise_for_status()
        if response.status_code != 206:
            have = 0  # the server ignored the range: start over
        total = have + int(response.headers.get("content-length", 0))
        done, shown = have, time.monotonic()
        with open(part, "ab" if have else "wb") as f:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                f.write(chunk)
                done += len(chunk)
                if time.monotonic() - shown >= PROGRESS_EVERY_S:
                    shown = time.monotonic()
                    progress(f"{NAME}: {label} {_fraction(done, total)}")
    progress(f"{NAME}: {label} downloaded ({done / 1e6:.0f} MB)")


def _fraction(done: int, total: int) -> str:
    pct = f"{100 * done / total:.0f}% of " if total else ""
    return f"{pct}{total / 1e6 if total else done / 1e6:.0f} MB"


def fetch_shard(
    client: httpx.Client, target: Path, remote: str, progress: Progress, base_url: str = BASE_URL
) -> int:
    """Make ``target`` a valid shard downloaded from ``remote``; return its token count."""
    if is_valid_shard(target):
        progress(f"{NAME}: {target.name} already present")
        return read_header(target)
    url = base_url + remote
    part = target.with_name(target.name + ".part")
    try:
        _download(client, url, part, f"{remote} → {target.name}", progress)
    except httpx.HTTPError as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(f"cannot download {url}: {detail}") from None
    try:
        n_tokens = read_header(part)
    except ShardError as error:
        part.unlink(missing_ok=True)  # a bad download is not resumed
        raise DatasetError(f"{url} is not a valid llm.c shard: {error}") from None
    os.replace(part, target)
    return n_tokens


def _write_meta(target: Path, plan: dict[str, str], counts: dict[str, int]) -> None:
    meta = {
        "meta_version": META_VERSION,
        "dataset": NAME,
        "source": f"Hugging Face Hub dataset {HUB_REPO} (llm.c GPT-2 shards)",
        "tokenizer": "gpt2 (tiktoken), as published by llm.c / modded-nanogpt",
        "layout": "val = fineweb_val_000000; train_i = fineweb_train_{i+1}; "
        "monitor = the train shard after the last one used for training",
        "files": sorted(plan),
        "sources": plan,
        "token_counts": counts,
        "complete": True,
    }
    (target / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def prepare_fineweb(
    data_dir: str | os.PathLike,
    shards: int,
    progress: Progress = print,
    client: httpx.Client | None = None,
    base_url: str = BASE_URL,
) -> Path:
    """Download ``shards`` train shards (+ val, + monitor) to ``data_dir/fineweb10b``."""
    plan = shard_plan(shards)
    target = Path(data_dir) / NAME
    target.mkdir(parents=True, exist_ok=True)
    own = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(30.0, read=120.0))
    try:
        counts = {
            local: fetch_shard(client, target / local, remote, progress, base_url)
            for local, remote in plan.items()
        }
    finally:
        if own:
            client.close()
    _write_meta(target, plan, counts)
    progress(f"{NAME}: {len(plan)} shards, {sum(counts.values()):,} tokens in {target}")
    return target
