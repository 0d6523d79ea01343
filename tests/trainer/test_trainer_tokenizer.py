"""GPT-2 tokenizer from the prepared, hash-checked local ranks file."""

from __future__ import annotations

import pytest

from lossgym.trainer.tokenizer import TokenizerError, get_encoding, prepare_tokenizer


def test_gpt2_ids(trainer_data_root):
    enc = get_encoding(trainer_data_root)
    assert enc.encode("hello world") == [31373, 995]
    assert enc.n_vocab == 50257
    assert enc.eot_token == 50256
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    text = "To be, or not to be: that is the question.\n  Whether 'tis nobler"
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_prepare_is_idempotent(trainer_data_root):
    msgs: list[str] = []
    prepare_tokenizer(trainer_data_root, progress=msgs.append)
    assert msgs and "already present" in msgs[0]


def test_not_prepared_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="lossgym data prepare shakespeare"):
        get_encoding(tmp_path)


def test_corrupt_ranks_file_is_rejected(tmp_path, trainer_data_root, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache: read the file itself
    bad = tmp_path / "tokenizer" / "gpt2.tiktoken"
    bad.parent.mkdir()
    bad.write_bytes((trainer_data_root / "tokenizer" / "gpt2.tiktoken").read_bytes()[:-10])
    with pytest.raises(TokenizerError, match="corrupt"):
        get_encoding(tmp_path)
