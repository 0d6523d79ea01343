"""Whole-GPU allocation: which of its host's GPUs a worker may give the next job.

Each worker is configured with the GPU ids it may hand out (`LOSSGYM_GPUS=0,1,2,3`;
`none`: it only takes CPU jobs; empty: every GPU the host has). A job holds, from its first stage to
its last, as many whole GPUs as its hungriest stage needs; each stage runs on
the first `stage.gpus` of them. The ids a running job holds and its host are
recorded in its row, and claims are serialized (`BEGIN IMMEDIATE`), so every
worker on a host, in any process, sees what the others hold and two of them
never hand out the same GPU.

A GPU is busy while a job of the same host holds it in state `running` with a
lease that has not expired; a job gives its GPUs back by leaving that state
(finished, re-queued, given up) or by letting its lease run out. Rows of
other hosts never count: their GPUs are other devices with the same ids.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from lossgym.env.catalog import TaskCache
from lossgym.env.task import ProfileSpec
from lossgym.errors import TaskSpecError

NODE = re.compile(r"nvidia\d+")  # a GPU's device node; not nvidiactl, nvidia-uvm, nvidia-caps


class Holding(NamedTuple):
    """What a running job row says it holds (`jobs.host`, `jobs.gpus`, `jobs.lease_until`)."""

    host: str | None
    gpus: str | None
    lease_until: datetime | None


def parse_ids(text: str | None) -> list[str]:
    """'0, 1,,2' -> ['0', '1', '2']: ids in order, blanks and repeats dropped."""
    ids: list[str] = []
    for part in (text or "").split(","):
        part = part.strip()
        if part and part not in ids:
            ids.append(part)
    return ids


def configured_gpus(text: str) -> list[str]:
    """`LOSSGYM_GPUS`: explicit ids, 'none', or empty for every GPU this host has."""
    if text.strip().lower() == "none":
        return []
    if text.strip():
        return parse_ids(text)
    return visible_gpus()


def visible_gpus(
    environ: Mapping[str, str] | None = None,
    dev: Path = Path("/dev"),
    driver: Path = Path("/proc/driver/nvidia"),
) -> list[str]:
    """The ids of every GPU this process may use, found without torch.

    The worker runs inside the API process (`lossgym serve`), which never imports
    torch (SPEC §2), so this reads what CUDA itself would: with the NVIDIA driver
    loaded, one GPU per device node `/dev/nvidia<N>`, ids '0'..'N-1' (the ordinals
    `torch.cuda.device_count()` counts); `CUDA_VISIBLE_DEVICES`, when set, narrows
    that to its entries, kept as written so that a job's own `CUDA_VISIBLE_DEVICES`
    names the same devices, and read as CUDA does: up to the first entry that is not
    a device (e.g. '-1'); empty means none. No driver: no GPUs (a CPU-only worker).
    """
    environ = os.environ if environ is None else environ
    try:
        count = sum(1 for node in dev.glob("nvidia*") if NODE.fullmatch(node.name))
        loaded = driver.is_dir()
    except OSError:
        return []
    if not loaded or count == 0:
        return []
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(count)]
    ids: list[str] = []
    for entry in visible.split(","):
        entry = entry.strip()
        if entry.isdigit():
            if int(entry) >= count:
                break
            entry = str(int(entry))
        elif not entry.startswith(("GPU-", "MIG-")):
            break  # '-1', '', anything else: CUDA stops here
        if entry not in ids:
            ids.append(entry)
    return ids


def gpus_needed(profile: ProfileSpec) -> int:
    """Whole GPUs a test of this profile holds: the most that any of its stages uses."""
    return max(stage.gpus for stage in profile.stages)


def free_gpus(
    configured: Sequence[str], held: Iterable[Holding], host: str, now: datetime
) -> list[str]:
    """The configured ids that no live job on `host` holds, in configured order."""
    busy: set[str] = set()
    for holding in held:
        live = holding.lease_until is not None and holding.lease_until >= now
        if holding.host == host and live:
            busy.update(parse_ids(holding.gpus))
    return [gpu for gpu in configured if gpu not in busy]


def allocate(need: int, free: Sequence[str]) -> list[str] | None:
    """The first `need` free ids, or None when fewer are free (the job waits).

    A job that needs more GPUs than the worker was given never fits, so that
    worker never claims it; another worker with more GPUs may.
    """
    if need > len(free):
        return None
    return list(free[:need])


def job_allocator(tasks: TaskCache, free: Sequence[str]) -> Callable[[str, str], list[str] | None]:
    """`allocate` for a queued job known by its session's (task, profile)."""

    def allocate_for(task: str, profile: str) -> list[str] | None:
        try:
            need = gpus_needed(tasks.get(task).spec.profiles[profile])
        except (TaskSpecError, KeyError):
            # No GPUs for a job this worker cannot run anyway: claiming it lets
            # the worker report the problem instead of leaving the job queued.
            need = 0
        return allocate(need, free)

    return allocate_for
