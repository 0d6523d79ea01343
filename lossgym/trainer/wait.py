"""The waiting half of a warm run (`lossgym.sandbox.standby`): block until the job file.

A standby process imports its heavy modules first, then calls `wait_for_job`:
it polls for `<inbox>/job.json`, which the worker writes whole (write, then
rename), and returns it parsed. A standby nobody used exits after `idle_s`
with status 0 and no output, so a lost worker leaves nothing behind for long.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

POLL_S = 0.02  # the job starts within this much of being handed over
JOB_FILE = "job.json"
EXIT_BAD_JOB = 2  # as the evaluator's "operator's fault" status


def wait_for_job(inbox: str | os.PathLike[str], idle_s: float) -> dict[str, Any]:
    """The job handed to this standby; exits quietly after `idle_s` without one."""
    path = Path(inbox) / JOB_FILE
    deadline = time.monotonic() + idle_s
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(0)
        time.sleep(POLL_S)
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        job = error
    if not isinstance(job, dict):  # the worker wrote it: never the agent's fault
        print(f"standby: {path} does not hold a job: {job!r}", file=sys.stderr)
        sys.exit(EXIT_BAD_JOB)
    return job
