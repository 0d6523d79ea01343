"""What the pages show, as plain data: sorting and filtering board rows, formatting numbers.

Sorting is server-side (`?sort=<column>&dir=asc|desc`) so the table works
without JavaScript. A column is one of `FIXED_COLUMNS` or a metric key; rows
without a value in that column always come last.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from lossgym.leaderboard.compare import MAX_SESSIONS
from lossgym.leaderboard.paired import MAX_SEEDS_TO_RESOLVE

FIXED_COLUMNS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "rank": lambda row: row["rank"],
    "agent": lambda row: row["agent"].lower(),
    "value": lambda row: row["value"],
    "delta": lambda row: row["delta"],
    "noise": lambda row: row["noise"],
    "paired": lambda row: (row["paired"] or {}).get("mean"),
    "tests": lambda row: row["tests_used"],
    "date": lambda row: row["date"],
    "elapsed": lambda row: row["elapsed_s"],
}


@dataclass(frozen=True)
class Query:
    """The page's query string: sort column, direction and agent filter."""

    sort: str | None = None
    direction: str = "asc"
    agent: str = ""

    def href(self, **changes: str | None) -> str:
        """The URL of `/` with this query, some parameters changed (None drops one)."""
        params = {"sort": self.sort, "dir": self.direction, "agent": self.agent or None}
        params.update(changes)
        kept = {k: v for k, v in params.items() if v}
        if not kept.get("sort"):
            kept.pop("dir", None)
        return "/" + (("?" + urlencode(kept)) if kept else "")

    def header_href(self, column: str) -> str:
        """The link of a column header: sort by it ascending, or flip when already sorted by it."""
        flip = self.sort == column and self.direction == "asc"
        return self.href(sort=column, dir="desc" if flip else "asc")

    def arrow(self, column: str) -> str:
        if self.sort != column:
            return ""
        return " \u25b2" if self.direction == "asc" else " \u25bc"


def parse_query(sort: str | None, direction: str | None, agent: str | None) -> Query:
    return Query(
        sort=(sort or "").strip() or None,
        direction="desc" if (direction or "").lower() == "desc" else "asc",
        agent=(agent or "").strip(),
    )


def _getter(column: str) -> Callable[[dict[str, Any]], Any]:
    if column in FIXED_COLUMNS:
        return FIXED_COLUMNS[column]
    return lambda row: row["metrics"].get(column)


def _sortable(value: Any) -> bool:
    if value is None:
        return False
    return not (isinstance(value, float) and not math.isfinite(value))


def sort_rows(rows: Sequence[dict[str, Any]], query: Query) -> list[dict[str, Any]]:
    """Rows sorted by the query's column (stable; missing values last); as given without one."""
    if query.sort is None:
        return list(rows)
    get = _getter(query.sort)
    present = [r for r in rows if _sortable(get(r))]
    missing = [r for r in rows if not _sortable(get(r))]
    try:
        present.sort(key=lambda r: get(r), reverse=query.direction == "desc")
    except TypeError:  # a metric holding mixed types: compare as text
        present.sort(key=lambda r: str(get(r)), reverse=query.direction == "desc")
    return present + missing


def filter_rows(rows: Sequence[dict[str, Any]], agent: str) -> list[dict[str, Any]]:
    """Rows whose agent name contains `agent` (case-insensitive); all rows for ''."""
    needle = agent.lower()
    return [r for r in rows if needle in r["agent"].lower()]


def num(value: Any, digits: int = 4) -> str:
    """A metric as text: floats with `digits` decimals, '—' for nothing."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def signed(value: float | None, digits: int = 4) -> str:
    """A delta with its sign: '+0.0123', '-0.0040'."""
    return "\u2014" if value is None else f"{value:+.{digits}f}"


def pm(stat: dict[str, Any] | None, sign: bool = False) -> str:
    """'mean ± std (n=5)' of a stat dict, or the mean alone when std is unknown;
    `sign`: the mean with its sign (a delta)."""
    if not stat or stat.get("mean") is None:
        return "\u2014"
    text = signed(stat["mean"]) if sign else num(stat["mean"])
    if stat.get("std") is not None:
        text += f" \u00b1 {num(stat['std'])}"
    return f"{text} (n={stat['n']})"


def paired(stat: dict[str, Any] | None) -> str:
    """A paired delta: '+0.0123' for one session, '+0.0123 ± 0.0040 (n=3)' (± its standard
    error) over several, '—' when no seed pairs with cross_entropy."""
    if not stat or stat.get("mean") is None:
        return "\u2014"
    if stat.get("se") is None:  # one session: no standard error
        return signed(stat["mean"])
    return f"{signed(stat['mean'])} \u00b1 {num(stat['se'])} (n={stat['n']})"


def resolution(stat: dict[str, Any] | None) -> str:
    """A paired stat's flag, with the seeds that would resolve it when it is unresolved."""
    if not stat or stat.get("resolution") is None:
        return ""
    if stat["resolution"] != "unresolved":
        return str(stat["resolution"])
    needed = stat.get("seeds_to_resolve")
    if needed is None:
        return f"unresolved (not within {MAX_SEEDS_TO_RESOLVE:,} seeds)"
    return f"unresolved ({needed} seeds would resolve it)"


def resolution_class(stat: dict[str, Any] | None) -> str:
    """CSS class of a paired stat's flag (styled as the noise flags)."""
    flag = (stat or {}).get("resolution")
    return {"resolved": "outside", "unresolved": "within"}.get(flag or "", "unknown")


def usd(value: float | None) -> str:
    """A cost in US dollars: '$0.1234', '—' when unknown."""
    return "\u2014" if value is None else f"${value:,.4f}"


def compare_href(session_ids: Sequence[str]) -> str:
    """The URL of `/compare` for these sessions (the first `MAX_SESSIONS`)."""
    return "/compare?" + urlencode({"sessions": ",".join(session_ids[:MAX_SESSIONS])})


def when(moment: str | None) -> str:
    """An ISO time ('2025-01-02T03:04:05Z') shortened to '2025-01-02 03:04'."""
    return "" if not moment else moment.replace("T", " ")[:16]


def noise_class(noise: str | None) -> str:
    """CSS class of a noise flag."""
    return {"outside noise": "outside", "within noise": "within"}.get(noise or "", "unknown")


def diff_class(line: str) -> str:
    """CSS class of a unified-diff line."""
    if line.startswith(("+++", "---")):
        return "meta"
    if line.startswith("@@"):
        return "hunk"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    return "ctx"
