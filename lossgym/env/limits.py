"""What a task lets a stage's processes use: `limits:` and `preflight:` in task.yaml.

Sizes are written as people write them (`6GiB`, `512MiB`, `4g`; binary units)
and validated into bytes. Every runner enforces these (SPEC §6.2).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """Bytes from an int or a size such as '4GiB', '4g', '512MiB' (binary units)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 4GiB")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be positive")
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"must be a size such as 4GiB or 512MiB, got {value!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * 1024 ** "_kmgt".index(unit or "_"))
    if size <= 0:
        raise ValueError("must be positive")
    return size


class LimitsSpec(_Strict):
    """What a stage's processes may use, enforced by every runner (SPEC §6.2)."""

    memory: Annotated[int, PlainValidator(parse_size)]  # bytes; written as 4GiB
    cpus: Annotated[float, Field(gt=0)]
    pids: Annotated[int, Field(ge=16)]


class PreflightSpec(_Strict):
    """The pre-flight smoke run of compute_loss: its sandbox limits and time limit."""

    time_limit_s: Annotated[float, Field(gt=0)] = 60.0
    limits: LimitsSpec = LimitsSpec(memory=2 * 1024**3, cpus=1, pids=64)
