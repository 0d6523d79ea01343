"""A database with a known leaderboard for the page tests (HTML and browser)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser

import httpx

from lossgym.env.service import EpisodeService
from lossgym.env.tools import EditArgs, SubmitArgs
from lossgym.store import queries
from lossgym.store.db import Database
from tests.leaderboard.lbtest_helpers import (
    FILE,
    TASK,
    finish_test,
    primary_key,
    scored_session,
    set_created,
)

EVIL = "<script>alert(1)</script>"
MARKER = "PAGE_TEST_LOSS_IDEA"
RUNNING_SECRET = "RUNNING_SECRET_IDEA"
HIDDEN = "piqa_acc_gpt-tiny"
BOARD = "board-llm-pretrain-loss-tiny-cpu"


@dataclass
class Filled:
    """Session ids of the known board."""

    ce: list[str]  # baseline:cross_entropy seeds 0..2 (5.00, 5.02, 4.98)
    smoothing: str  # baseline:label_smoothing, 4.95
    good: str  # "alice" 4.80, edited + two tests, submitted test #2
    evil: str  # agent named EVIL, 5.10, auto-submitted
    running: str  # "sneaky" still running, edited and tested


def _edit(service: EpisodeService, sid: str, marker: str) -> None:
    """Replace compute_loss with a cross entropy carrying a marker comment."""
    start, end = _region(service, sid)
    content = (
        "def compute_loss(logits, targets):\n"
        f"    # {marker} <b>not bold</b>\n"
        "    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), "
        "ignore_index=-1)\n\n"
    )
    args = EditArgs(op="replace", filename=FILE, start_line=start, end_line=end, content=content)
    assert service.edit(sid, args).ok


def _region(service: EpisodeService, sid: str) -> tuple[int, int]:
    with service.db.transaction() as tx:
        state = queries.get_session(tx, sid).workspace  # type: ignore[union-attr]
    region = state["regions"][FILE][0]
    return int(region["start"]), int(region["end"])


def fill(service: EpisodeService, db: Database) -> Filled:
    """The known board: three cross_entropy seeds, one other baseline, three agents."""
    day = datetime(2025, 1, 1)
    ce = [
        scored_session(service, db, "baseline:cross_entropy", seed, value,
                       created_at=day.replace(hour=seed))
        for seed, value in enumerate((5.00, 5.02, 4.98))
    ]  # fmt: skip
    smoothing = scored_session(service, db, "baseline:label_smoothing", 0, 4.95)
    key = primary_key(service)
    good = service.create_session(TASK, "alice", seed=0)["session_id"]
    _edit(service, good, MARKER)
    for n, value in ((1, 4.9), (2, 4.8)):
        assert service.test(good, wait=False).ok
        finish_test(service, db, good, n, {key: value, HIDDEN: 30.0 + n})
    _set_curves(db, good, [[0, 10.9, 10.85], [10, 5.6, 5.8], [20, 4.6, 4.9]])
    assert service.submit(good, SubmitArgs(n=2)).ok
    set_created(db, good, day.replace(day=2))
    evil = scored_session(service, db, EVIL, 0, 5.10, auto=True, extra={HIDDEN: 25.0})
    running = service.create_session(TASK, "sneaky", seed=0)["session_id"]
    _edit(service, running, RUNNING_SECRET)
    assert service.test(running, wait=False).ok
    finish_test(service, db, running, 1, {key: 4.1234, HIDDEN: 99.0})
    return Filled(ce=ce, smoothing=smoothing, good=good, evil=evil, running=running)


def _set_curves(db: Database, sid: str, curve: list[list[float]]) -> None:
    """Give every stage of the session's tests this curve (it differs from the baselines')."""
    with db.transaction() as tx:
        for test in queries.tests_of(tx, sid):
            for stage in test.stages:
                stage.curve = curve


def get(base: str, path: str, headers: dict | None = None, status: int = 200) -> str:
    reply = httpx.get(f"{base}{path}", headers=headers or {}, timeout=30)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("text/html")
    return reply.text


class Page(HTMLParser):
    """Rows of the tiny-cpu board (session id, classes, cell texts) and the SVG polylines."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.svgs: list[list[dict]] = []
        self._board: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "section" and "board" in (a.get("class") or ""):
            self._board = a.get("id")
        elif tag == "tr" and a.get("data-session") and self._board == BOARD:
            self.rows.append({"sid": a["data-session"], "class": a["class"], "cells": []})
        elif tag == "td" and self.rows and self._board == BOARD:
            self._cell = []
        elif tag == "svg":
            self.svgs.append([])
        elif tag == "polyline":
            self.svgs[-1].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "section":
            self._board = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
