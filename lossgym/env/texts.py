"""The texts an agent reads about tests and submissions (SPEC §4, seed transcript).

Everything here is pure formatting over plain data, so the exact strings can be
tested without a database or a training run. Hidden metrics are removed here,
in one place, from every text that reaches an agent.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

TRAIN_LINES_SHOWN = 5
LOG_TAIL_LINES = 30
PREFLIGHT_PASSED = (
    "OK: Pre-flight check passed (no test was used): the workspace parses, the editable "
    "regions follow the policy, and compute_loss returned a finite scalar with a finite "
    "gradient on random logits."
)


@dataclass
class StageView:
    label: str
    kind: str
    status: str  # ok | failed | timeout | invalid | pending | running
    exit_code: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    train_lines: list[str] = field(default_factory=list)
    log_tail: str = ""
    elapsed_s: float = 0.0
    time_limit_s: float = 0.0
    reason: str = ""


def is_hidden(key: str, hidden_globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in hidden_globs)


def visible_metrics(metrics: dict[str, Any], hidden_globs: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not is_hidden(k, hidden_globs)}


def saved_metrics(stages: Sequence[StageView]) -> dict[str, float | int]:
    """What the leaderboard records for a test: each stage's metrics, then its wall time."""
    saved: dict[str, float | int] = {}
    for stage in stages:
        saved.update({k: round(float(v), 4) for k, v in stage.metrics.items()})
        if stage.status in ("ok", "invalid", "failed", "timeout"):
            saved[f"elapsed_{stage.label}"] = int(round(stage.elapsed_s))
    return saved


def test_header(n: int, remaining: int) -> str:
    plural = "test" if remaining == 1 else "tests"
    if n == 1:
        hint = "call submit(n=1) to submit this result"
    else:
        hint = "call submit(n=N) to choose which test result to submit as final"
    return f"[Test #{n}] ({remaining} {plural} remaining; {hint})"


def stage_block(stage: StageView, hidden_globs: Sequence[str]) -> str:
    lines = [f"### {stage.label} ({stage.kind})"]
    if stage.train_lines:
        lines.append("Training metrics (last steps):")
        lines.extend(stage.train_lines[-TRAIN_LINES_SHOWN:])
    if stage.status == "timeout":
        lines.append(
            f"[STATUS: TIMEOUT after {stage.time_limit_s:.0f} s] The stage ran past its time "
            "limit and was stopped; this result does not count."
        )
    elif stage.status == "failed":
        lines.append(f"[STATUS: FAILED exit={stage.exit_code}]")
        if stage.reason:
            lines.append(stage.reason)
        if stage.log_tail:
            lines.append(f"Log tail (last {LOG_TAIL_LINES} lines of the run's output):")
            lines.append(_tail(stage.log_tail))
    elif stage.status == "error":
        lines.append(f"[STATUS: INFRASTRUCTURE ERROR] {stage.reason}.")
    elif stage.status == "invalid":
        lines.append(f"[STATUS: INVALID] {stage.reason}; this result does not count.")
    shown = visible_metrics(stage.metrics, hidden_globs)
    if shown:
        values = ", ".join(f"{k}={float(v):.4f}" for k, v in shown.items())
        lines.append(f"Final metrics ({stage.label}): {values}")
    return "\n".join(lines)


def leaderboard_line(stages: Sequence[StageView], hidden_globs: Sequence[str]) -> str:
    return f"[Leaderboard] Results saved: {visible_metrics(saved_metrics(stages), hidden_globs)}"


def test_report(
    n: int, remaining: int, stages: Sequence[StageView], hidden_globs: Sequence[str]
) -> str:
    parts = [test_header(n, remaining)]
    parts.extend(stage_block(stage, hidden_globs) for stage in stages)
    parts.append(leaderboard_line(stages, hidden_globs))
    return "\n\n".join(parts)


def submit_report(n: int, stages: Sequence[StageView], hidden_globs: Sequence[str]) -> str:
    parts = [f"[submit] Submitting result from test #{n} as final."]
    parts.extend(stage_block(stage, hidden_globs) for stage in stages)
    parts.append(f"[submit] Finalized test #{n} as final.")
    parts.append(leaderboard_line(stages, hidden_globs))
    return "\n\n".join(parts)


def test_infra_error(n: int, remaining: int, reason: str) -> str:
    plural = "test" if remaining == 1 else "tests"
    return (
        f"[Test #{n}] was not counted: the infrastructure failed ({reason}). It was retried "
        f"and has been given back; you have {remaining} {plural} remaining. Call test again."
    )


def test_pending(n: int, status: str, session_id: str, elapsed_s: float) -> str:
    state = "is queued" if status == "queued" else f"is running ({elapsed_s:.0f} s so far)"
    return (
        f"[Test #{n}] {state}. It still counts; its result will be reported when it "
        f"finishes. Poll GET /sessions/{session_id}/tests/{n} for its state."
    )


def budget_exhausted(used: int, budget: int, valid_tests: Sequence[int]) -> str:
    choices = ", ".join(str(n) for n in valid_tests) or "none finished yet"
    return (
        f"ERROR: Test budget exhausted ({used}/{budget}). Call submit(n=N) to choose "
        f"your final result from the tests you ran (valid: {choices})."
    )


def _tail(text: str) -> str:
    """The log's last lines, each marked as output so none can pass for a report line."""
    return "\n".join(f"  | {line}" for line in text.rstrip("\n").splitlines()[-LOG_TAIL_LINES:])
