"""llm.c shard format: written by hand here, read by lossgym.trainer.shards."""

from __future__ import annotations

import numpy as np
import pytest

from lossgym.trainer.shards import ShardError, read_header, read_shard, write_shard


def _llmc_bytes(tokens: np.ndarray, magic: int = 20240520, version: int = 1) -> bytes:
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens)
    return header.tobytes() + tokens.astype("<u2").tobytes()


def test_reads_hand_written_shard(tmp_path):
    toks = np.array([0, 1, 50256, 65535, 31373, 995], dtype=np.uint16)
    path = tmp_path / "train_000000.bin"
    path.write_bytes(_llmc_bytes(toks))
    got = read_shard(path)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, toks)


def test_write_shard_matches_llmc_layout(tmp_path):
    toks = np.arange(1000, dtype=np.int64) * 37 % 50257
    path = write_shard(tmp_path / "val_000000.bin", toks)
    assert path.read_bytes() == _llmc_bytes(toks)
    np.testing.assert_array_equal(read_shard(path), toks)


def test_wrong_magic(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(_llmc_bytes(np.arange(10), magic=12345))
    with pytest.raises(ShardError, match="magic") as e:
        read_shard(path)
    assert "x.bin" in str(e.value)


def test_wrong_version(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(_llmc_bytes(np.arange(10), version=7))
    with pytest.raises(ShardError, match="version 7"):
        read_shard(path)


def test_truncated(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(_llmc_bytes(np.arange(10))[:-4])
    with pytest.raises(ShardError, match="truncated") as e:
        read_header(path)
    assert "x.bin" in str(e.value)
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ShardError, match="header"):
        read_shard(path)


def test_missing_file(tmp_path):
    with pytest.raises(ShardError, match="cannot read"):
        read_shard(tmp_path / "nope.bin")


def test_tokens_must_fit_uint16(tmp_path):
    with pytest.raises(ShardError, match="uint16"):
        write_shard(tmp_path / "x.bin", [1, 2, 70000])
