"""bubblewrap binds only the GPUs a run was given, plus the driver's control nodes."""

from __future__ import annotations

from pathlib import Path

from lossgym.sandbox.local_runner import gpu_device_nodes


def _dev(tmp_path: Path) -> Path:
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm", "null"):
        (tmp_path / name).touch()
    return tmp_path


def test_only_the_allocated_gpus_are_bound(tmp_path: Path) -> None:
    dev = _dev(tmp_path)
    names = [p.name for p in gpu_device_nodes(["1", "3"], dev)]
    assert names == ["nvidia1", "nvidia3", "nvidiactl", "nvidia-uvm"]


def test_no_gpu_no_nodes(tmp_path: Path) -> None:
    assert gpu_device_nodes([], _dev(tmp_path)) == []


def test_ids_that_are_not_indices_bind_every_gpu(tmp_path: Path) -> None:
    names = [p.name for p in gpu_device_nodes(["GPU-4c1d"], _dev(tmp_path))]
    assert names[:4] == ["nvidia0", "nvidia1", "nvidia2", "nvidia3"]
