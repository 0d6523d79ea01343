"""Paired comparisons: each session against the cross_entropy baseline at the same seed.

Two runs at one seed see the same data in the same order, so a session's value
minus cross_entropy's at its seed (its mean there, when it ran that seed more
than once) carries far less seed noise than the delta to cross_entropy's mean
over all its seeds. Over several sessions (an agent's, a baseline's seeds) the
paired deltas give a mean with a standard error, a resolution flag
(`PAIRED_RULE`) and the number of seeds that would resolve that mean. Pure
functions over `SessionResult`s, like `ranking`; `with_paired` adds the fields
to a board `ranking.rank_sessions` built.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lossgym.leaderboard.ranking import (
    REFERENCE_AGENT,
    UNKNOWN,
    Stat,
    primary_value,
)
from lossgym.store.boards import SessionResult

PAIRED_SIGMAS = 2.0  # a mean paired delta is resolved beyond this many standard errors
MIN_PAIRS = 2  # fewer paired sessions: no standard error, resolution unknown
MAX_SEEDS_TO_RESOLVE = 10_000  # beyond this `seeds_to_resolve` is null ("not in practice")
RESOLVED, UNRESOLVED = "resolved", "unresolved"
PAIRED_RULE = (
    "paired delta = a session's value minus the cross_entropy baseline's value at the same seed "
    "(same data order; its mean there if it ran that seed more than once). Over several sessions "
    "(an agent's runs, a baseline's seeds): the mean of those deltas over the seeds cross_entropy "
    "also ran, with its standard error se = sample std / sqrt(n). It is 'resolved' when n >= 2 "
    "and |mean| > 2 x se, 'unresolved' when n >= 2 otherwise, and 'unknown' for n < 2. Seeds to "
    "resolve = the smallest n with 2 x std / sqrt(n) < |mean|, i.e. floor((2 x std / |mean|)^2) "
    "+ 1 (at least 2), if mean and std stay as measured; none when the mean is 0."
)


def reference_by_seed(results: Sequence[SessionResult], key: str) -> dict[int, float]:
    """The cross_entropy baseline's mean value at each seed it was run on."""
    values: dict[int, list[float]] = defaultdict(list)
    for result in results:
        value = primary_value(result, key)
        if result.agent == REFERENCE_AGENT and value is not None:
            values[result.seed].append(value)
    return {seed: sum(vs) / len(vs) for seed, vs in values.items()}


def paired_delta(
    sessions: Sequence[SessionResult], key: str, by_seed: dict[int, float]
) -> Stat | None:
    """Mean ± std of (value - cross_entropy at the same seed) over the seeds both ran."""
    deltas = [
        value - by_seed[s.seed]
        for s in sessions
        if s.seed in by_seed and (value := primary_value(s, key)) is not None
    ]
    return Stat.of(deltas)


def standard_error(stat: Stat) -> float | None:
    """Sample std / sqrt(n); None below `MIN_PAIRS`."""
    if stat.std is None or stat.n < MIN_PAIRS:
        return None
    return stat.std / math.sqrt(stat.n)


def resolution(stat: Stat) -> str:
    """`PAIRED_RULE`'s flag: resolved, unresolved, or unknown for fewer than 2 pairs."""
    se = standard_error(stat)
    if se is None:
        return UNKNOWN
    return RESOLVED if abs(stat.mean) > PAIRED_SIGMAS * se else UNRESOLVED


def seeds_to_resolve(stat: Stat) -> int | None:
    """The smallest n with 2·std/√n < |mean| (mean and std as measured); None when no std
    is known yet, the mean is 0, or more than `MAX_SEEDS_TO_RESOLVE` would be needed."""
    if stat.std is None or stat.mean == 0:
        return None
    ratio = (PAIRED_SIGMAS * stat.std / abs(stat.mean)) ** 2
    if not math.isfinite(ratio) or ratio >= MAX_SEEDS_TO_RESOLVE:
        return None
    return max(MIN_PAIRS, math.floor(ratio) + 1)


def summary(stat: Stat | None) -> dict[str, Any] | None:
    """A paired stat as the API shows it: n, mean, std, se, resolution, seeds_to_resolve."""
    if stat is None:
        return None
    return {
        **stat.to_dict(),
        "se": standard_error(stat),
        "resolution": resolution(stat),
        "seeds_to_resolve": seeds_to_resolve(stat),
    }


def paired_of(
    sessions: Sequence[SessionResult], key: str, by_seed: dict[int, float]
) -> dict[str, Any] | None:
    """The summary of these sessions' paired deltas; None when no seed pairs with one."""
    return summary(paired_delta(sessions, key, by_seed))


def with_paired(
    board: dict[str, Any], results: Sequence[SessionResult], key: str
) -> dict[str, Any]:
    """The board with its paired fields: `paired_rule`; each row's own `paired` (n=1) and,
    in its `agent_stats`, its agent's; each baseline summary's `paired` over its seeds."""
    by_seed = reference_by_seed(results, key)
    by_id = {r.session_id: r for r in results}
    by_agent: dict[str, list[SessionResult]] = defaultdict(list)
    for result in results:
        by_agent[result.agent].append(result)
    # One summary per agent, shared by its rows: a board of n sessions costs O(n), not O(n²).
    agent_paired = {agent: paired_of(runs, key, by_seed) for agent, runs in by_agent.items()}
    rows = []
    for row in board["rows"]:
        own = by_id.get(row["session_id"])
        paired = paired_of([own], key, by_seed) if own is not None else None
        group = row["agent_stats"]
        if group is not None:
            group = {**group, "paired": agent_paired.get(row["agent"])}
        rows.append({**row, "paired": paired, "agent_stats": group})
    baselines = [{**b, "paired": agent_paired.get(b["agent"])} for b in board["baselines"]]
    return {**board, "paired_rule": PAIRED_RULE, "rows": rows, "baselines": baselines}


def session_paired(
    results: Sequence[SessionResult], session_id: str, key: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(this session's paired delta, its agent's over all its sessions) on one board."""
    by_seed = reference_by_seed(results, key)
    own = [r for r in results if r.session_id == session_id]
    if not own:
        return None, None
    agent = [r for r in results if r.agent == own[0].agent]
    return paired_of(own, key, by_seed), paired_of(agent, key, by_seed)
