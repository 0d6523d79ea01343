"""bubblewrap binds only the GPUs a run was given, plus the driver's control nodes;
the GPUs a worker may give out are found without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lossgym.sandbox import gpus
from lossgym.sandbox.gpus import visible_gpus
from lossgym.sandbox.local_runner import gpu_device_nodes
from tests.conftest import REPO


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


# GPU discovery reads device nodes and CUDA_VISIBLE_DEVICES, never torch: the worker
# runs inside the API process, which must not import it (SPEC §2).


def _driver(tmp_path: Path) -> Path:
    driver = tmp_path / "proc-driver-nvidia"
    driver.mkdir()
    return driver


def test_every_gpu_node_is_a_gpu(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (_dev(dev) / "nvidia-caps").mkdir()
    assert visible_gpus({}, dev, _driver(tmp_path)) == ["0", "1", "2", "3"]


def test_no_driver_or_no_nodes_no_gpus(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidiactl").touch()
    assert visible_gpus({}, dev, _driver(tmp_path)) == []  # no GPU nodes
    assert visible_gpus({}, _dev(dev), tmp_path / "absent") == []  # nodes, driver not loaded


@pytest.mark.parametrize(
    ("visible", "ids"),
    [
        ("2,3", ["2", "3"]),  # kept as written: a job's CUDA_VISIBLE_DEVICES=2 is GPU 2
        (" 1 , 01", ["1"]),
        ("GPU-4c1d,MIG-77", ["GPU-4c1d", "MIG-77"]),
        ("", []),
        ("-1", []),
        ("1,-1,2", ["1"]),  # CUDA stops at the first entry that is not a device
        ("3,7,0", ["3"]),
    ],
)
def test_cuda_visible_devices_narrows_the_gpus(
    tmp_path: Path, visible: str, ids: list[str]
) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    env = {"CUDA_VISIBLE_DEVICES": visible}
    assert visible_gpus(env, _dev(dev), _driver(tmp_path)) == ids


def test_settings_pick_explicit_none_or_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "visible_gpus", lambda: ["0", "1"])
    assert gpus.configured_gpus("none") == []
    assert gpus.configured_gpus(" 2, 3,2 ") == ["2", "3"]
    assert gpus.configured_gpus("") == ["0", "1"]


def test_discovery_on_this_host_needs_no_torch() -> None:
    code = (
        "import sys\n"
        "from lossgym.sandbox.gpus import configured_gpus\n"
        "configured_gpus('')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
