"""HTML pages of the leaderboard, rendered with Jinja2 (autoescaped: agent text stays inert).

The data comes from `LeaderboardService`, which applies the visibility rule
(running sessions are only summarised for callers without the operator key);
nothing here reads the database or decides what a caller may see.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from lossgym.errors import NotFound
from lossgym.leaderboard.service import LeaderboardService
from lossgym.leaderboard.web import svg, view

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        num=view.num, signed=view.signed, pm=view.pm, noise_class=view.noise_class, when=view.when,
        usd=view.usd, paired=view.paired, resolution=view.resolution,
        resolution_class=view.resolution_class,
    )  # fmt: skip
    env.globals.update(diff_class=view.diff_class, compare_href=view.compare_href)
    return env


ENV = _environment()


# ── The board: `/` ──────────────────────────────────────────────────────────


def board_tables(
    service: LeaderboardService, query: view.Query, operator: bool
) -> list[dict[str, Any]]:
    """Every (task, profile) board, rows filtered by agent and sorted as the query asks."""
    tables = []
    for task_name in service.tasks.names():
        try:
            profiles = list(service.tasks.board_task(task_name).profiles)
        except Exception as error:  # a broken task.yaml must not take the page down
            tables.append({"task": task_name, "profile": "", "error": str(error)})
            continue
        for profile in profiles:
            tables.append(_table(service, task_name, profile, query, operator))
    return tables


def _table(
    service: LeaderboardService, task: str, profile: str, query: view.Query, operator: bool
) -> dict[str, Any]:
    try:
        board = service.board(task, profile, operator=operator)
    except NotFound as error:
        return {"task": task, "profile": profile, "error": str(error)}
    total = len(board["rows"])
    rows = view.sort_rows(view.filter_rows(board["rows"], query.agent), query)
    groups = view.filter_rows(board["groups"], query.agent)
    return {**board, "rows": rows, "groups": groups, "total": total, "error": None}


def index_page(service: LeaderboardService, query: view.Query, operator: bool) -> str:
    tables = board_tables(service, query, operator)
    return ENV.get_template("index.html").render(
        tables=tables, query=query, operator=operator, title="LossGym leaderboard"
    )


# ── One session: `/board/{id}` ──────────────────────────────────────────────


def _plot(test: dict[str, Any], reference: dict[str, Any] | None) -> Markup:
    """The SVG of a test's first stage that recorded a curve, with the reference curve."""
    stage = next((s for s in test["stages"] if s["curve"]), None)
    if stage is None:
        return svg.loss_plot([], "")
    ref = reference["curve"] if reference else None
    title = f"Test #{test['n']} ({stage['label']}): train and monitor loss per step"
    return svg.loss_plot(svg.plot_series(stage["curve"], ref), title)


def _arguments(arguments: dict[str, Any]) -> str:
    """One `name: value` line per argument; multi-line text (code) last, as written."""
    short, blocks = [], []
    for name, value in sorted(arguments.items()):
        if isinstance(value, str) and "\n" in value:
            blocks.append(f"{name}:\n{value.rstrip()}")
        else:
            short.append(f"{name}: {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(short + blocks)


def session_page(record: dict[str, Any]) -> str:
    """The page of one session record (`LeaderboardService.session`)."""
    reference = record.get("reference_curve")
    tests = [
        {**t, "plot": _plot(t, reference)} if not record["redacted"] else t for t in record["tests"]
    ]
    transcript = [
        {**call, "arguments_text": _arguments(call["arguments"])}
        for call in record.get("transcript", [])
    ]
    metric_keys = sorted({k for t in tests for k in t.get("metrics", {})})
    if record.get("metric") in metric_keys:
        metric_keys.remove(record["metric"])
        metric_keys.insert(0, record["metric"])
    return ENV.get_template("session.html").render(
        s=record,
        tests=tests,
        transcript=transcript,
        metric_keys=metric_keys,
        reference=reference,
        title=f"Session {record['session_id']}",
    )


# ── Sessions side by side: `/compare?sessions=...` ─────────────────────────

LEGEND_LABEL_CHARS = 24  # of an agent name, in a plot's legend (the table shows it whole)


def _label(session: dict[str, Any]) -> str:
    agent = session["agent"]
    if len(agent) > LEGEND_LABEL_CHARS:
        agent = agent[: LEGEND_LABEL_CHARS - 1] + "\u2026"
    return f"{agent} \u00b7 seed {session['seed']} \u00b7 {session['session_id'][:6]}"


def compare_plots(record: dict[str, Any]) -> list[tuple[str, Markup]]:
    """(name, plot) of monitor, then train loss: each session's curve, one colour each, and
    cross_entropy's."""
    curves = [(_label(s), s["curve"]) for s in record["sessions"]]
    reference = record["reference_curve"]["curve"] if record["reference_curve"] else None
    plots = []
    for column, name in ((2, "monitor"), (1, "train")):
        title = f"{name.capitalize()} loss per step, {len(curves)} sessions and cross_entropy"
        series = svg.overlay_series(curves, reference, column)
        plots.append((name, svg.loss_plot(series, title, legend_item=290, css=f"compare {name}")))
    return plots


def compare_page(record: dict[str, Any]) -> str:
    """The page of a comparison (`LeaderboardService.compare`)."""
    return ENV.get_template("compare.html").render(
        c=record, plots=compare_plots(record), title="Compare sessions"
    )


def not_found_page(message: str) -> str:
    return error_page(message, "Not found")


def error_page(message: str, heading: str) -> str:
    return ENV.get_template("not_found.html").render(
        message=message, heading=heading, title=heading
    )
