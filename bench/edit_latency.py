"""/edit latency with 20 concurrent sessions, while other sessions wait on their tests.

Starts a real `lossgym serve` (no worker: queued tests stay queued, so every
waiting POST /test keeps polling the database for the whole run) on a fresh
database, then:

1. `--waiting` sessions each call POST /test and wait (the server polls each
   test twice a second);
2. `--sessions` sessions each alternate POST /edit and POST /undo, `--calls`
   calls per session, all at once:
   - paced: a pause between a reply and the next call, drawn uniformly from
     0.5-1.5 x `--think-ms` (an agent reading the reply; LLM agents take
     seconds, this is far faster), the sessions starting out of step;
   - saturated: no pause at all, which measures throughput more than latency
     (each client waits for every other client's call: latency is about
     sessions x per-call work).

Prints p50 / p95 / max and calls per second for both, and the error count.

Usage: .venv/bin/python bench/edit_latency.py [--sessions 20] [--waiting 20]
                                              [--calls 40] [--think-ms 250]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lossgym.config import Settings  # noqa: E402
from tests.conftest import run_server  # noqa: E402

FILE = "nanoGPT/custom_pretrain.py"
CONTENT = (
    "def compute_loss(logits, targets):\n"
    "    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), "
    "ignore_index=-1)\n\n"
)


def _session(base: str, agent: str) -> tuple[str, dict[str, str], tuple[int, int]]:
    reply = httpx.post(f"{base}/sessions", json={"task": "llm-pretrain-loss", "agent": agent})
    reply.raise_for_status()
    data = reply.json()
    first = data["regions"][FILE][0]
    headers = {"Authorization": f"Bearer {data['token']}"}
    return data["session_id"], headers, (first["start"], first["end"])


def _wait_on_test(base: str, headers: dict[str, str], queued: threading.Event) -> None:
    """POST /test and wait; the reply only comes when the server's wait limit is up."""
    with httpx.Client(headers=headers, timeout=None) as client:
        queued.set()
        with contextlib.suppress(httpx.HTTPError):  # the server stops at the end of the run
            client.post(f"{base}/test")


_BARRIER: Any = None


def _init(barrier: Any) -> None:
    global _BARRIER
    _BARRIER = barrier


def _edits(base: str, agent: str, calls: int, think_s: float) -> tuple[list[float], float, float]:
    """One agent: alternate /edit and /undo; (latencies, first start, last end) in monotonic s."""
    _, headers, (a, b) = _session(base, agent)
    edit = {"op": "replace", "filename": FILE, "start_line": a, "end_line": b, "content": CONTENT}
    times = []
    pace = random.Random(agent)  # agents are not in step: each pause is drawn around think_s
    with httpx.Client(headers=headers, timeout=60) as client:
        _BARRIER.wait()  # every session process is up before the first call
        began = time.monotonic()
        time.sleep(pace.uniform(0, think_s))
        for i in range(calls):
            path, payload = ("/edit", edit) if i % 2 == 0 else ("/undo", {"n": 1})
            start = time.perf_counter()
            reply = client.post(f"{base}{path}", json=payload)
            times.append(time.perf_counter() - start)
            if reply.status_code != 200:
                raise RuntimeError(reply.text)
            time.sleep(pace.uniform(0.5, 1.5) * think_s)
    return times, began, time.monotonic()


def _round(base: str, sessions: int, calls: int, think_s: float, label: str) -> None:
    # One process per session: client threads in one process would share its GIL and
    # the load generator, not the server, would set the pace on a 2-core machine.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(sessions)
    with ProcessPoolExecutor(sessions, context, initializer=_init, initargs=(barrier,)) as pool:
        futures = [
            pool.submit(_edits, base, f"{label}-{i}", calls, think_s) for i in range(sessions)
        ]
        times: list[float] = []
        spans: list[tuple[float, float]] = []
        for future in futures:
            result, began, ended = future.result()
            times.extend(result)
            spans.append((began, ended))
    wall = max(e for _, e in spans) - min(b for b, _ in spans)
    q = statistics.quantiles(times, n=100)
    print(
        f"{label}: {sessions} sessions x {calls} calls, think {think_s * 1000:.0f} ms: "
        f"p50 {q[49] * 1000:.1f} ms, p95 {q[94] * 1000:.1f} ms, max {max(times) * 1000:.1f} ms, "
        f"{len(times) / wall:.0f} calls/s, errors 0"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=20)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--think-ms", type=float, default=250.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database=Path(tmp) / "bench.db", runs_dir=Path(tmp) / "runs")
        with run_server(settings.resolved(), worker=False) as base:
            waiting = []
            for i in range(args.waiting):
                sid, headers, _ = _session(base, f"waiting-{i}")
                queued = threading.Event()
                thread = threading.Thread(
                    target=_wait_on_test, args=(base, headers, queued), daemon=True
                )
                thread.start()
                queued.wait()
                waiting.append((sid, headers))
            _until_queued(base, waiting)
            print(f"{args.waiting} sessions are waiting on a queued test")
            _round(base, args.sessions, args.calls, args.think_ms / 1000, "paced")
            _round(base, args.sessions, args.calls, 0.0, "saturated")


def _until_queued(base: str, waiting: list[tuple[str, dict[str, str]]]) -> None:
    """Every waiting session's test is queued (its pre-flight passed) before we measure."""
    deadline = time.monotonic() + 300
    for sid, headers in waiting:
        while not httpx.get(f"{base}/sessions/{sid}", headers=headers).json()["tests"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the waiting sessions' tests were not queued in 300 s")
            time.sleep(0.2)


if __name__ == "__main__":
    main()
