"""Live test events over server-sent events, against a live server with real tiny-cpu training."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest

from lossgym.config import Settings
from tests.conftest import fast_tasks_dir

pytestmark = pytest.mark.slow
TIMEOUT = httpx.Timeout(900.0)
STEP = re.compile(r"^TRAIN_METRICS: step=(\d+), ")


@pytest.fixture
def settings(settings: Settings, tmp_path) -> Settings:
    tasks = fast_tasks_dir(tmp_path, config={"max_iters": 12, "eval_interval": 2})
    return settings.model_copy(update={"tasks_dir": tasks})


def _events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: ") and name is not None:
            yield name, json.loads(line[len("data: ") :])
            name = None


def test_events_stream_a_test_and_a_disconnect_leaves_it_running(
    server_with_worker: str, new_session
) -> None:
    base = server_with_worker
    session = new_session(base, "events")
    url = f"{base}/sessions/{session['session_id']}/tests/1/events"
    assert httpx.get(url, headers=session["headers"]).status_code == 404  # no test #1 yet
    queued = httpx.post(
        f"{base}/test", params={"wait": "false"}, headers=session["headers"], timeout=TIMEOUT
    )
    assert queued.status_code == 200, queued.text
    other = new_session(base, "someone-else")
    assert httpx.get(url, headers=other["headers"]).status_code == 401

    # A client that goes away after the first event: the test must run on regardless.
    with httpx.stream("GET", url, headers=session["headers"], timeout=TIMEOUT) as early:
        assert early.headers["content-type"].startswith("text/event-stream")
        first = next(_events(early))
        assert first[0] == "state"

    with httpx.stream("GET", url, headers=session["headers"], timeout=TIMEOUT) as stream:
        events = list(_events(stream))
    names = [name for name, _ in events]
    assert names[0] == "state" and names[-1] == "done" and names.count("done") == 1
    steps = [int(STEP.match(d["line"]).group(1)) for n, d in events if n == "train_metrics"]
    assert steps and steps == sorted(steps) and steps[-1] == 12, steps
    done = events[-1][1]
    assert done["status"] == "done" and done["text"].startswith("[Test #1]")
    streamed = [d["line"] for n, d in events if n == "train_metrics"]
    reported = [line for line in done["text"].splitlines() if line.startswith("TRAIN_METRICS")]
    assert reported and streamed[-len(reported) :] == reported  # the report shows the last ones
    info = httpx.get(f"{base}/sessions/{session['session_id']}/tests/1", headers=session["headers"])
    assert info.json()["status"] == "done" and info.json()["valid"] is True
