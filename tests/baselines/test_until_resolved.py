"""`lossgym baselines --until-resolved`: seeds are added until the board resolves every pair.

The live server has no worker: each test is finished as soon as the runner has
queued it, by writing the result the worker would write (a value per baseline
and seed), so every round runs in the time HTTP takes.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from typer.testing import CliRunner

from lossgym.baselines.resolution import (
    Pair,
    final_report,
    next_seed,
    pairs_of,
    run_until_resolved,
    with_reference,
)
from lossgym.baselines.runner import BaselineRunner, StateFile, choose
from lossgym.cli import app
from lossgym.client import Api
from lossgym.config import Settings
from lossgym.env.service import EpisodeService
from lossgym.store.db import Database
from tests.leaderboard.lbtest_helpers import finish_test, primary_key

CE = {1337: 4.00, 1338: 4.10, 1339: 3.95, 1340: 4.05, 1341: 4.02, 1342: 3.98}


def _scripted_runner(
    server: str,
    settings: Settings,
    service: EpisodeService,
    db: Database,
    values: dict[tuple[str, int], float],
    lines: list[str],
) -> BaselineRunner:
    """A runner whose every test ends, right after it is queued, with values[(name, seed)]."""
    task, profile, _, _ = choose(settings.tasks_dir, None, None, None, 1)
    api = Api(server, operator_key=settings.operator_key)
    runner = BaselineRunner(api, task, profile, StateFile(None), lines.append, poll_s=0.05)
    start, queue_test = runner._start, runner._queue_test
    current: dict[str, tuple[str, int, str]] = {}

    def start_and_note(name: str, seed: int, key: str) -> tuple[str, str]:
        sid, token = start(name, seed, key)
        current[token] = (name, seed, sid)
        return sid, token

    def queue_and_finish(token: str) -> int:
        n = queue_test(token)
        name, seed, sid = current[token]
        finish_test(service, db, sid, n, {primary_key(service): values[(name, seed)]})
        return n

    runner._start = start_and_note  # type: ignore[method-assign]
    runner._queue_test = queue_and_finish  # type: ignore[method-assign]
    return runner


def _values(deltas: dict[str, list[float]]) -> dict[tuple[str, int], float]:
    """cross_entropy's value at each seed, and each baseline's at CE + its delta there."""
    values = {("cross_entropy", seed): v for seed, v in CE.items()}
    for name, ds in deltas.items():
        values.update({(name, seed): CE[seed] + d for seed, d in zip(CE, ds, strict=False)})
    return values


def _sessions(server: str) -> set[tuple[str, int]]:
    board = httpx.get(f"{server}/api/leaderboard").json()
    return {(r["baseline"], r["seed"]) for r in board["rows"] if r["status"] == "ranked"}


def test_stops_once_every_pair_is_resolved(
    server: str, settings: Settings, service: EpisodeService, db: Database
) -> None:
    # z_loss: -0.05, +0.01, -0.05, -0.05 is resolved at 4 seeds (-0.035 ± 0.015), not before;
    # softcap_ce: +0.030, +0.031 is resolved at 2 seeds, so later rounds leave it out.
    deltas = {"z_loss": [-0.05, 0.01, -0.05, -0.05, 0.0, 0.0], "softcap_ce": [0.03, 0.031]}
    lines: list[str] = []
    runner = _scripted_runner(server, settings, service, db, _values(deltas), lines)
    result = run_until_resolved(runner, ["z_loss", "softcap_ce"], [1337, 1338], max_seeds=8)

    assert result.resolved and result.seeds == [1337, 1338, 1339, 1340]
    assert [p.name for p in result.pairs] == ["z_loss", "softcap_ce"]
    assert all(o.status == "done" for o in result.outcomes) and len(result.outcomes) == 10
    ran = {(o.name, o.seed) for o in result.outcomes}
    assert ran == {(n, s) for n in ("cross_entropy", "z_loss") for s in result.seeds} | {
        ("softcap_ce", 1337),
        ("softcap_ce", 1338),
    }
    assert _sessions(server) == ran
    rounds = [line for line in lines if line.startswith("round ")]
    assert [line.splitlines()[0] for line in rounds] == [
        "round 1: 2 seed(s) (1337, 1338), 1 of 2 pair(s) resolved",
        "round 2: 3 seed(s) (1337, 1338, 1339), 1 of 2 pair(s) resolved",
        "round 3: 4 seed(s) (1337, 1338, 1339, 1340), 2 of 2 pair(s) resolved",
    ]
    assert "z_loss - cross_entropy: -0.0200 ± 0.0300 (n=2) unresolved" in rounds[0]
    assert "softcap_ce - cross_entropy: +0.0305 ± 0.0005 (n=2) resolved" in rounds[0]
    assert "z_loss - cross_entropy: -0.0350 ± 0.0150 (n=4) resolved" in rounds[2]
    assert final_report(result).startswith("Resolved after 4 seed(s)")


def test_stops_at_the_cap_when_never_resolved(
    server: str, settings: Settings, service: EpisodeService, db: Database
) -> None:
    deltas = {"z_loss": [0.05, -0.05, 0.05, -0.05, 0.05, -0.05]}  # a mean of about 0
    lines: list[str] = []
    runner = _scripted_runner(server, settings, service, db, _values(deltas), lines)
    seeds = [1337, 1338, 1339, 1340]
    result = run_until_resolved(runner, ["z_loss"], seeds, max_seeds=6)

    # The task lists 5 seeds (1337..1341); the sixth is the next one after them.
    assert not result.resolved and result.seeds == [*seeds, 1341, 1342]
    assert _sessions(server) == {(n, s) for n in ("cross_entropy", "z_loss") for s in result.seeds}
    assert sum(line.startswith("round ") for line in lines) == 3
    report = final_report(result)
    assert report.startswith("Unresolvable within --max-seeds 6:")
    assert "z_loss - cross_entropy:" in report and "(n=6) unresolved" in report
    assert report.endswith("Resolved: none.")


def test_pure_helpers() -> None:
    assert next_seed([5, 7], []) == 5 and next_seed([5, 7], [5]) == 7
    assert next_seed([5, 7], [5, 7]) == 8 and next_seed([5, 7], [5, 7, 8]) == 9
    assert with_reference(["z_loss"]) == ["cross_entropy", "z_loss"]
    assert with_reference(["z_loss", "cross_entropy"]) == ["cross_entropy", "z_loss"]
    stat = {"n": 3, "mean": 0.01, "std": 0.02, "se": 0.0115, "resolution": "unresolved"}
    board = {"baselines": [{"name": "cross_entropy", "paired": None}, {"name": "z_loss",
             "paired": {**stat, "seeds_to_resolve": 17}}]}  # fmt: skip
    pairs = pairs_of(board, ["cross_entropy", "z_loss", "softcap_ce"])
    assert pairs == [Pair("z_loss", {**stat, "seeds_to_resolve": 17}), Pair("softcap_ce", None)]
    assert pairs[0].describe() == (
        "z_loss - cross_entropy: +0.0100 ± 0.0115 (n=3) unresolved, ~17 seeds would resolve it"
    )
    assert pairs[1].describe() == "softcap_ce - cross_entropy: no seed in common yet (unknown)"
    assert not any(p.resolved for p in pairs)


def test_max_seeds_below_seeds_is_refused(tmp_path: Path) -> None:
    args = ["baselines", "--until-resolved", "--seeds", "3", "--max-seeds", "2"]
    result = CliRunner().invoke(app, [*args, "--state", str(tmp_path / "s.json")])
    assert result.exit_code == 2 and "--max-seeds 2 is below --seeds 3" in result.output
