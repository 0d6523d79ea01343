"""Paired deltas against cross_entropy at the same seed: numbers, rule, API, CSV and pages."""

from __future__ import annotations

import csv
import html
import io
import math
import statistics
from datetime import datetime

import httpx
import pytest

from lossgym.env.service import EpisodeService
from lossgym.leaderboard.paired import (
    MAX_SEEDS_TO_RESOLVE,
    PAIRED_RULE,
    RESOLVED,
    UNRESOLVED,
    resolution,
    seeds_to_resolve,
    with_paired,
)
from lossgym.leaderboard.ranking import UNKNOWN, Stat, rank_sessions, to_csv
from lossgym.leaderboard.service import _public_row
from lossgym.store.boards import SessionResult
from lossgym.store.db import Database
from tests.conftest import OPERATOR_KEY
from tests.leaderboard.lbtest_helpers import TASK, finish_test, primary_key, scored_session
from tests.leaderboard.page_helpers import get

CE, Z = "baseline:cross_entropy", "baseline:z_loss"
# cross_entropy ran seed 2 twice: the reference at seed 2 is the mean of both.
CE_RUNS = ((1, 4.00), (2, 4.10), (2, 4.14), (3, 3.95), (4, 4.05))
Z_RUNS = ((1, 3.96), (2, 4.07), (3, 3.93), (4, 4.00), (9, 3.00))  # seed 9: no cross_entropy


def result(agent: str, seed: int, value: float | None, n: int = 0) -> SessionResult:
    return SessionResult(
        session_id=f"{agent}-{seed}-{n}", agent=agent, seed=seed, status="ended",
        created_at=datetime(2025, 1, 1), tests_used=1, final_test=None if value is None else 1,
        final_kind="submitted", metrics={} if value is None else {"val": value},
    )  # fmt: skip


def board_of(results: list[SessionResult]) -> dict:
    return with_paired(rank_sessions(results, "val", "minimize"), results, "val")


def _independent_reference() -> dict[int, float]:
    by_seed: dict[int, list[float]] = {}
    for seed, value in CE_RUNS:
        by_seed.setdefault(seed, []).append(value)
    return {seed: statistics.fmean(values) for seed, values in by_seed.items()}


def _results() -> list[SessionResult]:
    results = [result(CE, seed, v, i) for i, (seed, v) in enumerate(CE_RUNS)]
    return results + [result(Z, seed, v) for seed, v in Z_RUNS]


def test_paired_numbers_match_an_independent_computation() -> None:
    board = board_of(_results())
    reference = _independent_reference()
    deltas = [v - reference[s] for s, v in Z_RUNS if s in reference]
    mean, sd = statistics.fmean(deltas), statistics.stdev(deltas)
    se = sd / math.sqrt(len(deltas))

    rows = {r["session_id"]: r for r in board["rows"]}
    for seed, value in Z_RUNS:
        own = rows[f"{Z}-{seed}-0"]["paired"]
        if seed not in reference:  # no cross_entropy at seed 9: nothing to pair with
            assert own is None
            continue
        assert own["n"] == 1 and own["mean"] == pytest.approx(value - reference[seed])
        assert own["se"] is None and own["resolution"] == UNKNOWN
    agent = rows[f"{Z}-1-0"]["agent_stats"]["paired"]
    summary = next(b for b in board["baselines"] if b["agent"] == Z)["paired"]
    for stat in (agent, summary):
        assert stat["n"] == 4
        assert stat["mean"] == pytest.approx(mean) and stat["std"] == pytest.approx(sd)
        assert stat["se"] == pytest.approx(se)
        assert stat["resolution"] == (RESOLVED if abs(mean) > 2 * se else UNRESOLVED)
    assert summary["resolution"] == RESOLVED  # -0.0400 ± 0.0071
    # cross_entropy against itself: the two runs at seed 2 differ from their mean by ±0.02.
    ce = next(b for b in board["baselines"] if b["agent"] == CE)["paired"]
    assert ce["n"] == 5 and ce["mean"] == pytest.approx(0.0)
    assert ce["std"] == pytest.approx(statistics.stdev([0, -0.02, 0.02, 0, 0]))
    assert board["paired_rule"] == PAIRED_RULE


def test_seeds_to_resolve_is_the_smallest_n_the_rule_resolves() -> None:
    for mean, sd in ((0.01, 0.02), (-0.03, 0.05), (0.001, 0.0173), (0.5, 0.1), (0.02, 0.02)):
        needed = seeds_to_resolve(Stat(2, mean, sd))
        ratio = (2 * sd / abs(mean)) ** 2
        assert needed == max(2, math.floor(ratio) + 1) and needed >= math.ceil(ratio)
        assert resolution(Stat(needed, mean, sd)) == RESOLVED  # as measured, at `needed` seeds
        if needed > 2:
            assert resolution(Stat(needed - 1, mean, sd)) == UNRESOLVED
    assert seeds_to_resolve(Stat(3, 0.0, 0.01)) is None  # a zero mean never resolves
    assert seeds_to_resolve(Stat(3, 1e-9, 0.01)) is None  # beyond MAX_SEEDS_TO_RESOLVE
    assert seeds_to_resolve(Stat(3, 0.01, 0.0)) == 2  # no spread: two seeds
    assert seeds_to_resolve(Stat(1, 0.01, None)) is None  # one pair: no std yet
    assert resolution(Stat(1, 0.5, None)) == UNKNOWN
    assert resolution(Stat(2, 0.0, 0.0)) == UNRESOLVED  # |0| > 0 is false
    assert MAX_SEEDS_TO_RESOLVE == 10_000


def test_rows_without_cross_entropy_at_their_seed() -> None:
    no_reference = board_of([result(Z, 1, 3.9), result(Z, 2, 3.95), result("a", 1, 3.8)])
    assert all(r["paired"] is None for r in no_reference["rows"])
    assert no_reference["rows"][1]["agent_stats"]["paired"] is None
    assert [b["paired"] for b in no_reference["baselines"]] == [None]
    unscored = board_of([result(CE, 1, 4.0), result("a", 1, None)])
    assert unscored["rows"][1]["status"] != "ranked" and unscored["rows"][1]["paired"] is None


def test_running_rows_hide_their_paired_fields() -> None:
    row = board_of(_results())["rows"][0]
    running = {**row, "session_status": "active"}
    public = _public_row(running)
    assert public["paired"] is None and public["agent_stats"] is None and public["value"] is None
    assert _public_row(row)["paired"] == row["paired"]  # ended rows are public in full


def test_csv_carries_the_paired_columns() -> None:
    board = board_of(_results())
    table = {r["session_id"]: r for r in csv.DictReader(io.StringIO(to_csv(board)))}
    z1 = table[f"{Z}-1-0"]
    assert float(z1["paired_delta"]) == pytest.approx(-0.04)
    assert z1["agent_paired_n"] == "4" and z1["agent_paired_resolution"] == RESOLVED
    assert float(z1["agent_paired_se"]) > 0 and z1["agent_seeds_to_resolve"] == "2"
    assert table[f"{Z}-9-0"]["paired_delta"] == ""


# ── over HTTP: the API, the pages, and what running sessions hide ────────────


def _fill(service: EpisodeService, db: Database) -> dict[str, str]:
    sids = {}
    for seed, value in ((1337, 4.00), (1338, 4.10), (1339, 3.95)):
        sids[f"ce{seed}"] = scored_session(service, db, CE, seed, value)
    for seed, value in ((1337, 3.97), (1338, 4.02), (1339, 3.97)):  # -0.03, -0.08, +0.02
        sids[f"z{seed}"] = scored_session(service, db, Z, seed, value)
    sids["lonely"] = scored_session(service, db, "lonely", 4242, 3.5)  # no cross_entropy there
    running = service.create_session(TASK, "sneaky", seed=1337)["session_id"]
    assert service.test(running, wait=False).ok
    finish_test(service, db, running, 1, {primary_key(service): 3.123})
    sids["running"] = running
    return sids


def test_api_and_pages_show_paired_deltas(
    server: str, service: EpisodeService, db: Database
) -> None:
    sids = _fill(service, db)
    board = httpx.get(f"{server}/api/leaderboard").json()
    assert board["paired_rule"] == PAIRED_RULE
    rows = {r["session_id"]: r for r in board["rows"]}
    assert rows[sids["z1338"]]["paired"]["mean"] == pytest.approx(-0.08)
    assert rows[sids["lonely"]]["paired"] is None
    assert rows[sids["running"]]["paired"] is None and rows[sids["running"]]["value"] is None
    deltas = [-0.03, -0.08, 0.02]
    z = next(b for b in board["baselines"] if b["name"] == "z_loss")["paired"]
    se = statistics.stdev(deltas) / math.sqrt(3)
    assert z["mean"] == pytest.approx(statistics.fmean(deltas)) and z["se"] == pytest.approx(se)
    assert z["resolution"] == UNRESOLVED and z["seeds_to_resolve"] == 12  # (2*0.05/0.03)^2 = 11.1
    page = html.unescape(get(server, "/"))
    assert "paired Δ ± se" in page and PAIRED_RULE in page
    assert "-0.0300 ± 0.0289 (n=3)" in page and "unresolved (12 seeds would resolve it)" in page
    session = html.unescape(get(server, f"/board/{sids['z1338']}"))
    assert "-0.0800 (its value minus cross_entropy's at seed 1338)" in session
    assert "-0.0300 ± 0.0289 (n=3) over its sessions" in session and PAIRED_RULE in session
    lonely = html.unescape(get(server, f"/board/{sids['lonely']}"))
    assert "no cross_entropy run at seed 4242" in lonely
    record = httpx.get(f"{server}/api/sessions/{sids['z1338']}").json()
    assert record["paired"]["mean"] == pytest.approx(-0.08) and record["agent_paired"]["n"] == 3
    hidden = httpx.get(f"{server}/api/sessions/{sids['running']}").json()
    assert "paired" not in hidden and "agent_paired" not in hidden
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    full = httpx.get(f"{server}/api/sessions/{sids['running']}", headers=operator).json()
    assert full["paired"] is None  # no final yet: nothing to pair, for the operator too
