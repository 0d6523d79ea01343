"""Token shards in the llm.c / modded-nanogpt ``.bin`` format.

Layout: a header of 256 little-endian int32 values (``[0]`` = magic 20240520,
``[1]`` = version 1, ``[2]`` = number of tokens, the rest zero), followed by
``n_tokens`` little-endian uint16 token ids. Pre-tokenized FineWeb shards
published for llm.c load directly.

numpy only: the API process may import this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_TOKEN = 2**16 - 1


class ShardError(ValueError):
    """A shard file is missing, malformed, or holds tokens that do not fit."""


def write_shard(path: str | os.PathLike, tokens) -> Path:
    """Write ``tokens`` (any int sequence or array, ids < 65536) as a shard.

    The file is written next to its destination and renamed into place, so a
    reader never sees a half-written shard.
    """
    path = Path(path)
    toks = np.asarray(tokens)
    if toks.ndim != 1:
        raise ShardError(f"{path}: tokens must be one-dimensional, got shape {toks.shape}")
    if toks.size and (toks.min() < 0 or toks.max() > MAX_TOKEN):
        raise ShardError(f"{path}: token ids must lie in [0, {MAX_TOKEN}] to fit uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, toks.size
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.astype("<u2", copy=False).tobytes())
    os.replace(tmp, path)
    return path


def read_header(path: str | os.PathLike) -> int:
    """Validate the header and file size of a shard; return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard ({e.strerror or e})") from e
    if len(raw) < HEADER_BYTES:
        raise ShardError(
            f"{path}: truncated shard: {size} bytes, shorter than the {HEADER_BYTES}-byte header"
        )
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise ShardError(
            f"{path}: bad magic number {int(header[0])} (expected {MAGIC}); "
            "not an llm.c token shard"
        )
    if header[1] != VERSION:
        raise ShardError(
            f"{path}: unsupported shard version {int(header[1])} (only version {VERSION})"
        )
    n_tokens = int(header[2])
    expected = HEADER_BYTES + 2 * n_tokens
    if n_tokens < 0 or size != expected:
        raise ShardError(
            f"{path}: size mismatch: header says {n_tokens} tokens ({expected} bytes) "
            f"but the file has {size} bytes (truncated or corrupt)"
        )
    return n_tokens


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Return the tokens of a shard as a read-only uint16 memmap (zero copy)."""
    n_tokens = read_header(path)
    if n_tokens == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n_tokens,))


def list_shards(directory: str | os.PathLike, split: str) -> list[Path]:
    """Sorted ``<split>_*.bin`` files of a dataset directory."""
    return sorted(Path(directory).glob(f"{split}_*.bin"))
