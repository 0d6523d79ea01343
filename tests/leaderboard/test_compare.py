"""`/compare?sessions=...`: sessions' loss curves overlaid on cross_entropy's, and its privacy.

The page over real HTTP (no worker) on the known board of `page_helpers.fill`;
the choice of what is shown, and the bad queries, on the service.
"""

from __future__ import annotations

import re

import httpx
import pytest

from lossgym.env.service import EpisodeService
from lossgym.errors import AgentError, NotFound
from lossgym.leaderboard.service import LeaderboardService
from lossgym.store.db import Database
from tests.conftest import OPERATOR_KEY
from tests.leaderboard.lbtest_helpers import TASK, end, finish_test
from tests.leaderboard.page_helpers import (
    EVIL,
    HIDDEN,
    RUNNING_SECRET,
    Filled,
    Page,
    fill,
    get,
)

OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
POINT = re.compile(r"[\d.]+,[\d.]+")


@pytest.fixture
def filled(service: EpisodeService, db: Database) -> Filled:
    return fill(service, db)


@pytest.fixture
def board_service(service: EpisodeService, db: Database) -> LeaderboardService:
    return LeaderboardService(db, service.tasks)


def compared(text: str) -> list[str]:
    return re.findall(r'<tr class="compared [a-z]+" data-session="([0-9a-f]+)"', text)


def series_of(svg: list[dict]) -> dict[str, str]:
    """An overlay's polylines by their colour class (run-0, ..., ref-mean): their points."""
    return {p["class"].split()[-1]: p["points"] for p in svg}


def test_compare_page_overlays_the_chosen_sessions_on_the_baseline(
    server: str, filled: Filled
) -> None:
    text = get(server, f"/compare?sessions={filled.good},{filled.evil}&sessions={filled.ce[0]}")
    assert compared(text) == [filled.good, filled.evil, filled.ce[0]]
    assert "Compare sessions · llm-pretrain-loss · tiny-cpu" in text
    plots = Page(text).svgs
    assert len(plots) == 2  # monitor loss, then train loss
    for svg in plots:
        series = series_of(svg)
        assert set(series) == {"run-0", "run-1", "run-2", "ref-mean"}
        assert all(len(POINT.findall(points)) == 3 for points in series.values())
    assert series_of(plots[0])["run-0"] != series_of(plots[0])["run-1"]  # alice's own curve
    assert "cross_entropy monitor (mean)" in text and "cross_entropy train (mean)" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and EVIL not in text
    assert "4.8000" in text and "-0.2000" in text  # alice's value and delta to 5.00
    assert 'class="note"' not in text


def test_running_sessions_stay_private_in_the_compare_view(server: str, filled: Filled) -> None:
    path = f"/compare?sessions={filled.running},{filled.good}"
    public = get(server, path)
    assert compared(public) == [filled.good]
    assert f"Session {filled.running} is still running" in public
    assert "4.1234" not in public and RUNNING_SECRET not in public and "sneaky" not in public
    assert all(set(series_of(svg)) == {"run-0", "ref-mean"} for svg in Page(public).svgs)
    api = httpx.get(f"{server}/api/compare", params={"sessions": path.split("=")[1]}).json()
    assert [s["session_id"] for s in api["sessions"]] == [filled.good]
    assert "4.1234" not in str(api) and HIDDEN not in str(api)

    alone = httpx.get(f"{server}/compare", params={"sessions": filled.running})
    assert alone.status_code == 404 and "still running" in alone.text
    assert "4.1234" not in alone.text

    operator = get(server, path, headers=OPERATOR)
    assert compared(operator) == [filled.running, filled.good]
    assert "4.1234" in operator and "latest valid" in operator


def test_bad_compare_queries_are_clear_4xx(server: str, filled: Filled) -> None:
    for query, status, words in (
        ("", 400, "Choose the sessions"),
        ("?sessions=,,", 400, "Choose the sessions"),
        ("?sessions=" + ",".join(f"s{i}" for i in range(9)), 400, "At most 8"),
        ("?sessions=nope," + "x" * 300, 404, "Nothing to compare. Unknown session"),
    ):
        reply = httpx.get(f"{server}/compare{query}")
        assert reply.status_code == status and words in reply.text, (query, reply.text[:300])
        assert reply.headers["content-type"].startswith("text/html")
        api = httpx.get(f"{server}/api/compare{query}")
        assert api.status_code == status and words in api.json()["text"]
    text = get(server, f"/compare?sessions=nope,{filled.good}")
    assert compared(text) == [filled.good] and "Unknown session &#39;nope&#39;: left out." in text


def test_index_offers_picking_sessions_and_agent_groups(server: str, filled: Filled) -> None:
    text = get(server, "/")
    picks = re.findall(r'<input type="checkbox" class="pick" name="sessions" value="(\w+)"', text)
    assert filled.good in picks and filled.evil in picks and filled.running not in picks
    assert 'action="/compare"' in text and "Compare selected" in text
    assert "Agents over their runs" in text
    ce_link = re.search(r'<tr class="group baseline" data-agent="baseline:cross_entropy">.*?'
                        r'href="(/compare\?sessions=[^"]+)"', text, re.S)  # fmt: skip
    assert ce_link is not None
    page = get(server, ce_link[1].replace("&amp;", "&"))
    assert sorted(compared(page)) == sorted(filled.ce)
    board = httpx.get(f"{server}/api/leaderboard").json()
    groups = {g["agent"]: g for g in board["groups"]}
    assert "sneaky" not in groups  # running: no scored final
    assert groups["alice"]["n"] == 1 and groups["alice"]["mean"] == pytest.approx(4.8)
    assert groups["baseline:cross_entropy"]["std"] == pytest.approx(0.02)
    assert groups["alice"]["paired_delta"] == {
        "n": 1, "mean": pytest.approx(-0.2), "std": None,
        "se": None, "resolution": "unknown", "seeds_to_resolve": None,
    }  # fmt: skip
    picked = get(server, "/", headers=OPERATOR)
    assert f'value="{filled.running}"' in picked  # the operator may compare running sessions


def test_sessions_of_another_board_or_without_a_curve_are_left_out(
    service: EpisodeService, db: Database, board_service: LeaderboardService, filled: Filled
) -> None:
    other = service.create_session(TASK, "big-agent", profile="gpt2-124m")["session_id"]
    assert service.test(other, wait=False).ok
    finish_test(service, db, other, 1, {"val_loss_x": 3.0})
    failed = service.create_session(TASK, "failing-agent")["session_id"]
    assert service.test(failed, wait=False).ok
    finish_test(service, db, failed, 1, None)
    end(service, db, other)
    end(service, db, failed)

    record = board_service.compare([f"{filled.good},{other},{failed}"])
    assert [s["session_id"] for s in record["sessions"]] == [filled.good]
    assert record["notes"] == [
        f"Session {other} is on llm-pretrain-loss · gpt2-124m, not llm-pretrain-loss · "
        "tiny-cpu: left out (curves are compared within one board).",
        f"Session {failed} has no valid test with a loss curve: left out.",
    ]
    assert record["reference"]["n"] == 3 and record["reference_curve"]["sessions"] == 3
    assert record["limit"] == 8 and record["sessions"][0]["final"] is True
    with pytest.raises(AgentError, match="At most 8"):
        board_service.compare([",".join([filled.good] * 3 + [f"x{i}" for i in range(8)])])
    with pytest.raises(NotFound, match="Nothing to compare"):
        board_service.compare([failed])
