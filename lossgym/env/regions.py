"""Editable regions of a workspace file, and the line helpers the edit engine uses.

Regions are 1-based, inclusive line ranges; a `Change` is one undoable edit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

DASH = "\u2013"  # en dash, as in "188–191"


@dataclass(frozen=True)
class Region:
    """An editable line range of one file, 1-based and inclusive."""

    name: str
    start: int
    end: int

    def __contains__(self, line: object) -> bool:
        return isinstance(line, int) and self.start <= line <= self.end

    @property
    def span(self) -> str:
        return f"{self.start}{DASH}{self.end}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Region:
        return cls(str(data["name"]), int(data["start"]), int(data["end"]))


@dataclass(frozen=True)
class Change:
    """What one edit replaced: the file's text and regions before it (text None: new file)."""

    path: str
    text: str | None
    regions: tuple[Region, ...]
    summary: str

    def to_dict(self) -> dict[str, Any]:
        regions = [r.to_dict() for r in self.regions]
        return {"path": self.path, "text": self.text, "regions": regions, "summary": self.summary}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Change:
        regions = tuple(Region.from_dict(r) for r in data["regions"])
        return cls(str(data["path"]), data["text"], regions, str(data["summary"]))


def split_file(text: str) -> list[str]:
    """A file's lines: split on newlines; a final newline does not start a new line."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def join_lines(lines: Sequence[str]) -> str:
    return "".join(line + "\n" for line in lines)


def format_spans(regions: Sequence[Region]) -> str:
    """`188–191, 247–249`, or `none` for a read-only file."""
    return ", ".join(r.span for r in regions) or "none"


def check_regions(path: str, regions: Sequence[Region], n_lines: int) -> list[Region]:
    ordered = sorted(regions, key=lambda r: r.start)
    for i, r in enumerate(ordered):
        if not 1 <= r.start <= r.end <= n_lines:
            raise ValueError(f"{path}: region {r.name} {r.span} is not inside 1..{n_lines}")
        if i and ordered[i - 1].end >= r.start:
            raise ValueError(f"{path}: regions {ordered[i - 1].name} and {r.name} overlap")
    return ordered
