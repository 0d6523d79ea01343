"""The reproducibility record of a stage run: ``run.json`` in its directory.

Written before training starts (resolved training and model config, workspace
hash, seed, library versions, a device guess) and completed after it with the
device the training log reports (``device_source: "train.log"``; the log is the
agent's script's output, so that field is informational, never a metric). The
worker also stores the dict in ``stage_results.info["run"]``.

No torch import here: versions come from package metadata.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lossgym.sandbox.stages import StageJob

RECORD_NAME = "run.json"
LIBRARIES = ("torch", "numpy", "tiktoken", "safetensors")
DEVICE_LINE = re.compile(r"^world size (\d+), device (\S+),", re.M)
LOG_HEAD_BYTES = 64_000


def workspace_hash(files: dict[str, str]) -> str:
    """sha256 of the workspace files as sorted JSON (as ``Workspace.content_hash``)."""
    blob = json.dumps(files, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _device_guess() -> str:
    """Before training: "cuda" where an NVIDIA driver is present, else "cpu"."""
    return "cuda" if Path("/dev/nvidiactl").exists() else "cpu"


def build_record(job: StageJob, config: dict[str, Any]) -> dict[str, Any]:
    """The record of ``job`` whose resolved training config is ``config``."""
    return {
        "label": job.label,
        "seed": job.seed,
        "nproc": job.nproc,
        "config": config,
        "model_config": job.model_config,
        "workspace_sha256": workspace_hash(job.files),
        "versions": library_versions(),
        "device": _device_guess(),
        "device_source": "host",
    }


def write_record(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    (run_dir / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return record


def device_from_log(log_path: Path) -> tuple[str, int] | None:
    """(device, world size) from the template's ``world size N, device D, ...`` line."""
    try:
        with open(log_path, "rb") as log:
            head = log.read(LOG_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    match = DEVICE_LINE.search(head)
    return (match[2], int(match[1])) if match else None


def complete_record(run_dir: Path, log_path: Path) -> dict[str, Any]:
    """Re-read ``run.json``, fill in the device the training log reports, save it."""
    try:
        record = json.loads((run_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    found = device_from_log(log_path)
    if found is not None:
        record["device"], record["world_size"] = found
        record["device_source"] = "train.log"
    return write_record(run_dir, record)
