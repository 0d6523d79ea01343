"""Runs grouped by agent: mean ± std, delta and paired delta to cross_entropy, usage."""

from __future__ import annotations

import statistics
from datetime import datetime

import pytest

from lossgym.env.service import EpisodeService
from lossgym.env.usage import UsageReport
from lossgym.leaderboard.groups import agent_groups
from lossgym.leaderboard.service import LeaderboardService
from lossgym.store.boards import SessionResult
from lossgym.store.db import Database
from tests.leaderboard.lbtest_helpers import TASK, primary_key, scored_session

CE = "baseline:cross_entropy"
CE_VALUES = {1337: 4.00, 1338: 4.02, 1339: 4.04}
AGENT_RUNS = ((1337, 3.90), (1338, 3.95), (1340, 3.80))  # seed 1340: no baseline to pair with


def result(agent: str, seed: int, value: float | None, status: str = "ended") -> SessionResult:
    scored = value is not None
    return SessionResult(
        session_id=f"{agent}-{seed}-{value}", agent=agent, seed=seed, status=status,
        created_at=datetime(2025, 1, 1), tests_used=1, final_test=1 if scored else None,
        metrics={"val": value} if scored else {},
    )  # fmt: skip


def test_group_numbers_match_an_independent_computation() -> None:
    results = [result(CE, seed, v) for seed, v in CE_VALUES.items()]
    results += [result("agent-a", seed, v) for seed, v in AGENT_RUNS]
    results += [result("agent-a", 1337, None), result("agent-a", 1338, None, status="active")]
    groups = {g["agent"]: g for g in agent_groups(results, "val", "minimize")}
    assert list(groups) == ["agent-a", CE]  # best mean first

    values = [v for _, v in AGENT_RUNS]
    ce_mean = statistics.fmean(CE_VALUES.values())
    a = groups["agent-a"]
    assert a["n"] == 3 and a["seeds"] == [1337, 1338, 1340]
    assert a["mean"] == pytest.approx(statistics.fmean(values))
    assert a["std"] == pytest.approx(statistics.stdev(values))
    assert a["delta"] == pytest.approx(statistics.fmean(values) - ce_mean)
    assert a["noise"] == "outside noise"  # |-0.137| > 2 x 0.02
    paired = [v - CE_VALUES[s] for s, v in AGENT_RUNS if s in CE_VALUES]
    assert a["paired_delta"]["n"] == 2
    assert a["paired_delta"]["mean"] == pytest.approx(statistics.fmean(paired))
    assert a["paired_delta"]["std"] == pytest.approx(statistics.stdev(paired))
    assert a["baseline"] is None and a["usage"] is None

    ce = groups[CE]
    assert ce["baseline"] == "cross_entropy" and ce["n"] == 3
    assert ce["std"] == pytest.approx(statistics.stdev(CE_VALUES.values()))
    assert ce["delta"] == pytest.approx(0.0) and ce["paired_delta"]["mean"] == pytest.approx(0.0)


def test_maximized_metrics_put_the_highest_mean_first() -> None:
    results = [result("low", 1, 1.0), result("high", 1, 2.0), result("high", 2, 4.0)]
    groups = agent_groups(results, "val", "maximize")
    assert [g["agent"] for g in groups] == ["high", "low"]
    assert groups[0]["delta"] is None and groups[0]["noise"] == "unknown"  # no baseline
    assert groups[1]["std"] is None and groups[1]["paired_delta"] is None  # one run


@pytest.fixture
def board_service(service: EpisodeService, db: Database) -> LeaderboardService:
    return LeaderboardService(db, service.tasks)


def test_board_groups_from_the_database_with_reported_usage(
    service: EpisodeService, db: Database, board_service: LeaderboardService
) -> None:
    for seed, value in CE_VALUES.items():
        scored_session(service, db, CE, seed, value)
    sids = [scored_session(service, db, "agent-a", seed, v) for seed, v in AGENT_RUNS]
    running = service.create_session(TASK, "agent-a", seed=1337)["session_id"]
    usage = [("model-x", 1000, 200, 0.5), ("model-y", 3000, 600, None)]
    for sid, (model, tokens_in, tokens_out, cost) in zip(sids, usage, strict=False):
        totals = {"model": model, "input_tokens": tokens_in, "output_tokens": tokens_out}
        service.usage.record(sid, UsageReport(**totals, requests=2, cost_usd=cost))
    service.usage.record(
        running, UsageReport(model="model-z", input_tokens=1, output_tokens=1, requests=1)
    )

    board = board_service.board(TASK)
    assert board["metric"] == primary_key(service)
    groups = {g["agent"]: g for g in board["groups"]}
    a = groups["agent-a"]
    assert a["n"] == 3 and running not in a["session_ids"]
    assert a["session_ids"] == [sids[2], sids[0], sids[1]]  # best first
    assert a["mean"] == pytest.approx(statistics.fmean(v for _, v in AGENT_RUNS))
    assert a["usage"] == {
        "sessions": 2,
        "models": ["model-x", "model-y"],  # not model-z: that session is still running
        "tokens": {"n": 2, "mean": 2400.0, "std": pytest.approx(statistics.stdev([1200, 3600]))},
        "cost_usd": {"n": 1, "mean": 0.5, "std": None},
    }
    row_stats = next(r for r in board["rows"] if r["session_id"] == sids[0])["agent_stats"]
    assert {k: row_stats[k] for k in ("n", "mean", "std", "delta")} == {
        k: a[k] for k in ("n", "mean", "std", "delta")
    }  # the rows' agent_stats and the groups are one computation
