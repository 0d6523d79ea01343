"""`lossgym baselines`: edit resolution, resumability, and every baseline's edits over HTTP.

The live server here has no worker, so test results are written into the
database as the worker would write them.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from lossgym.baselines.runner import (
    BaselineRunner,
    Outcome,
    PlanError,
    StateFile,
    choose,
    completed,
    plan,
    regions_from_reply,
    resolve_edit,
    summary,
)
from lossgym.cli import app
from lossgym.client import Api
from lossgym.config import Settings
from lossgym.env.baselines import EditOp, load_baseline
from lossgym.env.service import EpisodeService
from lossgym.store import queries
from lossgym.store.db import Database
from tests.leaderboard.lbtest_helpers import FILE, TASK, finish_test, primary_key


def _runner(base: str, settings: Settings, state: Path, lines: list[str]) -> BaselineRunner:
    task, profile, _, _ = choose(settings.tasks_dir, None, None, None, 1)
    api = Api(base, operator_key=settings.operator_key)
    return BaselineRunner(api, task, profile, StateFile(state), lines.append, poll_s=0.05)


def test_region_resolution() -> None:
    reply = {
        "regions": {
            FILE: [
                {"name": "compute_loss", "start": 215, "end": 218},
                {"name": "loss_state_hook", "start": 349, "end": 351},
            ]
        }
    }
    regions = regions_from_reply(reply)
    assert regions == {FILE: [("compute_loss", 215, 218), ("loss_state_hook", 349, 351)]}
    op = EditOp(op="replace", filename=FILE, region="loss_state_hook", content="x = 1\n")
    assert resolve_edit(op, regions) == {
        "op": "replace", "filename": FILE, "start_line": 349, "end_line": 351, "content": "x = 1\n"
    }  # fmt: skip
    with pytest.raises(ValueError, match="no editable region 'other'"):
        resolve_edit(EditOp(op="replace", filename=FILE, region="other", content="x"), regions)


def test_resume_skips_sessions_with_a_final() -> None:
    board = {
        "rows": [
            {"agent": "baseline:cross_entropy", "seed": 1337, "status": "ranked"},
            {"agent": "baseline:z_loss", "seed": 1337, "status": "running"},
            {"agent": "baseline:z_loss", "seed": 1338, "status": "no valid test"},
            {"agent": "someone", "seed": 1338, "status": "ranked"},
        ]
    }
    done = completed(board)
    assert done == {("baseline:cross_entropy", 1337), ("someone", 1338)}
    assert plan(["cross_entropy", "z_loss"], [1337, 1338, 1339], done) == [
        ("cross_entropy", 1337, True), ("cross_entropy", 1338, False),
        ("z_loss", 1337, False), ("z_loss", 1338, False),
        ("cross_entropy", 1339, False), ("z_loss", 1339, False),
    ]  # fmt: skip


def test_choose_rejects_bad_choices(settings: Settings) -> None:
    task, profile, names, seeds = choose(settings.tasks_dir, None, None, "z_loss, softcap_ce", 2)
    assert (task.name, profile, names, seeds) == (
        TASK,
        "tiny-cpu",
        ["z_loss", "softcap_ce"],
        [1337, 1338],
    )
    for args, message in (
        (("nope", None, None, 1), "Unknown task"),
        ((TASK, "nope", None, 1), "Unknown profile"),
        ((TASK, None, "nope", 1), "Unknown baseline"),
        ((TASK, None, None, 99), "lists only 5 seeds"),
    ):
        with pytest.raises(PlanError, match=message):
            choose(settings.tasks_dir, *args)  # type: ignore[arg-type]
    result = CliRunner().invoke(app, ["baselines", "--names", "nope"])
    assert result.exit_code == 2 and "Unknown baseline" in result.output


def test_every_baseline_edit_applies_over_http(
    server: str, settings: Settings, tmp_path: Path
) -> None:
    lines: list[str] = []
    runner = _runner(server, settings, tmp_path / "state.json", lines)
    for name in runner.task.spec.baselines:
        created = runner.api.create_session(TASK, f"baseline:{name}", "tiny-cpu", 1337)
        ops = load_baseline(runner.task, name)
        texts = runner.apply_edits(
            created["token"], ops, regions_from_reply(created)
        )  # raises on any 4xx
        assert len(texts) == len(ops) and all(t.startswith("OK: Replaced") for t in texts)
        view = httpx.post(
            f"{server}/view", json={"filename": FILE},
            headers={"Authorization": f"Bearer {created['token']}"},
        )  # fmt: skip
        for op in ops:
            assert op.content is not None
            assert op.content.splitlines()[1] in view.json()["text"]


def test_interrupted_run_resumes_then_skips(
    server: str, settings: Settings, service: EpisodeService, db: Database, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    lines: list[str] = []
    runner = _runner(server, settings, state, lines)
    key = f"{server} {TASK} tiny-cpu z_loss 1337"
    # An earlier run created the session, applied the edits and queued the test, then died.
    sid, token = runner._start("z_loss", 1337, key)
    runner._queue_test(token)
    assert StateFile(state).get(key) == {"session_id": sid, "token": token}
    finish_test(service, db, sid, 1, {primary_key(service): 4.25})

    first = runner.run(["z_loss"], [1337])
    assert first == [Outcome("z_loss", 1337, "done", sid, 4.25)]
    assert any(f"resuming session {sid}" in line for line in lines)
    assert StateFile(state).get(key) is None
    board = httpx.get(f"{server}/api/leaderboard").json()
    assert [(r["agent"], r["status"], r["final_kind"]) for r in board["rows"]] == [
        ("baseline:z_loss", "ranked", "submitted")
    ]
    again = runner.run(["z_loss"], [1337])
    assert again == [Outcome("z_loss", 1337, "skipped")]
    assert "1 skipped" in summary(again, runner.metric)


def test_a_failed_test_is_retried_on_resume_then_reported(
    server: str, settings: Settings, service: EpisodeService, db: Database, tmp_path: Path
) -> None:
    lines: list[str] = []
    runner = _runner(server, settings, tmp_path / "state.json", lines)
    key = f"{server} {TASK} tiny-cpu cross_entropy 1338"
    sid, token = runner._start("cross_entropy", 1338, key)
    runner._queue_test(token)
    finish_test(service, db, sid, 1, None)
    queued = _tell_when_queued(runner)
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(runner.run_one, "cross_entropy", 1338)
        running.add_done_callback(lambda _: queued.set())  # it gave up: fail now, not later
        assert queued.wait(timeout=60)
        with db.transaction() as tx:  # resuming re-tests: the session has budget left
            assert queries.get_test(tx, sid, 2) is not None, "test #2 was never queued"
        finish_test(service, db, sid, 2, None)
        outcome = running.result(timeout=60)
    assert outcome.status == "failed" and outcome.session_id == sid
    assert outcome.message.startswith("test #2 failed") and "left open" in outcome.message
    assert any("test #1 failed; testing again" in line for line in lines)
    text = summary([outcome], runner.metric)
    assert "cross_entropy" in text and "1 failed" in text


def _tell_when_queued(runner: BaselineRunner) -> threading.Event:
    """An event the runner sets each time it has queued a test (the API answered)."""
    queued = threading.Event()
    queue_test = runner._queue_test

    def queue_and_tell(token: str) -> int:
        n = queue_test(token)
        queued.set()
        return n

    runner._queue_test = queue_and_tell  # type: ignore[method-assign]
    return queued
