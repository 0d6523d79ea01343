"""The agent's workspace and the edit engine.

A workspace maps relative file names to text and holds, per file, the editable
regions (1-based, inclusive line numbers). Every operation validates first and
changes nothing when it raises `AgentError`; the error text is what the agent
sees. The state is plain JSON (`to_state` / `from_state`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace as dc_replace
from types import MappingProxyType
from typing import Any

from lossgym.env.edit_input import checked_content, checked_filename, quote
from lossgym.env.regions import (  # noqa: F401 - re-exported for importers of workspace
    DASH,
    Change,
    Region,
    check_regions,
    format_spans,
    join_lines,
    split_file,
)
from lossgym.errors import AgentError

CONTEXT_LINES = 3
DEFAULT_MAX_CONTENT_BYTES = 64 * 1024
DEFAULT_MAX_FILE_BYTES = 1024 * 1024
DEFAULT_MAX_FILES = 16
# Files Python could import: creating them could shadow modules the script imports.
DEFAULT_CREATE_FORBIDDEN_SUFFIXES = (".py", ".pyc", ".pyw", ".pyi", ".pth", ".so", ".pyd")
STATE_VERSION = 1


def _lines_are(start: int, end: int) -> str:
    """`Line 5 is` / `Lines 5..9 are`."""
    return f"Line {start} is" if start == end else f"Lines {start}..{end} are"


class Workspace:
    """Files plus editable regions plus undo history; see the module docstring."""

    def __init__(
        self,
        files: Mapping[str, str],
        regions: Mapping[str, Sequence[Region]] | None = None,
        *,
        max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_files: int = DEFAULT_MAX_FILES,
        create_forbidden_suffixes: Sequence[str] = DEFAULT_CREATE_FORBIDDEN_SUFFIXES,
    ) -> None:
        regions = regions or {}
        unknown = set(regions) - set(files)
        if unknown:
            raise ValueError(f"regions given for files not in the workspace: {sorted(unknown)}")
        self._files: dict[str, str] = dict(files)
        self._regions: dict[str, list[Region]] = {
            path: check_regions(path, regions.get(path, ()), len(split_file(text)))
            for path, text in self._files.items()
        }
        self._history: list[Change] = []
        self.max_content_bytes = max_content_bytes
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.create_forbidden_suffixes = tuple(create_forbidden_suffixes)

    # ── read access ──────────────────────────────────────────────────────────

    @property
    def files(self) -> Mapping[str, str]:
        return MappingProxyType(self._files)

    @property
    def history_size(self) -> int:
        return len(self._history)

    def regions_of(self, filename: str) -> list[Region]:
        return list(self._regions[self._existing(filename)])

    def editable_summary(self) -> str:
        """`nanoGPT/custom_pretrain.py lines 188–191, 247–249` for every editable file."""
        parts = [f"{p} lines {format_spans(rs)}" for p, rs in sorted(self._regions.items()) if rs]
        return "; ".join(parts) or "no editable files"

    def content_hash(self) -> str:
        blob = json.dumps(self._files, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def diff_against(self, original_files: Mapping[str, str]) -> str:
        """Unified diff from `original_files` to the current files (all paths, sorted)."""
        chunks: list[str] = []
        for path in sorted(set(original_files) | set(self._files)):
            old, new = original_files.get(path), self._files.get(path)
            diff = difflib.unified_diff(
                split_file(old or ""),
                split_file(new or ""),
                fromfile=f"a/{path}" if old is not None else "/dev/null",
                tofile=f"b/{path}" if new is not None else "/dev/null",
                lineterm="",
            )
            chunks.extend(diff)
        return "\n".join(chunks) + ("\n" if chunks else "")

    # ── state ────────────────────────────────────────────────────────────────

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "files": dict(self._files),
            "regions": {p: [r.to_dict() for r in rs] for p, rs in self._regions.items()},
            "history": [c.to_dict() for c in self._history],
            "limits": {
                "max_content_bytes": self.max_content_bytes,
                "max_file_bytes": self.max_file_bytes,
                "max_files": self.max_files,
                "create_forbidden_suffixes": list(self.create_forbidden_suffixes),
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Workspace:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported workspace state version: {state.get('version')!r}")
        regions = {p: [Region.from_dict(r) for r in rs] for p, rs in state["regions"].items()}
        ws = cls(state["files"], regions, **state.get("limits", {}))
        ws._history = [Change.from_dict(c) for c in state["history"]]
        return ws

    # ── validation helpers ───────────────────────────────────────────────────

    def _file_list(self) -> str:
        return ", ".join(sorted(self._files)) or "(none)"

    def _check_path(self, filename: object) -> str:
        return checked_filename(filename, self._file_list())

    def _check_content(self, content: object, *, allow_empty: bool) -> list[str]:
        return checked_content(content, self.max_content_bytes, allow_empty=allow_empty)

    def _existing(self, filename: object, *, for_edit: bool = False) -> str:
        path = self._check_path(filename)
        if path not in self._files:
            hint = ' To add a new file, use op "create".' if for_edit else ""
            raise AgentError(
                f"ERROR: No file {quote(path)} in the workspace. "
                f"Workspace files: {self._file_list()}.{hint}"
            )
        return path

    def _editable(self, filename: object) -> str:
        path = self._existing(filename, for_edit=True)
        if not self._regions[path]:
            raise AgentError(
                f"ERROR: {path} is read-only. You can only edit {self.editable_summary()}."
            )
        return path

    def _check_size(self, path: str, lines: Sequence[str]) -> None:
        size = len(join_lines(lines).encode("utf-8"))
        if size > self.max_file_bytes:
            raise AgentError(
                f"ERROR: This edit would make {path} {size} bytes; the limit is "
                f"{self.max_file_bytes} bytes. Make the file shorter."
            )

    def _ranges_hint(self, path: str) -> str:
        return f"You can only edit lines {format_spans(self._regions[path])}."

    def _locate(self, path: str, start: int, end: int) -> int:
        """Index of the one region holding every line of start..end, else AgentError."""
        n_lines, regions = len(split_file(self._files[path])), self._regions[path]
        hint = self._ranges_hint(path)
        if start > end:
            raise AgentError(
                f"ERROR: start_line ({start}) is greater than end_line ({end}) in {path}. "
                f"Give start_line <= end_line. {hint}"
            )
        if start < 1:
            raise AgentError(f"ERROR: Line numbers start at 1 (got {start}) in {path}. {hint}")
        if end > n_lines:
            raise AgentError(
                f"ERROR: {_lines_are(start, end)} past the end of {path}, which has "
                f"{n_lines} lines. {hint}"
            )
        first = next((i for i, r in enumerate(regions) if start in r), None)
        last = next((i for i, r in enumerate(regions) if end in r), None)
        if first is not None and last is not None and first != last:
            raise AgentError(
                f"ERROR: Lines {start}..{end} span more than one editable region of {path}. "
                f"Edit one region at a time: lines {format_spans(regions)}."
            )
        if first is None or end not in regions[first]:
            raise AgentError(
                f"ERROR: {_lines_are(start, end)} outside the editable ranges of {path}. {hint}"
            )
        return first

    # ── edits ────────────────────────────────────────────────────────────────

    def _commit(self, path: str, lines: list[str], regions: list[Region], summary: str) -> None:
        before = Change(path, self._files.get(path), tuple(self._regions.get(path, ())), summary)
        self._files[path] = join_lines(lines)
        self._regions[path] = regions
        self._history.append(before)

    @staticmethod
    def _resized(regions: Sequence[Region], index: int, delta: int) -> list[Region]:
        """Grow/shrink region `index` by delta lines; shift every later region by delta."""
        out: list[Region] = []
        for i, r in enumerate(regions):
            if i == index:
                r = dc_replace(r, end=r.end + delta)
            elif i > index:
                r = dc_replace(r, start=r.start + delta, end=r.end + delta)
            out.append(r)
        return out

    def replace(self, filename: str, start_line: int, end_line: int, content: str) -> str:
        """Replace lines start_line..end_line (inside one region) with `content`."""
        path = self._editable(filename)
        index = self._locate(path, start_line, end_line)
        new = self._check_content(content, allow_empty=True)
        region = self._regions[path][index]
        if not new and (start_line, end_line) == (region.start, region.end):
            raise AgentError(
                f"ERROR: Replacing all of lines {start_line}..{end_line} with nothing would "
                f"leave the editable region {region.span} of {path} empty, and an empty region "
                "cannot be edited again. Give at least one line (a blank line is fine)."
            )
        lines = split_file(self._files[path])
        lines[start_line - 1 : end_line] = new
        self._check_size(path, lines)
        regions = self._resized(self._regions[path], index, len(new) - (end_line - start_line + 1))
        self._commit(path, lines, regions, f"replace lines {start_line}..{end_line} in {path}")
        head = (
            f"OK: Replaced lines {start_line}..{end_line} with {len(new)} line(s) in {path}. "
            f"Editable range: {format_spans(regions)}."
        )
        return f"{head}\n\n{self._region_view(path, regions[index])}"

    def _insert_region(self, path: str, after_line: int) -> int:
        n_lines, regions = len(split_file(self._files[path])), self._regions[path]
        points = ", ".join(f"{r.start - 1}{DASH}{r.end}" for r in regions)
        hint = f"You can insert after lines {points} (inside or at the edge of an editable range)."
        if not 0 <= after_line <= n_lines:
            raise AgentError(
                f"ERROR: after_line={after_line} is outside {path}, which has {n_lines} lines "
                f"(use 0..{n_lines}). {hint}"
            )
        for i, r in enumerate(regions):
            if r.start - 1 <= after_line <= r.end:
                return i
        raise AgentError(
            f"ERROR: Cannot insert after line {after_line}: it is outside the editable ranges "
            f"of {path} ({format_spans(regions)}). {hint}"
        )

    def insert(self, filename: str, after_line: int, content: str) -> str:
        """Insert `content` after `after_line`, inside or at the edge of an editable region."""
        path = self._editable(filename)
        index = self._insert_region(path, after_line)
        new = self._check_content(content, allow_empty=False)
        lines = split_file(self._files[path])
        lines[after_line:after_line] = new
        self._check_size(path, lines)
        regions = self._resized(self._regions[path], index, len(new))
        self._commit(path, lines, regions, f"insert after line {after_line} in {path}")
        head = (
            f"OK: Inserted {len(new)} line(s) after line {after_line} in {path}. "
            f"Editable range: {format_spans(regions)}."
        )
        return f"{head}\n\n{self._region_view(path, regions[index])}"

    def _check_new_path(self, filename: str) -> str:
        path = self._check_path(filename)
        if path in self._files:
            raise AgentError(
                f'ERROR: {path} already exists; create only makes new files. Use op "replace" '
                f'or "insert" to change it. You can edit {self.editable_summary()}.'
            )
        clash = next((p for p in self._files if p.startswith(path + "/")), None)
        clash = clash or next((p for p in self._files if path.startswith(p + "/")), None)
        if clash:
            raise AgentError(f"ERROR: {path} would clash with the existing file {clash}.")
        if path.lower().endswith(self.create_forbidden_suffixes):
            kinds = ", ".join(self.create_forbidden_suffixes)
            raise AgentError(
                f"ERROR: create cannot make files ending in {kinds}. Put your code in an "
                f"editable range instead: {self.editable_summary()}."
            )
        if len(self._files) >= self.max_files:
            raise AgentError(f"ERROR: The workspace already holds {len(self._files)} files.")
        return path

    def create(self, filename: str, content: str) -> str:
        """Create a new file; all of it is editable."""
        path = self._check_new_path(filename)
        new = self._check_content(content, allow_empty=False)
        self._check_size(path, new)
        region = Region("file", 1, len(new))
        self._commit(path, list(new), [region], f"create {path}")
        head = f"OK: Created {path} with {len(new)} line(s). Editable range: {region.span}."
        return f"{head}\n\n{self._region_view(path, region)}"

    def undo(self, n: int = 1) -> str:
        """Revert the last n edits (text and regions)."""
        if not isinstance(n, int) or n < 1:
            raise AgentError("ERROR: n must be a whole number of at least 1.")
        if n > len(self._history):
            if not self._history:
                raise AgentError("ERROR: Nothing to undo; there are no edits to revert.")
            raise AgentError(
                f"ERROR: Cannot undo {n} edit(s); only {len(self._history)} edit(s) can be "
                f"undone. Call undo with n <= {len(self._history)}."
            )
        undone: list[str] = []
        for _ in range(n):
            change = self._history.pop()
            if change.text is None:
                del self._files[change.path], self._regions[change.path]
            else:
                self._files[change.path] = change.text
                self._regions[change.path] = list(change.regions)
            undone.append(change.summary)
        return (
            f"OK: Undid {n} edit(s); {len(self._history)} earlier edit(s) can still be undone.\n"
            f"Reverted: {'; '.join(undone)}.\n"
            f"Editable range: {self.editable_summary()}."
        )

    # ── rendering ────────────────────────────────────────────────────────────

    def _render(self, path: str, first: int, last: int, editable: str) -> str:
        lines, regions = split_file(self._files[path]), self._regions[path]
        out = [f"[Current file: {path} | editable: {editable} | total: {len(lines)} lines]"]
        for n in range(first, last + 1):
            mark = " " if any(n in r for r in regions) else "|"
            out.append(f"{n:>6}{mark} {lines[n - 1]}")
        return "\n".join(out)

    def _region_view(self, path: str, region: Region) -> str:
        n_lines = len(split_file(self._files[path]))
        first = max(1, region.start - CONTEXT_LINES)
        last = min(n_lines, region.end + CONTEXT_LINES)
        return self._render(path, first, last, region.span)

    def view(
        self, filename: str, start_line: int | None = None, end_line: int | None = None
    ) -> str:
        """Show a file (or lines start_line..end_line); editable lines have no `|`."""
        path = self._existing(filename)
        n_lines = len(split_file(self._files[path]))
        first = 1 if start_line is None else start_line
        last = n_lines if end_line is None else end_line
        asked = start_line is not None or end_line is not None
        if (n_lines or asked) and not 1 <= first <= last <= n_lines:
            raise AgentError(
                f"ERROR: Cannot show lines {first}..{last} of {path}, which has {n_lines} "
                f"lines. Use 1 <= start_line <= end_line <= {n_lines}."
            )
        return self._render(path, first, last, format_spans(self._regions[path]))

    def render_listing(self, filename: str) -> str:
        """The task-description listing: a title line, a blank line, `     1: text` lines."""
        path = self._existing(filename)
        regions = self._regions[path]
        if regions:
            spans = ", ".join(f"lines {r.span}" for r in regions)
            title = f"{path} [EDITABLE \u2014 {spans} only]"
        else:
            title = f"{path} [READ-ONLY]"
        body = [f"{n:>6}: {line}" for n, line in enumerate(split_file(self._files[path]), 1)]
        return "\n".join([title, "", *body])
