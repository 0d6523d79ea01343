"""The episode service on a real SQLite file: steps, budget, submit, auto-submit."""

from __future__ import annotations

import pytest

from lossgym.env.service import EpisodeService
from lossgym.env.tools import EditArgs, SubmitArgs, UndoArgs, ViewArgs
from lossgym.errors import SessionEnded
from lossgym.store import queries
from lossgym.store.db import Database
from lossgym.store.models import StageResultRow

FILE = "nanoGPT/custom_pretrain.py"


def _label(service: EpisodeService) -> str:
    return service.tasks.get("llm-pretrain-loss").profile().train_stage.label


def _finish(service: EpisodeService, db: Database, sid: str, n: int, val: float | None) -> None:
    """Record a test result as the worker would (val=None: the stage failed)."""
    label = _label(service)
    with db.transaction() as tx:
        test = queries.get_test(tx, sid, n)
        assert test is not None
        metrics = {} if val is None else {f"val_loss_{label}": val}
        tx.add(
            StageResultRow(
                test_id=test.id, position=0, label=label, kind="train",
                status="ok" if val is not None else "failed", exit_code=0 if val else 1,
                metrics=metrics, train_lines=[f"TRAIN_METRICS: step=10, train_loss=5.0000, val_loss={val or 9}"],
                elapsed_s=12.0,
            )
        )  # fmt: skip
        test.status, test.valid, test.metrics = (
            ("done" if val else "failed"),
            val is not None,
            metrics,
        )
        queries.get_job_for_test(tx, test.id).status = "done"


def _regions(service: EpisodeService, sid: str) -> list[tuple[int, int]]:
    with service.db.transaction() as tx:
        state = queries.get_session(tx, sid).workspace  # type: ignore[union-attr]
    return [(r["start"], r["end"]) for r in state["regions"][FILE]]


def test_create_session_shows_task_and_listing(service: EpisodeService) -> None:
    created = service.create_session("llm-pretrain-loss", "pytest")
    (a, b), (c, d) = _regions(service, created["session_id"])
    assert created["description"].startswith("Task: llm-pretrain-loss\n\n")
    assert f"{FILE} [EDITABLE — lines {a}–{b}, lines {c}–{d} only]" in created["description"]
    assert {t["function"]["name"] for t in created["tools"]} >= {"edit", "test", "submit"}


def test_edit_undo_record_revisions_and_transcript(service: EpisodeService, db: Database) -> None:
    sid = service.create_session("llm-pretrain-loss", "pytest")["session_id"]
    (a, b), _ = _regions(service, sid)
    body = "def compute_loss(logits, targets):\n    return logits.sum() * 0\n\n"
    edit = service.edit(
        sid, EditArgs(op="replace", filename=FILE, start_line=a, end_line=b, content=body)
    )
    assert edit.ok and edit.text.startswith(
        f"OK: Replaced lines {a}..{b} with 3 line(s) in {FILE}."
    )
    bad = service.edit(
        sid, EditArgs(op="replace", filename=FILE, start_line=1, end_line=1, content="x")
    )
    assert not bad.ok and bad.text.startswith("ERROR:")
    assert service.undo(sid, UndoArgs(n=1)).ok
    with db.transaction() as tx:
        calls = queries.tool_calls(tx, sid)
        assert [(c.tool, c.ok) for c in calls] == [("edit", True), ("edit", False), ("undo", True)]
        assert calls[0].text == edit.text
        revs = queries.revisions(tx, sid)
        assert len(revs) == 3 and revs[0].content_hash == revs[2].content_hash
        assert queries.get_session(tx, sid).steps_used == 3  # type: ignore[union-attr]


def test_budget_and_submit_rules(service: EpisodeService, db: Database) -> None:
    sid = service.create_session("llm-pretrain-loss", "pytest")["session_id"]
    queued = [service.test(sid, wait=False) for _ in range(3)]
    assert [q.data["test"] for q in queued] == [1, 2, 3]
    assert "[Test #1] is queued" in queued[0].text
    refused = service.test(sid, wait=False)
    assert not refused.ok and refused.text.startswith("ERROR: Test budget exhausted (3/3).")

    early = service.submit(sid, SubmitArgs(n=1))
    assert not early.ok and "has not finished" in early.text
    _finish(service, db, sid, 1, 4.25)
    _finish(service, db, sid, 2, None)
    assert "no valid result" in service.submit(sid, SubmitArgs(n=2)).text
    assert "no test #7" in service.submit(sid, SubmitArgs(n=7)).text

    label = _label(service)
    final = service.submit(sid, SubmitArgs(n=1))
    assert final.ok
    assert final.text.startswith("[submit] Submitting result from test #1 as final.")
    assert f"Final metrics ({label}): val_loss_{label}=4.2500" in final.text
    assert "[submit] Finalized test #1 as final." in final.text
    again = service.submit(sid, SubmitArgs(n=1))
    assert again.ok and again.text == final.text
    with pytest.raises(SessionEnded):
        service.submit(sid, SubmitArgs(n=3))
    with pytest.raises(SessionEnded):
        service.view(sid, ViewArgs(filename=FILE))
    with db.transaction() as tx:
        final_row = queries.get_final(tx, sid)
        assert final_row is not None and final_row.kind == "submitted"


def test_step_limit_ends_session_and_auto_submits_best(
    service: EpisodeService, db: Database
) -> None:
    sid = service.create_session("llm-pretrain-loss", "pytest")["session_id"]
    for _ in range(2):
        service.test(sid, wait=False)
    _finish(service, db, sid, 1, 5.0)
    _finish(service, db, sid, 2, 4.0)
    steps = service.tasks.get("llm-pretrain-loss").spec.budget.steps
    results = [
        service.view(sid, ViewArgs(filename=FILE, start_line=1, end_line=2))
        for _ in range(steps - 2)
    ]
    assert "[Session ended: step limit reached" in results[-1].text
    assert all("Session ended" not in r.text for r in results[:-1])
    with pytest.raises(SessionEnded, match="step limit"):
        service.view(sid, ViewArgs(filename=FILE))
    with db.transaction() as tx:
        final = queries.get_final(tx, sid)
        assert final is not None and final.kind == "auto"
        assert queries.get_test_by_id(tx, final.test_id).n == 2  # the lower val_loss


def test_auto_submit_waits_for_running_tests(service: EpisodeService, db: Database) -> None:
    from lossgym.env import episode

    sid = service.create_session("llm-pretrain-loss", "pytest")["session_id"]
    service.test(sid, wait=False)
    task = service.tasks.get("llm-pretrain-loss")
    with db.transaction() as tx:
        episode.end_session(tx, task, queries.get_session(tx, sid), "operator_stop")  # type: ignore[arg-type]
        assert queries.get_final(tx, sid) is None  # test 1 still queued
    _finish(service, db, sid, 1, 3.5)
    with db.transaction() as tx:
        episode.finalize_if_done(tx, task, queries.get_session(tx, sid))  # type: ignore[arg-type]
        final = queries.get_final(tx, sid)
        assert final is not None and final.kind == "auto"
