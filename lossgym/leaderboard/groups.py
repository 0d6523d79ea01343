"""Runs grouped by agent: each agent's scored sessions on one board, as mean ± std.

A group is every finished session of one agent on one (task, profile) whose
final test has a primary value: n, mean and sample std of that value (the
same `Stat` the baselines and the rows' `agent_stats` use), the delta of the
mean to the cross_entropy baseline with its noise flag (`Reference`), and the
**paired** delta: each session's value minus the cross_entropy mean at the
same seed (same data order), over the sessions whose seed the baseline ran,
with its standard error and resolution flag (`paired.PAIRED_RULE`).
What the agents reported of their usage (models, tokens, cost) rides along.
Pure functions over `SessionResult`s, like `ranking`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lossgym.leaderboard.paired import paired_of, reference_by_seed
from lossgym.leaderboard.ranking import (
    Direction,
    Reference,
    Stat,
    agent_stats,
    baseline_name,
    ordered,
    primary_value,
    reference_for,
)
from lossgym.store.boards import SessionResult


def agent_groups(
    results: Sequence[SessionResult], key: str, direction: Direction
) -> list[dict[str, Any]]:
    """One group per agent with a scored session, best mean first (ties by name)."""
    stats = agent_stats(results, key)
    reference = reference_for(stats)
    by_seed = reference_by_seed(results, key)
    scored: dict[str, list[SessionResult]] = defaultdict(list)
    for result in ordered(results, key, direction):
        if primary_value(result, key) is not None:
            scored[result.agent].append(result)
    groups = [
        _group(agent, sessions, stats[agent], reference, by_seed, key)
        for agent, sessions in scored.items()
    ]
    sign = 1.0 if direction == "minimize" else -1.0
    return sorted(groups, key=lambda g: (sign * g["mean"], g["agent"]))


def _group(
    agent: str,
    sessions: list[SessionResult],
    stat: Stat,
    reference: Reference,
    by_seed: dict[int, float],
    key: str,
) -> dict[str, Any]:
    return {
        "agent": agent,
        "baseline": baseline_name(agent),
        **(reference.compare(stat) or {}),
        "paired_delta": paired_of(sessions, key, by_seed),
        "seeds": sorted(s.seed for s in sessions),
        "session_ids": [s.session_id for s in sessions],  # best first
        "usage": usage_summary(sessions),
    }


def usage_summary(sessions: Sequence[SessionResult]) -> dict[str, Any] | None:
    """What the sessions' agents reported: models, and tokens and cost per session."""
    reports = [s.usage for s in sessions if s.usage is not None]
    if not reports:
        return None
    tokens = Stat.of([float(u["input_tokens"] + u["output_tokens"]) for u in reports])
    cost = Stat.of([float(u["cost_usd"]) for u in reports if u["cost_usd"] is not None])
    return {
        "sessions": len(reports),
        "models": sorted({str(u["model"]) for u in reports}),
        "tokens": None if tokens is None else tokens.to_dict(),
        "cost_usd": None if cost is None else cost.to_dict(),
    }
