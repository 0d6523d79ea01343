"""Ranking on a database filled with known values, and the pure ranking rules."""

from __future__ import annotations

import csv
import io
import json
import statistics
from datetime import datetime, timedelta

import pytest

from lossgym.env.service import EpisodeService
from lossgym.errors import NotFound
from lossgym.leaderboard.ranking import (
    NOISE_RULE,
    OUTSIDE,
    UNKNOWN,
    WITHIN,
    SessionResult,
    Stat,
    mean_curve,
    rank_sessions,
    ranks,
    to_csv,
)
from lossgym.leaderboard.service import LeaderboardService
from lossgym.store import queries
from lossgym.store.db import Database
from tests.leaderboard.lbtest_helpers import (
    TASK,
    end,
    finish_test,
    primary_key,
    scored_session,
    set_created,
)

T0 = datetime(2025, 1, 1, 12, 0, 0)
CE = "baseline:cross_entropy"


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def board_service(service: EpisodeService, db: Database) -> LeaderboardService:
    return LeaderboardService(db, service.tasks)


@pytest.fixture
def filled(service: EpisodeService, db: Database) -> dict[str, str]:
    """Known results: cross_entropy over 3 seeds (4.00, 4.02, 4.04: mean 4.02, std 0.02), ..."""
    hidden = f"piqa_acc_{primary_key(service).removeprefix('val_loss_')}"
    sids: dict[str, str] = {}

    def add(name: str, agent: str, seed: int, value: float, minute: int, **kw: object) -> None:
        sids[name] = scored_session(service, db, agent, seed, value, created_at=_at(minute), **kw)  # type: ignore[arg-type]

    for i, value in enumerate((4.00, 4.02, 4.04)):
        add(f"ce{i}", CE, 1337 + i, value, minute=i)
    add("z0", "baseline:z_loss", 1337, 3.99, minute=3)
    add("z1", "baseline:z_loss", 1338, 4.01, minute=4)
    add("good0", "good-agent", 1337, 3.90, minute=5, extra={hidden: 61.5})
    add("good1", "good-agent", 1338, 3.92, minute=6)
    add("tie_late", "tie-b", 1337, 4.01, minute=8)
    add("tie_early", "tie-a", 1337, 4.01, minute=7)
    add("auto", "auto-agent", 1337, 4.10, minute=9, auto=True)
    # No valid test: its only test failed, then it ended.
    sids["broken"] = service.create_session(TASK, "broken-agent", seed=1337)["session_id"]
    service.test(sids["broken"], wait=False)
    finish_test(service, db, sids["broken"], 1, None)
    end(service, db, sids["broken"])
    # Still running, and ended with a test still running (its final is not in yet).
    sids["running"] = service.create_session(TASK, "running-agent", seed=1337)["session_id"]
    service.test(sids["running"], wait=False)
    sids["awaiting"] = service.create_session(TASK, "awaiting-agent", seed=1337)["session_id"]
    service.test(sids["awaiting"], wait=False)
    end(service, db, sids["awaiting"], "step_limit")
    for i, name in enumerate(("broken", "running", "awaiting")):
        set_created(db, sids[name], _at(20 + i))
    sids["hidden_key"] = hidden
    return sids


def _rows_by_session(board: dict) -> dict[str, dict]:
    return {row["session_id"]: row for row in board["rows"]}


def test_order_ties_and_unscored_sessions_last(
    filled: dict[str, str], board_service: LeaderboardService
) -> None:
    board = board_service.board(operator=True)
    order = [row["session_id"] for row in board["rows"]]
    expected = ["good0", "good1", "z0", "ce0", "z1", "tie_early", "tie_late", "ce1", "ce2"]
    expected += ["auto", "running", "awaiting", "broken"]
    # z1, tie_early and tie_late all scored 4.01: same rank, ordered by date.
    assert order == [filled[name] for name in expected]
    assert [row["rank"] for row in board["rows"]] == [1, 2, 3, 4, 5, 5, 5, 8, 9, 10] + [None] * 3
    statuses = [row["status"] for row in board["rows"][-3:]]
    assert statuses == ["running", "awaiting final", "no valid test"]
    assert all(row["value"] is None and row["metrics"] == {} for row in board["rows"][-3:])
    assert (board["task"], board["profile"], board["direction"]) == (TASK, "tiny-cpu", "minimize")
    assert board["metric"] == board["metric_keys"][0] and board["noise_rule"] == NOISE_RULE


def test_mean_std_delta_and_noise_flag(
    filled: dict[str, str], board_service: LeaderboardService
) -> None:
    board = board_service.board()
    rows = _rows_by_session(board)
    reference = board["reference"]
    assert reference["n"] == 3
    assert reference["mean"] == pytest.approx(4.02)
    assert reference["std"] == pytest.approx(0.02)
    # |delta| > 2 x 0.02 is outside the noise.
    good = rows[filled["good0"]]
    assert good["delta"] == pytest.approx(-0.12) and good["noise"] == OUTSIDE
    assert rows[filled["z0"]]["delta"] == pytest.approx(-0.03)
    assert rows[filled["z0"]]["noise"] == WITHIN
    assert rows[filled["auto"]]["delta"] == pytest.approx(0.08)
    assert rows[filled["auto"]]["noise"] == OUTSIDE
    assert rows[filled["broken"]]["delta"] is None and rows[filled["broken"]]["noise"] is None
    # An agent with two seeds gets mean ± std; one with a single session does not.
    group = good["agent_stats"]
    assert group["n"] == 2 and group["mean"] == pytest.approx(3.91)
    assert group["std"] == pytest.approx(statistics.stdev([3.90, 3.92]))
    assert group["noise"] == OUTSIDE
    assert rows[filled["tie_early"]]["agent_stats"] is None


def test_baselines_aggregate_over_seeds(
    filled: dict[str, str], board_service: LeaderboardService, service: EpisodeService
) -> None:
    baselines = {b["name"]: b for b in board_service.board()["baselines"]}
    assert list(baselines) == ["z_loss", "cross_entropy"]  # best mean first
    ce, z = baselines["cross_entropy"], baselines["z_loss"]
    assert (ce["n"], ce["seeds"], ce["agent"]) == (3, [1337, 1338, 1339], CE)
    assert ce["mean"] == pytest.approx(4.02) and ce["std"] == pytest.approx(0.02)
    assert ce["delta"] == pytest.approx(0.0) and ce["noise"] == WITHIN
    assert z["mean"] == pytest.approx(4.00) and z["std"] == pytest.approx(
        statistics.stdev([3.99, 4.01])
    )
    assert z["delta"] == pytest.approx(-0.02) and z["noise"] == WITHIN
    assert ce["metrics"][primary_key(service)]["n"] == 3
    rows = _rows_by_session(board_service.board())
    assert rows[filled["ce0"]]["baseline"] == "cross_entropy"
    assert rows[filled["good0"]]["baseline"] is None


def test_auto_submitted_finals_are_marked(
    filled: dict[str, str], board_service: LeaderboardService
) -> None:
    rows = _rows_by_session(board_service.board())
    auto, submitted = rows[filled["auto"]], rows[filled["good0"]]
    assert auto["auto_submitted"] and auto["final_kind"] == "auto" and auto["status"] == "ranked"
    assert not submitted["auto_submitted"] and submitted["final_kind"] == "submitted"
    assert submitted["tests_used"] == 1 and submitted["elapsed_s"] == pytest.approx(10.0)
    assert submitted["date"] == "2025-01-01T12:05:00Z"
    assert board_service.session(filled["auto"])["final"]["auto_submitted"] is True


def test_hidden_metrics_on_the_board_never_in_agent_texts(
    filled: dict[str, str], board_service: LeaderboardService, db: Database, service: EpisodeService
) -> None:
    hidden, sid = filled["hidden_key"], filled["good0"]
    board = board_service.board()
    assert _rows_by_session(board)[sid]["metrics"][hidden] == 61.5
    assert hidden in board["metric_keys"]
    record = board_service.session(sid)
    assert record["tests"][0]["metrics"][hidden] == 61.5
    assert hidden in to_csv(board).splitlines()[0]
    with db.transaction() as tx:
        texts = [c.text for c in queries.tool_calls(tx, sid)]
    assert texts and all("piqa" not in text for text in texts)
    assert all("piqa" not in call["text"] for call in record["transcript"])
    agent_view = service.test_info(sid, 1)
    assert "piqa" not in json.dumps(agent_view)


def test_csv_has_the_same_rows(filled: dict[str, str], board_service: LeaderboardService) -> None:
    board = board_service.board()
    name, text = board_service.board_csv()
    assert name == f"leaderboard-{TASK}-tiny-cpu.csv"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["session_id"] for r in rows] == [r["session_id"] for r in board["rows"]]
    good = next(r for r in rows if r["session_id"] == filled["good0"])
    assert float(good["value"]) == pytest.approx(3.90) and good["noise"] == OUTSIDE
    assert good["agent_n"] == "2" and good["auto_submitted"] == "false"


def test_session_record_has_tests_diffs_curves_transcript(
    filled: dict[str, str], board_service: LeaderboardService
) -> None:
    record = board_service.session(filled["good0"])
    assert record["redacted"] is False and record["status"] == "ended"
    test = record["tests"][0]
    assert test["diff"] == ""  # the template itself was tested
    assert test["stages"][0]["curve"][-1] == [20, 5.0, 5.2]
    assert [c["tool"] for c in record["transcript"]] == ["test", "submit"]
    assert record["reference_curve"]["sessions"] == 3
    assert record["reference_curve"]["curve"][0] == [0, pytest.approx(10.9), pytest.approx(10.8), 3]


def test_unknown_task_profile_and_session(board_service: LeaderboardService) -> None:
    with pytest.raises(NotFound, match="Unknown task"):
        board_service.board("nope")
    with pytest.raises(NotFound, match="Unknown profile"):
        board_service.board(TASK, "nope")
    with pytest.raises(NotFound, match="Unknown session"):
        board_service.session("nope")


def test_empty_board(board_service: LeaderboardService) -> None:
    board = board_service.board()
    assert board["rows"] == [] and board["baselines"] == [] and board["reference"] is None


# ── pure rules ───────────────────────────────────────────────────────────────


def _result(sid: str, value: float | None, minute: int, agent: str = "a") -> SessionResult:
    return SessionResult(
        session_id=sid, agent=agent, seed=1, status="ended", created_at=_at(minute),
        tests_used=1, final_test=None if value is None else 1, final_kind="submitted",
        metrics={} if value is None else {"m": value},
    )  # fmt: skip


def test_direction_maximize_ranks_high_values_first() -> None:
    results = [_result("low", 1.0, 0), _result("high", 3.0, 1), _result("mid", 2.0, 2)]
    maximize = rank_sessions(results, "m", "maximize")["rows"]
    minimize = rank_sessions(results, "m", "minimize")["rows"]
    assert [r["session_id"] for r in maximize] == ["high", "mid", "low"]
    assert [r["session_id"] for r in minimize] == ["low", "mid", "high"]


def test_noise_unknown_with_fewer_than_two_reference_seeds() -> None:
    results = [_result("ce", 4.0, 0, agent=CE), _result("x", 3.0, 1)]
    rows = {r["session_id"]: r for r in rank_sessions(results, "m", "minimize")["rows"]}
    assert rows["x"]["delta"] == pytest.approx(-1.0) and rows["x"]["noise"] == UNKNOWN
    no_reference = rank_sessions([_result("x", 3.0, 1)], "m", "minimize")["rows"][0]
    assert no_reference["delta"] is None and no_reference["noise"] == UNKNOWN


def test_non_finite_final_is_not_ranked() -> None:
    rows = rank_sessions([_result("nan", float("nan"), 0)], "m", "minimize")["rows"]
    assert rows[0]["rank"] is None and rows[0]["status"] == "no valid test"


def test_ranks_stats_and_mean_curve() -> None:
    assert ranks([1.0, 1.0, 2.0, 3.0, 3.0, None]) == [1, 1, 3, 4, 4, None]
    assert Stat.of([]) is None
    assert Stat.of([2.0]) == Stat(1, 2.0, None)
    assert mean_curve([[[0, 4, 6], [5, 2, 3]], [[0, 2, 4]]]) == [[0, 3, 5, 2], [5, 2, 3, 1]]


def test_a_session_tested_without_a_sandbox_is_marked(
    service: EpisodeService, db: Database, board_service: LeaderboardService
) -> None:
    trusted = scored_session(service, db, "sandboxed", 1337, 5.0)
    sid = service.create_session(TASK, "unsandboxed", seed=1337)["session_id"]
    assert service.test(sid, wait=False).ok
    finish_test(service, db, sid, 1, {primary_key(service): 4.0}, sandbox="local")
    end(service, db, sid)
    board = board_service.board()
    rows = _rows_by_session(board)
    assert rows[sid]["unisolated"] and not rows[trusted]["unisolated"]
    assert board_service.session(sid)["tests"][0]["sandbox"] == "local"
    table = list(csv.DictReader(io.StringIO(to_csv(board))))
    assert {r["session_id"]: r["unisolated"] for r in table} == {sid: "true", trusted: "false"}
