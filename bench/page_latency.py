"""Latency of the leaderboard pages with a full database: `/` and a session page.

Fills a temporary database with 1,000 sessions and 5,000 tests (one real
session made through the service, then cloned with bulk inserts), starts a
live server (`lossgym serve`, no worker) and times ~100 GETs of each page.
Target: p95 <= 200 ms.

    .venv/bin/python bench/page_latency.py [--sessions 1000] [--tests-per-session 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lossgym.config import Settings  # noqa: E402
from lossgym.env.service import EpisodeService  # noqa: E402
from lossgym.env.tools import SubmitArgs  # noqa: E402
from lossgym.store import queries  # noqa: E402
from lossgym.store.db import Database  # noqa: E402
from lossgym.store.models import Base  # noqa: E402
from tests.conftest import make_service, run_server  # noqa: E402
from tests.leaderboard.lbtest_helpers import TASK, finish_test, primary_key  # noqa: E402
from tests.leaderboard.page_helpers import _edit  # noqa: E402

TABLES = ("sessions", "tool_calls", "revisions", "tests", "stage_results", "jobs", "finals")
CURVE = [[s, 10.9 - s / 40, 11.0 - s / 41] for s in range(0, 130, 5)]  # 26 points


def template_session(service: EpisodeService, db: Database, tests: int) -> str:
    """One real session: an edit, `tests` finished tests (budget raised), submitted."""
    sid = service.create_session(TASK, "template", seed=0)["session_id"]
    _edit(service, sid, "BENCH")
    with db.transaction() as tx:
        queries.get_session(tx, sid).budget_tests = tests  # type: ignore[union-attr]
    for n in range(1, tests + 1):
        assert service.test(sid, wait=False).ok
        finish_test(service, db, sid, n, {primary_key(service): 5.0, "piqa_acc_gpt-tiny": 30.0})
    assert service.submit(sid, SubmitArgs(n=1)).ok
    return sid


def _rows(db: Database, sid: str) -> dict[str, list[dict[str, Any]]]:
    """The template's rows per table, as plain dicts."""
    meta = Base.metadata.tables
    out: dict[str, list[dict[str, Any]]] = {}
    with db.engine.connect() as conn:
        out["sessions"] = [dict(r._mapping) for r in conn.execute(
            select(meta["sessions"]).where(meta["sessions"].c.id == sid))]  # fmt: skip
        for name in ("tool_calls", "revisions", "tests", "finals"):
            t = meta[name]
            out[name] = [dict(r._mapping) for r in conn.execute(select(t).where(t.c.session_id == sid))]  # fmt: skip # noqa: E501
        test_ids = [r["id"] for r in out["tests"]]
        for name in ("stage_results", "jobs"):
            t = meta[name]
            out[name] = [dict(r._mapping) for r in conn.execute(select(t).where(t.c.test_id.in_(test_ids)))]  # fmt: skip # noqa: E501
    return out


def clone(db: Database, sid: str, sessions: int) -> None:
    """Bulk-insert `sessions` copies of the template with new ids, agents and values."""
    template = _rows(db, sid)
    meta = Base.metadata.tables
    next_id = {name: 10_000_000 for name in TABLES if name != "sessions"}
    batches: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for i in range(sessions):
        new_sid = f"bench{i:011d}"
        agent = "baseline:cross_entropy" if i < 5 else f"agent-{i % 97}"
        value = 5.0 + ((i * 7919) % 1000) / 10_000
        ids: dict[str, dict[int, int]] = {name: {} for name in TABLES}
        for row in template["sessions"]:
            batches["sessions"].append({**row, "id": new_sid, "token_hash": f"h{i:063d}",
                                        "agent": agent, "seed": i % 5})  # fmt: skip
        for name in ("revisions", "tests", "stage_results", "jobs", "tool_calls", "finals"):
            for row in template[name]:
                new = {**row, "id": next_id[name]}
                ids[name][row["id"]] = next_id[name]
                next_id[name] += 1
                if "session_id" in new:
                    new["session_id"] = new_sid
                if "revision_id" in new:
                    new["revision_id"] = ids["revisions"][row["revision_id"]]
                if "test_id" in new:
                    new["test_id"] = ids["tests"][row["test_id"]]
                if name in ("tests", "stage_results"):
                    new["metrics"] = {**row["metrics"], primary_key_name(row): value}
                if name == "stage_results":
                    new["curve"] = CURVE
                batches[name].append(new)
    with db.engine.begin() as conn:
        for name in TABLES:
            conn.execute(meta[name].insert(), batches[name])


def primary_key_name(row: dict[str, Any]) -> str:
    return next(k for k in row["metrics"] if k.startswith("val_loss_"))


def _count(db: Database, table: str) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(Base.metadata.tables[table])).scalar_one()
        )


def timings(client: httpx.Client, url: str, n: int) -> list[float]:
    client.get(url).raise_for_status()  # warm-up
    out = []
    for _ in range(n):
        start = time.perf_counter()
        reply = client.get(url)
        out.append((time.perf_counter() - start) * 1000)
        reply.raise_for_status()
    return out


def report(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p50 = statistics.median(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * len(ms)) - 1)]
    print(f"{name:<28} n={len(ms):<4} p50={p50:7.1f} ms  p95={p95:7.1f} ms  max={ms[-1]:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--tests-per-session", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database=Path(tmp) / "bench.db", runs_dir=Path(tmp) / "runs",
            data_dir=Path(os.environ.get("LOSSGYM_DATA_DIR", REPO / "data")),
            worker_in_api=False, operator_key="bench",
        ).resolved()  # fmt: skip
        db = Database(settings.database)
        db.create_schema()
        service = make_service(settings, db)
        start = time.perf_counter()
        sid = template_session(service, db, args.tests_per_session)
        clone(db, sid, args.sessions - 1)
        counts = {t: _count(db, t) for t in ("sessions", "tests")}
        db.dispose()
        print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}")  # fmt: skip
        print(f"database: {counts['sessions']} sessions, {counts['tests']} tests "
              f"(filled in {time.perf_counter() - start:.1f} s)")  # fmt: skip
        with run_server(settings, worker=False) as base, httpx.Client(timeout=30) as client:
            report("GET /", timings(client, f"{base}/", args.requests))
            report(
                "GET /board/{id}", timings(client, f"{base}/board/bench00000000500", args.requests)
            )  # noqa: E501
            size = len(client.get(f"{base}/").content)
            print(f"size of /: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
