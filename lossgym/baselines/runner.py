"""`lossgym baselines`: run every baseline over seeds through the public HTTP API.

Each (baseline, seed) is one session with agent `baseline:<name>`, driven as an
agent would drive it: POST /sessions, the baseline's edits through POST /edit
(`region:` resolved to the region's current lines, from the
structured `regions` every reply carries), POST /test, then
POST /submit. So baselines go through exactly the path agents' runs take.

Resumable: a (baseline, seed) whose session already has a scored final on
`/api/leaderboard` is skipped, and a session left waiting on its test by an
interrupted run (its token is kept in a small state file) is picked up again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lossgym.client import Api, ApiError
from lossgym.env.baselines import EditOp, load_baseline
from lossgym.env.task import Task, list_tasks, load_task
from lossgym.errors import AgentError, TaskSpecError
from lossgym.leaderboard.ranking import BASELINE_PREFIX, RANKED

DEFAULT_STATE = Path("var/baselines-state.json")
TEST_DONE = ("done", "failed", "error")
MAX_INFRA_RETRIES = 2

Regions = dict[str, list[tuple[str, int, int]]]  # file -> [(name, start, end)]


class PlanError(Exception):
    """Bad command-line choices (unknown task, profile or baseline; too many seeds)."""


def choose(
    tasks_dir: Path, task: str | None, profile: str | None, names: str | None, seeds: int
) -> tuple[Task, str, list[str], list[int]]:
    """The task (default: the first), profile (default: its default), baselines and seeds."""
    try:
        known_tasks = list_tasks(tasks_dir)
        chosen = load_task(tasks_dir, task or (known_tasks[0] if known_tasks else ""))
        profile = profile or chosen.spec.default_profile
        chosen.profile(profile)
    except (TaskSpecError, AgentError) as error:
        raise PlanError(str(error)) from None
    wanted = [n.strip() for n in names.split(",")] if names else list(chosen.spec.baselines)
    unknown = [n for n in wanted if n not in chosen.spec.baselines]
    if unknown:
        known = ", ".join(chosen.spec.baselines)
        raise PlanError(f"Unknown baseline(s) {', '.join(unknown)}; known: {known}.")
    if seeds > len(chosen.spec.seeds):
        raise PlanError(f"--seeds {seeds}: the task lists only {len(chosen.spec.seeds)} seeds.")
    return chosen, profile, wanted, chosen.spec.seeds[:seeds]


# ── pure helpers ─────────────────────────────────────────────────────────────


def regions_from_reply(data: dict[str, Any]) -> Regions:
    """Regions from a reply's structured `regions` field (POST /sessions, /edit, /undo, /view)."""
    return {
        path: [(str(r["name"]), int(r["start"]), int(r["end"])) for r in items]
        for path, items in data["regions"].items()
    }


def resolve_edit(op: EditOp, regions: Regions) -> dict[str, Any]:
    """The /edit body for `op`, with `region:` replaced by that region's current lines."""
    body = op.model_dump(exclude={"region"}, exclude_none=True)
    if op.region is None:
        return body
    found = [(a, b) for name, a, b in regions.get(op.filename, []) if name == op.region]
    if not found:
        raise ValueError(f"{op.filename} has no editable region {op.region!r}")
    body["start_line"], body["end_line"] = found[0]
    return body


def completed(board: dict[str, Any]) -> set[tuple[str, int]]:
    """(agent, seed) pairs that already have a scored final on the board."""
    return {(row["agent"], int(row["seed"])) for row in board["rows"] if row["status"] == RANKED}


def plan(
    names: Iterable[str], seeds: Iterable[int], done: set[tuple[str, int]]
) -> list[tuple[str, int, bool]]:
    """Every (baseline, seed) to visit, and whether it is already done (skipped).

    The first two seeds go baseline by baseline, in the task's order
    (cross_entropy first): two seeds are the fewest that give a paired delta
    with a standard error, so the first comparison can resolve after four tests
    rather than after every baseline's first seed. Later seeds go seed by seed,
    so every baseline gains one before any gains two.
    """
    names, seeds = list(names), list(seeds)
    order = [(n, s) for n in names for s in seeds[:2]]
    order += [(n, s) for s in seeds[2:] for n in names]
    return [(n, s, (BASELINE_PREFIX + n, s) in done) for n, s in order]


# ── state file: sessions an interrupted run left waiting on a test ───────────


class StateFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._data: dict[str, dict[str, str]] = {}
        if path is not None and path.is_file():
            self._data = json.loads(path.read_text(encoding="utf-8"))

    def get(self, key: str) -> dict[str, str] | None:
        return self._data.get(key)

    def put(self, key: str, value: dict[str, str] | None) -> None:
        if value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = value
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._data, indent=1), encoding="utf-8")
            tmp.replace(self.path)


# ── the runner ───────────────────────────────────────────────────────────────


@dataclass
class Outcome:
    name: str
    seed: int
    status: str  # skipped | done | failed
    session_id: str | None = None
    value: float | None = None
    message: str = ""


class BaselineRunner:
    def __init__(
        self,
        api: Api,
        task: Task,
        profile: str,
        state: StateFile,
        progress: Callable[[str], None] = print,
        poll_s: float = 2.0,
    ) -> None:
        self.api, self.task, self.profile, self.state = api, task, profile, state
        self.progress = progress
        self.poll_s = poll_s
        self.metric = task.primary_metric_key(profile)

    def run(self, names: list[str], seeds: list[int]) -> list[Outcome]:
        done = completed(self.api.leaderboard(self.task.name, self.profile))
        outcomes = []
        for name, seed, skip in plan(names, seeds, done):
            if skip:
                self.progress(f"[{name} seed={seed}] already has a final; skipped")
                outcomes.append(Outcome(name, seed, "skipped"))
                continue
            outcomes.append(self.run_one(name, seed))
        return outcomes

    def run_one(self, name: str, seed: int) -> Outcome:
        key = f"{self.api.base_url} {self.task.name} {self.profile} {name} {seed}"
        try:
            resumed = self._resume(name, seed, key)
            if resumed is not None:
                return resumed
            sid, token = self._start(name, seed, key)
            n = self._queue_test(token)
            return self._finish(name, seed, key, sid, token, n)
        except (ApiError, ValueError, httpx.HTTPError) as error:
            self.progress(f"[{name} seed={seed}] failed: {error}")
            return Outcome(name, seed, "failed", message=str(error))

    def _say(self, name: str, seed: int, message: str) -> None:
        self.progress(f"[{name} seed={seed}] {message}")

    def _resume(self, name: str, seed: int, key: str) -> Outcome | None:
        """Pick up a session an interrupted run left with a test; None: start a new one."""
        entry = self.state.get(key)
        if entry is None:
            return None
        sid, token = entry["session_id"], entry["token"]
        try:
            info = self.api.call("GET", f"/sessions/{sid}", token)
        except ApiError:
            info = {"status": "unknown", "tests": []}
        if info["status"] != "active" or not info["tests"]:
            self.state.put(key, None)
            self._say(name, seed, f"session {sid} from an earlier run cannot be resumed; new one")
            return None
        last = info["tests"][-1]
        n = int(last["n"])
        if last["status"] == "failed" and info["tests_used"] < info["budget_tests"]:
            self._say(name, seed, f"resuming session {sid}: test #{n} failed; testing again")
            n = self._queue_test(token)
        else:
            self._say(name, seed, f"resuming session {sid}: waiting for test #{n}")
        return self._finish(name, seed, key, sid, token, n)

    def _start(self, name: str, seed: int, key: str) -> tuple[str, str]:
        agent = BASELINE_PREFIX + name
        created = self.api.create_session(self.task.name, agent, self.profile, seed)
        sid, token = created["session_id"], created["token"]
        self.state.put(key, {"session_id": sid, "token": token})
        ops = load_baseline(self.task, name)
        self._say(name, seed, f"session {sid}: applying {len(ops)} edit(s)")
        self.apply_edits(token, ops, regions_from_reply(created))
        return sid, token

    def apply_edits(self, token: str, ops: list[EditOp], regions: Regions) -> list[str]:
        """POST each edit with its region resolved as the workspace now is; returns the texts."""
        texts = []
        for op in ops:
            reply = self.api.call("POST", "/edit", token, json=resolve_edit(op, regions))
            regions = regions_from_reply(reply)
            texts.append(reply["text"])
        return texts

    def _queue_test(self, token: str) -> int:
        reply = self.api.call("POST", "/test", token, params={"wait": "false"})
        return int(reply["test"])

    def _finish(self, name: str, seed: int, key: str, sid: str, token: str, n: int) -> Outcome:
        for _ in range(MAX_INFRA_RETRIES + 1):
            info = self._await(name, seed, sid, token, n)
            if info["status"] != "error":
                break
            self._say(name, seed, f"test #{n} hit an infrastructure error (not counted); again")
            n = self._queue_test(token)
        if info["status"] != "done" or not info["valid"]:
            first = str(info.get("text", "")).splitlines()[:1]
            message = f"test #{n} {info['status']}: {' '.join(first)} (session {sid} left open)"
            self._say(name, seed, message)
            return Outcome(name, seed, "failed", sid, message=message)
        self.api.call("POST", "/submit", token, json={"n": n})
        self.state.put(key, None)
        value = info["metrics"].get(self.metric)
        self._say(name, seed, f"submitted test #{n}: {self.metric}={value}")
        return Outcome(name, seed, "done", sid, None if value is None else float(value))

    def _await(self, name: str, seed: int, sid: str, token: str, n: int) -> dict[str, Any]:
        last, started = "", time.monotonic()
        while True:
            info = self.api.call("GET", f"/sessions/{sid}/tests/{n}", token)
            if info["status"] != last:
                elapsed = time.monotonic() - started
                self._say(name, seed, f"test #{n} {info['status']} ({elapsed:.0f} s)")
                last = info["status"]
            if info["status"] in TEST_DONE:
                return info
            time.sleep(self.poll_s)


def summary(outcomes: list[Outcome], metric: str) -> str:
    """A table of outcomes and a count line."""
    lines = [f"{'baseline':<18} {'seed':>6}  {'result':<8} {metric}"]
    for o in outcomes:
        value = "" if o.value is None else f"{o.value:.4f}"
        lines.append(f"{o.name:<18} {o.seed:>6}  {o.status:<8} {value} {o.message}".rstrip())
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    lines.append(", ".join(f"{count} {status}" for status, count in counts.items()))
    return "\n".join(lines)


def start_in_background(
    base_url: str, tasks_dir: Path, operator_key: str, seeds: int, state: Path
) -> threading.Thread:
    """Run every baseline of the default task over `seeds` seeds once the service answers.

    `lossgym serve --demo` uses this so a new user sees a populated leaderboard;
    it goes through the public API like any agent, and skips finished runs.
    """
    log = logging.getLogger("lossgym.baselines")

    def work() -> None:
        api = Api(base_url, operator_key=operator_key)
        for _ in range(120):
            if api.health():
                break
            time.sleep(0.5)
        task, profile, names, seed_list = choose(tasks_dir, None, None, None, seeds)
        runner = BaselineRunner(api, task, profile, StateFile(state), log.info, poll_s=10.0)
        outcomes = runner.run(names, seed_list)
        log.info("demo baselines done:\n%s", summary(outcomes, runner.metric))

    thread = threading.Thread(target=work, name="demo-baselines", daemon=True)
    thread.start()
    return thread
