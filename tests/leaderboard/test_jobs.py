"""Job rows: atomic claims, lease expiry, and surviving a server restart."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx

from lossgym.env.service import EpisodeService
from lossgym.store import queries
from lossgym.store.db import Database
from lossgym.store.models import JobRow, utcnow
from tests.conftest import run_server


def _queue_tests(service: EpisodeService, sessions: int) -> None:
    for i in range(sessions):
        sid = service.create_session("llm-pretrain-loss", f"agent-{i}")["session_id"]
        for _ in range(3):
            assert service.test(sid, wait=False).ok


def test_concurrent_claims_never_share_a_job(service: EpisodeService, db: Database) -> None:
    _queue_tests(service, 3)  # 9 jobs

    def claim_all(worker: str) -> list[int]:
        claimed = []
        while True:
            with db.transaction() as tx:
                job = queries.claim_next_job(tx, worker, lease_s=60)
                if job is None:
                    return claimed
                claimed.append(job.id)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(claim_all, ["w1", "w2", "w3"]))
    every = [job for claimed in results for job in claimed]
    assert len(every) == 9 and len(set(every)) == 9


def test_expired_lease_is_requeued_for_another_worker(
    service: EpisodeService, db: Database
) -> None:
    _queue_tests(service, 1)
    with db.transaction() as tx:
        job = queries.claim_next_job(tx, "dead-worker", lease_s=60)
        assert job is not None
        job_id = job.id
    with db.transaction() as tx:
        assert not queries.renew_lease(tx, job_id, "someone-else", 60)
        assert queries.renew_lease(tx, job_id, "dead-worker", 60)
        tx.get_one(JobRow, job_id).lease_until = utcnow() - timedelta(seconds=1)
    with db.transaction() as tx:
        assert len(queries.requeue_expired(tx)) == 1
        again = queries.claim_next_job(tx, "new-worker", lease_s=60)
        assert again is not None and again.id == job_id and again.attempts == 2
    with db.transaction() as tx:
        assert not queries.renew_lease(tx, job_id, "dead-worker", 60)  # no longer its job


def test_queued_test_survives_a_server_restart(settings, new_session) -> None:
    with run_server(settings, worker=False) as base:
        session = new_session(base)
        reply = httpx.post(  # the pre-flight smoke run answers it: allow a busy machine
            f"{base}/test", headers=session["headers"], params={"wait": "false"}, timeout=60
        )
        assert reply.status_code == 200
    with run_server(settings, worker=False) as base:
        url = f"{base}/sessions/{session['session_id']}/tests/1"
        state = httpx.get(url, headers=session["headers"]).json()
        assert state["status"] == "queued"
        assert state["text"].startswith("[Test #1] is queued.")
    db = Database(settings.database)
    with db.transaction() as tx:
        job = queries.claim_next_job(tx, "after-restart", lease_s=60)
        assert job is not None and queries.get_test_by_id(tx, job.test_id).n == 1
    db.dispose()
