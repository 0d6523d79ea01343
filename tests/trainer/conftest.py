"""Fixtures for the trainer tests: the prepared embedded dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from trainertest_helpers import REPO


@pytest.fixture(scope="session")
def trainer_data_root() -> Path:
    """The data directory with `shakespeare` prepared (idempotent)."""
    from lossgym.trainer.data import prepare_dataset

    root = Path(os.environ.get("LOSSGYM_DATA_DIR", REPO / "data")).resolve()
    prepare_dataset("shakespeare", root, progress=lambda _msg: None)
    return root


@pytest.fixture(scope="session")
def shakespeare_dir(trainer_data_root: Path) -> Path:
    return trainer_data_root / "shakespeare"


@pytest.fixture(scope="session")
def train_view(tmp_path_factory, shakespeare_dir: Path) -> Path:
    """What the sandbox mounts: symlinks to the train and monitor shards only."""
    view = tmp_path_factory.mktemp("train_data")
    for split in ("train", "monitor"):
        for shard in sorted(shakespeare_dir.glob(f"{split}_*.bin")):
            (view / shard.name).symlink_to(shard)
    return view
