"""Checks on what an agent sends to the edit engine: file names and content.

Each check returns the value it accepted or raises an `AgentError` whose text
names the problem and what to send instead; agent input is echoed escaped.
"""

from __future__ import annotations

import json
import re

from lossgym.errors import AgentError

MAX_FILENAME_CHARS = 200
_FILENAME_RE = re.compile(r"[A-Za-z0-9_.\-/]+")


def quote(value: str) -> str:
    """Echo agent input safely (escaped, shortened) inside an error message."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + '..."'


def checked_filename(filename: object, file_list: str) -> str:
    """A safe workspace-relative path, or the AgentError that says what is wrong with it."""
    if not isinstance(filename, str) or not filename:
        raise AgentError(f"ERROR: filename is empty. Workspace files: {file_list}.")
    if "\x00" in filename:
        raise AgentError("ERROR: filename contains a NUL character. Use a plain relative path.")
    if "\\" in filename:
        raise AgentError(f'ERROR: filename {quote(filename)} contains "\\"; use "/".')
    if filename.startswith("/"):
        raise AgentError(
            f"ERROR: filename {quote(filename)} is absolute; use a path relative to "
            f"the workspace root. Workspace files: {file_list}."
        )
    parts = filename.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise AgentError(
            f'ERROR: filename {quote(filename)} must not contain "..", "." or empty '
            f"path components. Workspace files: {file_list}."
        )
    if len(filename) > MAX_FILENAME_CHARS or not _FILENAME_RE.fullmatch(filename):
        raise AgentError(
            f"ERROR: filename {quote(filename)} is not allowed: use at most "
            f'{MAX_FILENAME_CHARS} letters, digits, "_", "-", "." and "/".'
        )
    return filename


def checked_content(content: object, max_bytes: int, *, allow_empty: bool) -> list[str]:
    """The lines of an edit's content, or the AgentError that says what is wrong with it."""
    if not isinstance(content, str):
        raise AgentError("ERROR: content must be a string of source text.")
    if "\x00" in content:
        raise AgentError("ERROR: content contains a NUL character; remove it.")
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        raise AgentError("ERROR: content is not valid UTF-8 text.") from None
    if size > max_bytes:
        raise AgentError(
            f"ERROR: content is {size} bytes; the limit is {max_bytes} bytes "
            "per edit. Send a shorter edit."
        )
    lines = content.splitlines()
    if not lines and not allow_empty:
        raise AgentError("ERROR: content is empty; give at least one line.")
    return lines
