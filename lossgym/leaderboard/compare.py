"""Comparing sessions: which of the asked-for sessions may be shown, and the data to overlay.

`GET /compare?sessions=id1,id2,...` overlays the loss curves of up to
`MAX_SESSIONS` sessions of one (task, profile) against the cross_entropy
baseline's mean curve. The visibility rule is the board's: a running session
is left out, with a note, for a caller without the operator key; so are unknown
ids, sessions with no curve and sessions of another board. Pure functions;
`LeaderboardService.compare` reads the rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from lossgym.errors import AgentError
from lossgym.leaderboard.ranking import REFERENCE_AGENT, Reference, baseline_name, mean_curve
from lossgym.store.boards import CurveEntry

MAX_SESSIONS = 8
MAX_ID_SHOWN = 40  # an unknown id is echoed in a note, shortened to this


def parse_ids(raw: Iterable[str]) -> list[str]:
    """Session ids from `sessions=a,b` and/or repeated `sessions=` parameters, in order, once each.

    None, or more than `MAX_SESSIONS`, is an `AgentError` (HTTP 400) saying what to send.
    """
    ids: list[str] = []
    for item in raw:
        for part in item.split(","):
            sid = part.strip()
            if sid and sid not in ids:
                ids.append(sid)
            if len(ids) > MAX_SESSIONS:
                raise AgentError(
                    f"ERROR: At most {MAX_SESSIONS} sessions can be compared at once; choose fewer."
                )
    if not ids:
        raise AgentError(
            "ERROR: Choose the sessions to compare: /compare?sessions=ID1,ID2 "
            f"(at most {MAX_SESSIONS})."
        )
    return ids


def choose(
    ids: Sequence[str], entries: dict[str, CurveEntry], operator: bool
) -> tuple[list[CurveEntry], list[str]]:
    """(the sessions to show, in the order asked; a note for each one left out)."""
    shown: list[CurveEntry] = []
    notes: list[str] = []
    for sid in ids:
        entry = entries.get(sid)
        note = _left_out(sid, entry, shown[0] if shown else None, operator)
        if note is not None:
            notes.append(note)
        elif entry is not None:
            shown.append(entry)
    return shown, notes


def _left_out(
    sid: str, entry: CurveEntry | None, first: CurveEntry | None, operator: bool
) -> str | None:
    """Why `sid` is not shown, or None when it is."""
    if entry is None:
        short = sid if len(sid) <= MAX_ID_SHOWN else sid[:MAX_ID_SHOWN] + "…"
        return f"Unknown session {short!r}: left out."
    if entry.status == "active" and not operator:
        return f"Session {sid} is still running: its curves are shown once it ends."
    if not entry.curve:
        return f"Session {sid} has no valid test with a loss curve: left out."
    if first is not None and (entry.task, entry.profile) != (first.task, first.profile):
        return (
            f"Session {sid} is on {entry.task} · {entry.profile}, not {first.task} · "
            f"{first.profile}: left out (curves are compared within one board)."
        )
    return None


def reference_curve(curves: Iterable[list[Any]]) -> dict[str, Any] | None:
    """The cross_entropy baseline's mean train/monitor curve over its final tests."""
    kept = [c for c in curves if c]
    if not kept:
        return None
    return {"agent": REFERENCE_AGENT, "sessions": len(kept), "curve": mean_curve(kept)}


def entry_record(entry: CurveEntry, key: str, reference: Reference) -> dict[str, Any]:
    """One compared session: who, which test, its primary value against cross_entropy."""
    value = _finite(entry.metrics.get(key))
    return {
        "session_id": entry.session_id,
        "agent": entry.agent,
        "baseline": baseline_name(entry.agent),
        "seed": entry.seed,
        "status": entry.status,
        "test": entry.test,
        "final": entry.final,
        "value": value,
        "delta": reference.delta(value),
        "noise": reference.noise(value),
        "curve": list(entry.curve),
    }


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
