"""The embedded shakespeare dataset: deterministic split by play, shards, meta.json."""

from __future__ import annotations

import json

import pytest

from lossgym.trainer.data import KNOWN_DATASETS, DatasetError, clean_markdown, prepare_dataset
from lossgym.trainer.shards import read_shard
from lossgym.trainer.tokenizer import get_encoding


def test_meta_and_shards_agree(shakespeare_dir):
    meta = json.loads((shakespeare_dir / "meta.json").read_text())
    assert meta["complete"] is True
    plays = meta["plays"]
    all_plays = plays["train"] + plays["monitor"] + plays["val"]
    assert len(all_plays) == len(set(all_plays)) == 38  # disjoint, by play
    assert len(plays["val"]) == 3 and len(plays["monitor"]) == 2
    for split, n in meta["token_counts"].items():
        toks = read_shard(shakespeare_dir / f"{split}_000000.bin")
        assert len(toks) == n
        assert int(toks[-1]) == 50256  # every play ends with <|endoftext|>
        assert int((toks == 50256).sum()) == len(plays[split])
    counts = meta["token_counts"]
    assert counts["train"] > 1_000_000 and 50_000 < counts["val"] < 200_000


def test_prepare_is_idempotent(trainer_data_root):
    msgs: list[str] = []
    path = prepare_dataset("shakespeare", trainer_data_root, progress=msgs.append)
    assert path == trainer_data_root / "shakespeare"
    assert any("already prepared" in m for m in msgs)


def test_val_text_is_clean_english(shakespeare_dir, trainer_data_root):
    enc = get_encoding(trainer_data_root)
    text = enc.decode([int(t) for t in read_shard(shakespeare_dir / "val_000000.bin")[:2000]])
    assert "**" not in text and "#" not in text and "\\[" not in text
    assert "CLEOPATRA:" in text


def test_unknown_dataset_lists_known(tmp_path):
    with pytest.raises(DatasetError, match="shakespeare") as e:
        prepare_dataset("nosuchdata", tmp_path)
    assert "nosuchdata" in str(e.value)
    assert "shakespeare" in KNOWN_DATASETS


def test_clean_markdown():
    md = (
        "# Hamlet\n\n## ACT I\n\n_Enter BERNARDO_\n\n"
        "**BERNARDO**  \nWho's there?  \n_\\[Aside]_  \nNay.\n\n\n"
    )
    assert clean_markdown(md) == (
        "Hamlet\n\nACT I\n\nEnter BERNARDO\n\nBERNARDO:\nWho's there?\n[Aside]\nNay.\n"
    )
