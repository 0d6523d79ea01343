"""Ranking and seed-noise statistics: pure functions over plain data.

Each session is scored by its final test (submitted, or auto-submitted when it
ended without a submit) on the task's primary metric. Baselines are sessions
whose agent is `baseline:<name>`; the `cross_entropy` baseline, run over
several seeds, is the reference every row is compared with (`NOISE_RULE`).
Nothing here touches the database or the web layer.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from lossgym.store.boards import SessionResult

BASELINE_PREFIX = "baseline:"
REFERENCE_BASELINE = "cross_entropy"
REFERENCE_AGENT = BASELINE_PREFIX + REFERENCE_BASELINE
NOISE_SIGMAS = 2.0
NOISE_RULE = (
    "delta = a row's value minus the mean of the cross_entropy baseline over its seeds. "
    "A row is 'outside noise' when |delta| > 2 x the sample standard deviation of those "
    "seeds, 'within noise' otherwise, and 'unknown' while the baseline has fewer than 2 seeds."
)

# Row statuses: only "ranked" rows have a rank and a value.
RANKED = "ranked"
RUNNING = "running"  # the session is still active
AWAITING_FINAL = "awaiting final"  # ended; a test is still running, then the best is auto-submitted
NO_VALID_TEST = "no valid test"  # ended without any valid test to score
_UNRANKED_ORDER = (RUNNING, AWAITING_FINAL, NO_VALID_TEST)

OUTSIDE, WITHIN, UNKNOWN = "outside noise", "within noise", "unknown"
Direction = Literal["minimize", "maximize"]


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over n values (std is None for n < 2)."""

    n: int
    mean: float
    std: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        if not values:
            return None
        mean = math.fsum(values) / len(values)
        # Two passes in floats: statistics.stdev's exact fractions cost ~0.1 ms a value,
        # too slow for a board page that summarises thousands of sessions.
        std = None
        if len(values) > 1:
            std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return cls(len(values), mean, std)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class Reference:
    """The cross_entropy baseline over its seeds; None when it has not been run."""

    stat: Stat | None

    def delta(self, value: float | None) -> float | None:
        if value is None or self.stat is None:
            return None
        return value - self.stat.mean

    def noise(self, value: float | None) -> str | None:
        """The noise flag of `value` (None when there is no value to judge)."""
        delta = self.delta(value)
        if value is None:
            return None
        if delta is None or self.stat is None or self.stat.std is None:
            return UNKNOWN
        return OUTSIDE if abs(delta) > NOISE_SIGMAS * self.stat.std else WITHIN

    def compare(self, stat: Stat | None) -> dict[str, Any] | None:
        """A group's stat with its mean's delta and noise flag."""
        if stat is None:
            return None
        return {**stat.to_dict(), "delta": self.delta(stat.mean), "noise": self.noise(stat.mean)}


def baseline_name(agent: str) -> str | None:
    """`cross_entropy` for agent `baseline:cross_entropy`; None for any other agent."""
    return agent[len(BASELINE_PREFIX) :] if agent.startswith(BASELINE_PREFIX) else None


def primary_value(result: SessionResult, key: str) -> float | None:
    """The final test's finite primary metric, or None."""
    if result.final_test is None or key not in result.metrics:
        return None
    try:
        value = float(result.metrics[key])
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def row_status(result: SessionResult, key: str) -> str:
    if primary_value(result, key) is not None:
        return RANKED
    if result.status == "active":
        return RUNNING
    if result.final_test is None and result.unfinished_tests:
        return AWAITING_FINAL
    return NO_VALID_TEST


def agent_stats(results: Iterable[SessionResult], key: str) -> dict[str, Stat]:
    """Per agent name, the stat over its scored sessions (one per seed, usually)."""
    values: dict[str, list[float]] = defaultdict(list)
    for result in results:
        value = primary_value(result, key)
        if value is not None:
            values[result.agent].append(value)
    return {agent: stat for agent, vs in values.items() if (stat := Stat.of(vs)) is not None}


def reference_for(stats: dict[str, Stat]) -> Reference:
    return Reference(stats.get(REFERENCE_AGENT))


def _score(value: float, direction: Direction) -> float:
    return value if direction == "minimize" else -value


def ordered(
    results: Iterable[SessionResult], key: str, direction: Direction
) -> list[SessionResult]:
    """Scored sessions best first (ties by date), then the rest grouped by status, by date."""

    def sort_key(result: SessionResult) -> tuple[int, float, datetime, str]:
        value = primary_value(result, key)
        if value is not None:
            return (0, _score(value, direction), result.created_at, result.session_id)
        group = 1 + _UNRANKED_ORDER.index(row_status(result, key))
        return (group, 0.0, result.created_at, result.session_id)

    return sorted(results, key=sort_key)


def ranks(values: Sequence[float | None]) -> list[int | None]:
    """Competition ranks ("1, 2, 2, 4") over values already in ranked order; None unscored."""
    out: list[int | None] = []
    previous: float | None = None
    for position, value in enumerate(values, start=1):
        if value is None:
            out.append(None)
        elif value == previous:
            out.append(out[-1])
        else:
            out.append(position)
        previous = value
    return out


def build_row(
    result: SessionResult,
    key: str,
    rank: int | None,
    reference: Reference,
    group: dict[str, Any] | None,
) -> dict[str, Any]:
    """One board row; `group` is the agent's stats over its sessions (when it has several)."""
    value = primary_value(result, key)
    return {
        "rank": rank,
        "status": row_status(result, key),
        "session_id": result.session_id,
        "agent": result.agent,
        "baseline": baseline_name(result.agent),
        "seed": result.seed,
        "date": iso(result.created_at),
        "session_status": result.status,
        "ended_reason": result.ended_reason,
        "tests_used": result.tests_used,
        "final_test": result.final_test,
        "final_kind": result.final_kind,
        "auto_submitted": result.final_kind == "auto",
        "value": value,
        "delta": reference.delta(value),
        "noise": reference.noise(value),
        "metrics": dict(result.metrics) if result.final_test is not None else {},
        "elapsed_s": result.elapsed_s if result.final_test is not None else None,
        "agent_stats": None if group is None else dict(group),
        "unisolated": result.unisolated,
    }


def rank_sessions(
    results: Sequence[SessionResult], key: str, direction: Direction
) -> dict[str, Any]:
    """The leaderboard of one (task, profile): ranked rows, then the rest; baseline summaries."""
    stats = agent_stats(results, key)
    reference = reference_for(stats)
    in_order = ordered(results, key, direction)
    row_ranks = ranks([primary_value(r, key) for r in in_order])
    groups = {agent: reference.compare(stat) for agent, stat in stats.items() if stat.n > 1}
    rows = [
        build_row(result, key, rank, reference, groups.get(result.agent))
        for result, rank in zip(in_order, row_ranks, strict=True)
    ]
    return {
        "metric": key,
        "direction": direction,
        "noise_rule": NOISE_RULE,
        "reference": reference.compare(reference.stat),
        "rows": rows,
        "baselines": baseline_summaries(results, key, reference, direction),
    }


def baseline_summaries(
    results: Sequence[SessionResult], key: str, reference: Reference, direction: Direction
) -> list[dict[str, Any]]:
    """One entry per baseline: primary metric and every metric as mean ± std over seeds."""
    by_name: dict[str, list[SessionResult]] = defaultdict(list)
    for result in results:
        name = baseline_name(result.agent)
        if name is not None:
            by_name[name].append(result)
    summaries = [_baseline_summary(name, rs, key, reference) for name, rs in by_name.items()]
    return sorted(summaries, key=lambda s: _summary_order(s, direction))


def _baseline_summary(
    name: str, results: list[SessionResult], key: str, reference: Reference
) -> dict[str, Any]:
    scored = [r for r in results if primary_value(r, key) is not None]
    stat = Stat.of([v for r in scored if (v := primary_value(r, key)) is not None])
    per_metric: dict[str, list[float]] = defaultdict(list)
    for result in scored:
        for metric, value in result.metrics.items():
            if isinstance(value, int | float) and math.isfinite(float(value)):
                per_metric[metric].append(float(value))
    metrics = {m: s.to_dict() for m, vs in sorted(per_metric.items()) if (s := Stat.of(vs))}
    return {
        "name": name,
        "agent": BASELINE_PREFIX + name,
        "sessions": len(results),
        "seeds": sorted(r.seed for r in scored),
        "n": 0 if stat is None else stat.n,
        "mean": None if stat is None else stat.mean,
        "std": None if stat is None else stat.std,
        "delta": None if stat is None else reference.delta(stat.mean),
        "noise": None if stat is None else reference.noise(stat.mean),
        "metrics": metrics,
    }


def _summary_order(summary: dict[str, Any], direction: Direction) -> tuple[int, float, str]:
    mean = summary["mean"]
    if mean is None:
        return (1, 0.0, summary["name"])
    return (0, _score(mean, direction), summary["name"])


def metric_keys(rows: Iterable[dict[str, Any]], primary: str) -> list[str]:
    """Every metric key in the rows: the primary one first, then sorted."""
    keys = {k for row in rows for k in row["metrics"]}
    return [primary, *sorted(keys - {primary})]


def mean_curve(curves: Iterable[Sequence[Sequence[float]]]) -> list[list[float]]:
    """Point-wise mean of [step, train_loss, monitor_loss] curves: [step, train, monitor, n]."""
    sums: dict[int, list[float]] = {}
    for curve in curves:
        for step, train, monitor in (tuple(p)[:3] for p in curve):
            acc = sums.setdefault(int(step), [0.0, 0.0, 0.0])
            acc[0] += float(train)
            acc[1] += float(monitor)
            acc[2] += 1
    return [[s, t / n, m / n, n] for s, (t, m, n) in sorted(sums.items())]


CSV_COLUMNS = (
    "rank", "status", "agent", "baseline", "session_id", "seed", "date", "tests_used",
    "final_test", "auto_submitted", "value", "delta", "noise", "agent_n", "agent_mean",
    "agent_std", "paired_delta", "agent_paired_n", "agent_paired_mean", "agent_paired_se",
    "agent_paired_resolution", "agent_seeds_to_resolve", "elapsed_s", "unisolated",
)  # fmt: skip


def to_csv(board: dict[str, Any]) -> str:
    """The board's rows as CSV: fixed columns, then one column per metric key."""
    keys = metric_keys(board["rows"], board["metric"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *keys])
    for row in board["rows"]:
        cells = {**row, **_agent_cells(row)}
        fixed = [_cell(cells.get(c)) for c in CSV_COLUMNS]
        writer.writerow([*fixed, *(_cell(row["metrics"].get(k)) for k in keys)])
    return out.getvalue()


def _agent_cells(row: dict[str, Any]) -> dict[str, Any]:
    """The CSV's agent_* columns (the agent over its sessions) and the row's paired delta."""
    group = row.get("agent_stats") or {}
    paired = group.get("paired") or {}
    return {
        "agent_n": group.get("n"),
        "agent_mean": group.get("mean"),
        "agent_std": group.get("std"),
        "paired_delta": (row.get("paired") or {}).get("mean"),
        "agent_paired_n": paired.get("n"),
        "agent_paired_mean": paired.get("mean"),
        "agent_paired_se": paired.get("se"),
        "agent_paired_resolution": paired.get("resolution"),
        "agent_seeds_to_resolve": paired.get("seeds_to_resolve"),
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def iso(moment: datetime | None) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with a Z."""
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"
