"""Editable regions found from marker comment lines in a workspace file.

A task's template marks each region it lets agents edit with two read-only
comment lines just outside it, at any indentation:

    # ── BEGIN EDITABLE REGION compute_loss ──
    def compute_loss(logits, targets):
        ...
    # ── END EDITABLE REGION compute_loss ──

The region is the lines strictly between them. `task.yaml` names the regions;
their line numbers come from here, when the task loads, so the template can
change without a region silently moving. Torch- and pydantic-free: the GPU
bench scripts read the template's regions with it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lossgym.env.regions import Region, split_file

MARKER_WORDS = "EDITABLE REGION"  # a comment line holding these must be a well-formed marker
_MARKER_RE = re.compile(r"#\s*──\s*(BEGIN|END) EDITABLE REGION ([A-Za-z_][A-Za-z0-9_]*)\s*─*")


def begin_marker(name: str) -> str:
    return f"# ── BEGIN {MARKER_WORDS} {name} ──"


def end_marker(name: str) -> str:
    return f"# ── END {MARKER_WORDS} {name} ──"


class MarkerError(ValueError):
    """The markers of a file are missing, malformed, unbalanced or enclose nothing."""


@dataclass(frozen=True)
class _Marker:
    kind: str  # BEGIN | END
    name: str
    line: int  # 1-based


def _markers(path: str, lines: list[str]) -> list[_Marker]:
    found = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not (text.startswith("#") and MARKER_WORDS in text):
            continue
        match = _MARKER_RE.fullmatch(text)
        if match is None:
            raise MarkerError(
                f"{path} line {number}: malformed region marker {text!r}; write "
                f"{begin_marker('<name>')!r} or {end_marker('<name>')!r}"
            )
        found.append(_Marker(match.group(1), match.group(2), number))
    return found


def marked_regions(path: str, text: str) -> list[Region]:
    """Every region marked in `text`, in file order; `MarkerError` names the problem."""
    regions: list[Region] = []
    seen: dict[str, int] = {}
    open_marker: _Marker | None = None
    for marker in _markers(path, split_file(text)):
        if marker.kind == "BEGIN":
            if open_marker is not None:
                raise MarkerError(
                    f"{path} line {marker.line}: region {marker.name} begins inside region "
                    f"{open_marker.name} (begun at line {open_marker.line}); close that one "
                    f"first with {end_marker(open_marker.name)!r}"
                )
            if marker.name in seen:
                raise MarkerError(
                    f"{path} line {marker.line}: region {marker.name} is marked twice "
                    f"(it already begins at line {seen[marker.name]})"
                )
            seen[marker.name] = marker.line
            open_marker = marker
            continue
        if open_marker is None or open_marker.name != marker.name:
            inside = f" (region {open_marker.name} is open)" if open_marker else ""
            raise MarkerError(
                f"{path} line {marker.line}: {end_marker(marker.name)!r} has no matching "
                f"{begin_marker(marker.name)!r} before it{inside}"
            )
        if marker.line == open_marker.line + 1:
            raise MarkerError(
                f"{path} lines {open_marker.line}-{marker.line}: region {marker.name} is empty; "
                "put at least one line between its markers"
            )
        regions.append(Region(marker.name, open_marker.line + 1, marker.line - 1))
        open_marker = None
    if open_marker is not None:
        raise MarkerError(
            f"{path} line {open_marker.line}: region {open_marker.name} is never closed; "
            f"add {end_marker(open_marker.name)!r} after its last line"
        )
    return regions


def named_regions(path: str, text: str, names: list[str]) -> list[Region]:
    """The regions `names` in `text`, in file order: each must be marked, and nothing else."""
    regions = marked_regions(path, text)
    marked = {r.name for r in regions}
    missing = [n for n in names if n not in marked]
    if missing:
        raise MarkerError(
            f"{path}: no markers for region {missing[0]}; mark it with "
            f"{begin_marker(missing[0])!r} and {end_marker(missing[0])!r} lines"
        )
    extra = sorted(marked - set(names))
    if extra:
        raise MarkerError(
            f"{path}: region {extra[0]} is marked in the file but not listed under editable"
        )
    return regions
