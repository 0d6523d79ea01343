"""Environment overhead of one test, and /edit latency over HTTP.

Starts a real `lossgym serve` (with its worker) on a fresh database and prints:

- for each tiny-cpu test: total wall time of the waiting POST /test, the
  training and evaluation subprocess times, the compute time each reports for
  itself, and the overhead = total - (train + eval compute);
- p50 / p95 / max of POST /edit (replace, then undo) from one client, and the
  same with 20 concurrent sessions, counting errors.

Usage: .venv/bin/python bench/env_overhead.py [--edits 200] [--no-test]
          [--runner local|bwrap|docker] [--tests 3] [--think-s 15] [--iters N] [--cold]

The tests run in one session, each after an edit of compute_loss; the first
starts cold, later ones find the sandboxes started ahead (`warm_start`).

`--runner docker` runs training and evaluation in containers of the offline
base image (`.ci/provision-docker`) with this host's venv bind-mounted, as the
Docker runner's tests do.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lossgym.config import Settings  # noqa: E402
from lossgym.store import queries  # noqa: E402
from lossgym.store.db import Database  # noqa: E402
from tests.conftest import run_server  # noqa: E402

FILE = "nanoGPT/custom_pretrain.py"


def _session(base: str, agent: str) -> tuple[dict, tuple[int, int]]:
    body = httpx.post(f"{base}/sessions", json={"task": "llm-pretrain-loss", "agent": agent}).json()
    (a, b), _ = [(r["start"], r["end"]) for r in body["regions"][FILE]]
    return {"Authorization": f"Bearer {body['token']}"}, (a, b)


def _edit_latencies(base: str, edits: int, agent: str) -> list[float]:
    """Alternate replace and undo; a new session every 48 calls (the step limit is 50)."""
    content = "def compute_loss(logits, targets):\n    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)\n\n"  # noqa: E501
    times: list[float] = []
    while len(times) < edits:
        headers, (a, b) = _session(base, agent)
        body = {
            "op": "replace",
            "filename": FILE,
            "start_line": a,
            "end_line": b,
            "content": content,
        }
        with httpx.Client(headers=headers) as client:
            for i in range(min(48, edits - len(times))):
                path, payload = ("/edit", body) if i % 2 == 0 else ("/undo", {"n": 1})
                start = time.perf_counter()
                reply = client.post(f"{base}{path}", json=payload)
                times.append(time.perf_counter() - start)
                if reply.status_code != 200:
                    raise RuntimeError(reply.text)
    return times


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def bench_edits(base: str, edits: int) -> None:
    times = _edit_latencies(base, edits, "bench-edit")
    print(f"/edit+/undo, 1 client, {len(times)} calls: p50 {_pct(times, 50):.1f} ms, "
          f"p95 {_pct(times, 95):.1f} ms, max {max(times) * 1000:.1f} ms")  # fmt: skip
    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(_edit_latencies, base, 20, f"bench-{i}") for i in range(20)]
        results, errors = [], 0
        for future in futures:
            try:
                results.extend(future.result())
            except Exception:  # noqa: BLE001 - counted and reported
                errors += 1
    print(f"/edit+/undo, 20 concurrent sessions x 20 calls: p50 {_pct(results, 50):.1f} ms, "
          f"p95 {_pct(results, 95):.1f} ms, errors {errors}")  # fmt: skip


def bench_test(base: str, settings: Settings, tests: int, think_s: float) -> None:
    """`tests` tests in one session, each after an edit of compute_loss (so each has
    its own pre-flight smoke run) and `think_s` of agent thinking time."""
    headers, (a, b) = _session(base, "bench-test")
    overheads = []
    for n in range(1, tests + 1):
        time.sleep(think_s)
        content = (
            f"def compute_loss(logits, targets):\n    return {1 + n / 1000} * F.cross_entropy("
            "logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)\n\n"
        )
        edit = {"op": "replace", "filename": FILE, "start_line": a, "end_line": b,
                "content": content}  # fmt: skip
        assert httpx.post(f"{base}/edit", headers=headers, json=edit).status_code == 200
        start = time.perf_counter()
        reply = httpx.post(f"{base}/test", headers=headers, timeout=1800)
        total = time.perf_counter() - start
        assert reply.status_code == 200, reply.text
        overheads.append(_report(settings, headers, n, total))
    warm = [o for o in overheads[1:] if o is not None]
    if warm:
        print(f"environment overhead: first test {overheads[0]:.2f} s; later tests "
              f"mean {statistics.mean(warm):.2f} s, max {max(warm):.2f} s")  # fmt: skip


def _report(settings: Settings, headers: dict, n: int, total: float) -> float | None:
    db = Database(settings.database)
    with db.transaction() as tx:
        sid = queries.session_by_token_hash(tx, _token_hash(headers)).id  # type: ignore[union-attr]
        stage = queries.tests_of(tx, sid)[n - 1].stages[0]
        train_s, eval_s, info = stage.train_s, stage.eval_s, dict(stage.info)
        log_path = Path(stage.log_path)
    db.dispose()
    loop_s = _training_loop_seconds(log_path)
    eval_compute = float(info.get("eval", {}).get("seconds", eval_s))
    print(f"test {n}: wall {total:.2f} s = train process {train_s:.2f} s + eval process "
          f"{eval_s:.2f} s + service {total - train_s - eval_s:.2f} s")  # fmt: skip
    if loop_s is None:
        return None
    overhead = total - loop_s - eval_compute
    print(f"test {n}: compute: training loop {loop_s:.2f} s, evaluation {eval_compute:.2f} s; "
          f"environment overhead {overhead:.2f} s (pre-flight, process start-up, imports, "
          f"data, checkpoint, queueing)")  # fmt: skip
    return overhead


def _training_loop_seconds(log_path: Path) -> float | None:
    """The training loop's own time, from the template's `done: N iters in Xs ...` line."""
    for line in reversed(log_path.read_text().splitlines()):
        match = re.match(r"done: \d+ iters in ([0-9.]+)s", line)
        if match:
            return float(match.group(1))
    return None


def _token_hash(headers: dict) -> str:
    import hashlib

    return hashlib.sha256(headers["Authorization"][7:].encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--no-test", action="store_true", help="Skip the training test.")
    parser.add_argument("--runner", choices=["local", "bwrap", "docker"], default="bwrap")
    parser.add_argument("--tests", type=int, default=3, help="tests in the session (default: 3)")
    parser.add_argument("--think-s", type=float, default=15.0,
                        help="agent time before each test (default: 15)")  # fmt: skip
    parser.add_argument("--iters", type=int, default=0,
                        help="train this many iterations instead of the profile's "
                        "(the overhead does not depend on it; default: the profile's)")  # fmt: skip
    parser.add_argument("--cold", action="store_true", help="warm_start off (the old way)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tasks = {}
        if args.iters:
            from tests.conftest import fast_tasks_dir

            tasks = {"tasks_dir": fast_tasks_dir(Path(tmp), config={"max_iters": args.iters})}
        settings = Settings(
            database=Path(tmp) / "bench.db",
            runs_dir=Path(tmp) / "runs",
            worker_poll_s=0.2,
            warm_start=not args.cold,
            **tasks,
            **_runner_settings(args.runner),
        ).resolved()
        print(f"runner: {args.runner}, warm_start: {settings.warm_start}")
        with run_server(settings, worker=True) as base:
            if args.edits:
                bench_edits(base, args.edits)
            if not args.no_test:
                bench_test(base, settings, args.tests, args.think_s)
    print(json.dumps({"machine": _machine()}))


def _runner_settings(kind: str) -> dict[str, object]:
    if kind == "bwrap":
        return {"isolation": "bwrap"}
    if kind == "local":
        return {"isolation": "none"}
    if kind == "docker":
        from tests.sandbox.runner_fixtures import DOCKER_IMAGE

        return {"runner": "docker", "docker_image": DOCKER_IMAGE, "docker_host_python": True}
    return {}


def _machine() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
