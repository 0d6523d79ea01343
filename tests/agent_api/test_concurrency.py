"""Concurrent calls over real HTTP never exceed the budget."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from lossgym.store.db import Database
from lossgym.store.models import JobRow, TestRow


def test_ten_concurrent_tests_accept_exactly_three(server: str, new_session, settings) -> None:
    session = new_session(server)

    def fire(_: int) -> httpx.Response:
        return httpx.post(
            f"{server}/test", headers=session["headers"], params={"wait": "false"}, timeout=60
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(fire, range(10)))

    accepted = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    assert len(accepted) == 3
    assert sorted(r.json()["test"] for r in accepted) == [1, 2, 3]
    assert all(r.status_code == 400 for r in refused)
    assert all("Test budget exhausted (3/3)" in r.json()["text"] for r in refused)

    state = httpx.get(f"{server}/sessions/{session['session_id']}", headers=session["headers"])
    assert state.json()["tests_used"] == 3
    db = Database(settings.database)
    with db.transaction() as tx:
        assert tx.query(TestRow).count() == 3
        assert tx.query(JobRow).filter_by(status="queued").count() == 3
    db.dispose()
