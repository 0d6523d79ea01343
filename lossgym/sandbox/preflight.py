"""Pre-flight checks: free, fast, and run before a test spends any budget.

First the workspace must parse; then each editable region must follow the
static policy of SPEC §6.1 (`policy.py`); then compute_loss runs once on random
logits in a subprocess with a time limit (`smoke.py`) and must return a finite
scalar with a finite gradient.
"""

from __future__ import annotations

import json
import subprocess
import symtable
import sys
import tempfile
from collections.abc import Mapping, Sequence

from lossgym.env.errors import AgentError
from lossgym.env.workspace import Region
from lossgym.sandbox.policy import RegionCode, check_regions
from lossgym.sandbox.runner import base_env

PREFIX = "ERROR: Pre-flight check failed (no test was used): "
SMOKE_TIMEOUT_S = 60.0


def check_syntax(files: Mapping[str, str]) -> None:
    """Raise AgentError naming the file and line of the first syntax error."""
    for path, text in files.items():
        if not path.endswith(".py"):
            continue
        try:
            compile(text, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            lineno = getattr(error, "lineno", None) or 0
            msg = getattr(error, "msg", None) or type(error).__name__
            line = (getattr(error, "text", None) or "").rstrip("\n")
            raise AgentError(
                f"{PREFIX}{path} line "
                f"{lineno}: {msg}.\n{lineno:>6}| {line}\n"
                "Fix it with edit, then call test again."
            ) from None


def check_workspace(
    files: Mapping[str, str],
    regions: Mapping[str, Sequence[Region]],
    smoke_timeout_s: float | None = SMOKE_TIMEOUT_S,
) -> None:
    """Syntax of every Python file, the policy of SPEC §6.1 for each editable region,
    then a run of compute_loss on random logits (skipped when smoke_timeout_s is None)."""
    check_syntax(files)
    for path, file_regions in regions.items():
        lines = files[path].splitlines()
        code = [
            RegionCode(r.name, r.start, "\n".join(lines[r.start - 1 : r.end]) + "\n")
            for r in file_regions
        ]
        if code:
            check_regions(path, code, _read_only_names(path, lines, file_regions))
            if smoke_timeout_s is not None:
                run_smoke(path, code, smoke_timeout_s)


def run_smoke(path: str, code: Sequence[RegionCode], timeout_s: float = SMOKE_TIMEOUT_S) -> None:
    """Call compute_loss on random logits in a subprocess (`lossgym.sandbox.smoke`)."""
    request = {"path": path, "regions": [vars(c) for c in code]}
    env = base_env({"OMP_NUM_THREADS": "1"})
    with tempfile.TemporaryDirectory(prefix="lossgym-smoke-") as tmp:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "lossgym.sandbox.smoke"],
                input=json.dumps(request), capture_output=True, text=True,
                timeout=timeout_s, env=env, cwd=tmp, start_new_session=True,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise AgentError(
                f"{PREFIX}compute_loss did not return within {timeout_s:.0f} s on a small "
                "random batch. Fix it with edit, then call test again."
            ) from None
    lines = done.stdout.strip().splitlines()
    try:
        verdict = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise AgentError(
            f"{PREFIX}the smoke run of compute_loss crashed: {' | '.join(tail)}"
        ) from None
    if not verdict.get("ok"):
        raise AgentError(f"{PREFIX}{verdict.get('error')}. Fix it with edit, then call test again.")


def _read_only_names(path: str, lines: list[str], regions: Sequence[Region]) -> frozenset[str]:
    """Module-level names bound by the file's read-only lines: config, model, data, loop."""
    kept = list(lines)
    for region in regions:
        for i in range(region.start - 1, region.end):
            kept[i] = ""
    table = symtable.symtable("\n".join(kept) + "\n", path, "exec")
    return frozenset(
        s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()
    )
