"""`lossgym baselines --until-resolved`: add seeds until every paired delta is resolved.

After the requested seeds, each round reads `GET /api/leaderboard` (the public
JSON, as any client would) and looks at every baseline's `paired` summary: its
delta to cross_entropy at the same seeds, with a standard error and the board's
resolution flag (the `paired_rule` the board states). While some pair is
unresolved and fewer than `max_seeds` seeds have run, it runs the next seed for
cross_entropy and the unresolved baselines only (the task's `seeds:` in order,
then consecutive seeds after its last). Pure helpers plus one loop over a
`BaselineRunner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lossgym.baselines.runner import BaselineRunner, Outcome
from lossgym.leaderboard.paired import RESOLVED
from lossgym.leaderboard.ranking import REFERENCE_BASELINE


def next_seed(task_seeds: list[int], used: list[int]) -> int:
    """The task's first seed not used yet; past its list, the next free one after its last."""
    for seed in task_seeds:
        if seed not in used:
            return seed
    seed = task_seeds[-1] + 1
    while seed in used:
        seed += 1
    return seed


def with_reference(names: list[str]) -> list[str]:
    """The baselines to run, cross_entropy first: every pair needs it at the same seeds."""
    return [REFERENCE_BASELINE, *(n for n in names if n != REFERENCE_BASELINE)]


@dataclass(frozen=True)
class Pair:
    """One baseline against cross_entropy, as the board's `baselines[].paired` says."""

    name: str
    paired: dict[str, Any] | None  # n, mean, std, se, resolution, seeds_to_resolve; or null

    @property
    def resolved(self) -> bool:
        return self.paired is not None and self.paired.get("resolution") == RESOLVED

    def describe(self) -> str:
        head = f"{self.name} - {REFERENCE_BASELINE}:"
        p = self.paired
        if p is None:
            return f"{head} no seed in common yet (unknown)"
        se = "" if p["se"] is None else f" ± {p['se']:.4f}"
        text = f"{head} {p['mean']:+.4f}{se} (n={p['n']}) {p['resolution']}"
        if not self.resolved and p.get("seeds_to_resolve") is not None:
            text += f", ~{p['seeds_to_resolve']} seeds would resolve it"
        return text


def pairs_of(board: dict[str, Any], names: list[str]) -> list[Pair]:
    """Each named baseline but cross_entropy, with its paired summary from the board JSON."""
    summaries = {b["name"]: b.get("paired") for b in board["baselines"]}
    return [Pair(n, summaries.get(n)) for n in names if n != REFERENCE_BASELINE]


def round_report(number: int, seeds: list[int], pairs: list[Pair]) -> str:
    done = sum(p.resolved for p in pairs)
    head = f"round {number}: {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), "
    lines = [head + f"{done} of {len(pairs)} pair(s) resolved"]
    return "\n".join([*lines, *(f"  {p.describe()}" for p in pairs)])


@dataclass
class Resolution:
    outcomes: list[Outcome]
    seeds: list[int]
    pairs: list[Pair]
    max_seeds: int

    @property
    def resolved(self) -> bool:
        return all(p.resolved for p in self.pairs)


def run_until_resolved(
    runner: BaselineRunner, names: list[str], seeds: list[int], max_seeds: int
) -> Resolution:
    """Run `names` over `seeds`, then one more seed a round until every pair is resolved or
    `max_seeds` seeds have run; each round's state is printed through the runner's progress."""
    names, seeds = with_reference(names), list(seeds)
    outcomes = runner.run(names, seeds)
    number = 1
    while True:
        board = runner.api.leaderboard(runner.task.name, runner.profile)
        pairs = pairs_of(board, names)
        runner.progress(round_report(number, seeds, pairs))
        unresolved = [p.name for p in pairs if not p.resolved]
        if not unresolved or len(seeds) >= max_seeds:
            return Resolution(outcomes, seeds, pairs, max_seeds)
        seeds.append(next_seed(runner.task.spec.seeds, seeds))
        outcomes += runner.run([REFERENCE_BASELINE, *unresolved], seeds[-1:])
        number += 1


def final_report(result: Resolution) -> str:
    """Which pairs are resolved, and which the seed cap left unresolvable."""
    resolved = [p.name for p in result.pairs if p.resolved]
    if result.resolved:
        return (
            f"Resolved after {len(result.seeds)} seed(s): every baseline's paired delta to "
            f"{REFERENCE_BASELINE} ({', '.join(resolved) or 'none to compare'})."
        )
    lines = [f"Unresolvable within --max-seeds {result.max_seeds}:"]
    lines += [f"  {p.describe()}" for p in result.pairs if not p.resolved]
    lines.append(f"Resolved: {', '.join(resolved) or 'none'}.")
    return "\n".join(lines)
