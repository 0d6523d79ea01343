"""The README walk-through against a live server, with real training on tiny-cpu.

session → edit (the seed transcript's first compute_loss) → test → edit → test
→ submit (twice, concurrently), asserting the texts an agent reads and that the
database holds every tool call, revision and result.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lossgym.config import Settings
from lossgym.store import queries
from lossgym.store.db import Database
from lossgym.store.models import FinalRow
from tests.conftest import REPO, fast_tasks_dir

pytestmark = pytest.mark.slow
FILE = "nanoGPT/custom_pretrain.py"
TIMEOUT = httpx.Timeout(900.0)
TRAIN_LINE = re.compile(r"^TRAIN_METRICS: step=\d+, train_loss=\d+\.\d{4}, val_loss=\d+\.\d{4}$")


def _example(name: str) -> dict:
    return json.loads((REPO / "examples" / name).read_text())


def _post(base: str, path: str, headers: dict, body: dict | None = None) -> dict:
    reply = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _check_report(text: str, n: int, remaining: int, label: str) -> float:
    header = text.splitlines()[0]
    if n == 1:
        assert header == "[Test #1] (2 tests remaining; call submit(n=1) to submit this result)"
    else:
        assert header == (
            f"[Test #{n}] ({remaining} test{'s' if remaining != 1 else ''} remaining; "
            "call submit(n=N) to choose which test result to submit as final)"
        )
    assert f"### {label} (train)" in text
    lines = text.splitlines()
    start = lines.index("Training metrics (last steps):") + 1
    shown = [line for line in lines[start:] if line.startswith("TRAIN_METRICS")]
    assert 1 <= len(shown) <= 5 and all(TRAIN_LINE.match(line) for line in shown)
    final = re.search(rf"^Final metrics \({label}\): val_loss_{label}=(\d+\.\d{{4}})$", text, re.M)
    assert final, text
    assert f"[Leaderboard] Results saved: {{'val_loss_{label}': {float(final.group(1))}" in text
    return float(final.group(1))


@pytest.fixture
def settings(settings: Settings, tmp_path) -> Settings:
    """tiny-cpu shortened to 10 iterations: under test are the texts and records, not the loss."""
    tasks = fast_tasks_dir(tmp_path, config={"max_iters": 10, "eval_interval": 2})
    return settings.model_copy(update={"tasks_dir": tasks})


def test_walkthrough(server_with_worker: str, new_session, settings) -> None:
    base = server_with_worker
    session = new_session(base, "e2e-walkthrough")
    headers = session["headers"]
    first, second = _example("edit_polyloss.json"), _example("edit_softcap.json")
    a, b = first["start_line"], first["end_line"]
    (_, _), (c, d) = [(r["start"], r["end"]) for r in session["regions"][FILE]]
    grown = 26 - (b - a + 1)

    edit = _post(base, "/edit", headers, first)
    assert edit["text"].splitlines()[0] == (
        f"OK: Replaced lines {a}..{b} with 26 line(s) in {FILE}. "
        f"Editable range: {a}–{a + 25}, {c + grown}–{d + grown}."
    )
    view = edit["text"].split("\n\n", 1)[1]
    assert view.startswith(f"[Current file: {FILE} | editable: {a}–{a + 25} | total: ")
    assert f"{a - 1:>6}| " in view and f"{a:>6}  def compute_loss(logits, targets):" in view

    label = "gpt-tiny"
    test1 = _post(base, "/test", headers)
    val1 = _check_report(test1["text"], 1, 2, label)

    assert (second["start_line"], second["end_line"]) == (a, a + 25)
    edit2 = _post(base, "/edit", headers, second)
    assert edit2["text"].startswith(f"OK: Replaced lines {a}..{a + 25} with 26 line(s)")
    test2 = _post(base, "/test", headers)
    _check_report(test2["text"], 2, 1, label)

    with ThreadPoolExecutor(max_workers=2) as pool:
        replies = list(
            pool.map(
                lambda _: httpx.post(f"{base}/submit", json={"n": 1}, headers=headers, timeout=60),
                range(2),
            )
        )
    assert all(r.status_code in (200, 409) for r in replies)
    submitted = next(r.json()["text"] for r in replies if r.status_code == 200)
    assert submitted.startswith("[submit] Submitting result from test #1 as final.")
    assert f"Final metrics ({label}): val_loss_{label}={val1:.4f}" in submitted
    assert "[submit] Finalized test #1 as final." in submitted

    _check_database(settings, session["session_id"], val1, label)


def _check_database(settings, session_id: str, val1: float, label: str) -> None:
    db = Database(settings.database)
    with db.transaction() as tx:
        calls = queries.tool_calls(tx, session_id)
        assert [c.tool for c in calls][:5] == ["edit", "test", "edit", "test", "submit"]
        assert calls[1].text.startswith("[Test #1]")  # the waited-for report, not "queued"
        revisions = queries.revisions(tx, session_id)
        assert len(revisions) == 3  # template, edit 1, edit 2
        tests = queries.tests_of(tx, session_id)
        assert [t.status for t in tests] == ["done", "done"]
        assert tests[0].revision_id == revisions[1].id and tests[1].revision_id == revisions[2].id
        stage = tests[0].stages[0]
        assert stage.curve and stage.train_s > 0 and stage.eval_s > 0
        assert round(stage.metrics[f"val_loss_{label}"], 4) == val1
        assert tx.query(FinalRow).filter_by(session_id=session_id).count() == 1
        final = queries.get_final(tx, session_id)
        assert final is not None and final.kind == "submitted" and final.test_id == tests[0].id
    db.dispose()
